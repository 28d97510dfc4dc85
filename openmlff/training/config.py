"""TrainingConfig: every setting of a training run, named once (docs/architecture.md "Training checkpoint").

The fields are the `train` command's options (`batch_size` -> `--batch-size`; `--model`, `--lr`,
`--time-budget` and `--threads` stay as aliases) with the same defaults (openmlff.core.config). The config
validates itself on construction: ConfigError names the field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..core.config import check, check_finite, setting
from ..core.errors import InputError
from ..models import ARCHITECTURES, default_hyperparameters
from .losses import LOSSES, check_loss

PRESETS = ("cpu", "paper")
DTYPES = ("float32", "float64")
#: Fields that may change when an interrupted run is resumed (they do not change what is learned so far).
RESUMABLE_CHANGES = ("time_budget_s", "max_epochs", "torch_threads", "early_stopping_patience_epochs", "compile")
#: Fields added after checkpoints were first written, with the value that reproduces what those did:
#: a checkpoint without the field resumes as if it had it.
ADDED_FIELDS = {"loss": "mse", "loss_options": {}, "split_seed": None, "split": None, "ema_warmup": False,
                "divergence_factor": None, "compile": False}
#: The optimiser's defaults per architecture, taken by `learning_rate` and `warmup_steps` left None (resolved()
#: records them in the checkpoint, so a run resumes with what it started with). ET and ViSNet: TorchMD-Net's
#: recipe. NequIP: nequip's learning rate 1e-2 and a short warm-up; with 1e-3 and 500 warm-up steps (the default
#: of 0.1.1 and before) it learnt about half as fast for the first ~1000 steps (README "Against nequip"). As
#: openmlff stores NequIP's weights at the 1/sqrt(fan-in) scale (models/nequip.py), 1e-2 is a larger step than
#: it is in nequip: on aspirin it blew up once after 840 steps, which the divergence guard undid (trainer.py).
ARCHITECTURE_DEFAULTS = {
    "et": {"learning_rate": 1.0e-3, "warmup_steps": 500},
    "visnet": {"learning_rate": 1.0e-3, "warmup_steps": 500},
    "nequip": {"learning_rate": 1.0e-2, "warmup_steps": 50},
}


@dataclass
class TrainingConfig:
    """Everything that defines a training run. Defaults suit a molecule of ~20 atoms on a CPU."""

    architecture: str = setting("et", "architecture: et, visnet or nequip", aliases=("--model",))
    hyperparameters: dict = setting(dict, "overrides of the preset's hyperparameters, e.g. '{\"num_layers\": 4}'")
    preset: str = setting("cpu", "hyperparameter preset: cpu (small) or paper (the original paper's size)")
    n_train: int | None = setting(None, "training frames (default: every frame not in validation or test)")
    n_val: int | None = setting(None, "validation frames (default: min(50, frames // 10), at least 1)")
    n_test: int | None = setting(None, "test frames (default: min(200, frames // 5))")
    seed: int = setting(0, "seed of the split, the initial weights and the batch order")
    split_seed: int | None = setting(None, "seed of the split alone (default: seed); committee members share it")
    split: str | None = setting(None, "a split to keep (a split .json or a training checkpoint): its validation and "
                                      "test frames as they are and n_train of its training frames, drawn by the "
                                      "split seed, nested across n_train (default: a new split of the data)")
    batch_size: int = setting(16, "frames per optimiser step")
    learning_rate: float | None = setting(None, "peak learning rate (Adam); default: the architecture's "
                                                "(ARCHITECTURE_DEFAULTS: 1e-3 for et and visnet, 1e-2 for nequip)",
                                          aliases=("--lr",))
    warmup_steps: int | None = setting(None, "optimiser steps of linear learning-rate warm-up; default: the "
                                             "architecture's (500 for et and visnet, 50 for nequip)")
    lr_factor: float = setting(0.8, "learning-rate factor when the validation loss plateaus")
    lr_patience_epochs: int = setting(8, "epochs without improvement before the learning rate drops")
    min_learning_rate: float = setting(1.0e-6, "training stops when the learning rate reaches this")
    early_stopping_patience_epochs: int = setting(60, "stop after this many epochs without improvement")
    max_epochs: int = setting(100_000, "stop after this many epochs")
    time_budget_s: float | None = setting(None, "wall-clock budget of the whole training in s, resumes included",
                                          aliases=("--time-budget",))
    loss: str = setting("mse", "training loss: mse, fnm (force error over mass), element_balanced or max_error "
                               "(openmlff.training.losses)")
    loss_options: dict = setting(dict, "options of the loss, e.g. '{\"max_weight\": 0.1, \"top_k\": 3}' for max_error")
    energy_weight: float = setting(0.05, "weight of the energy term of the loss")
    force_weight: float = setting(0.95, "weight of the force term of the loss")
    ema_decay: float = setting(0.99, "decay of the exponential moving average of the weights")
    ema_warmup: bool = setting(True, "grow the EMA's decay as min(ema_decay, (1 + step) / (10 + step)) so that the "
                                     "average does not hold on to the random initial weights early on")
    divergence_factor: float | None = setting(
        10.0, "an epoch whose validation loss is not finite or exceeds this multiple of the best is undone: weights, "
              "EMA and optimiser go back to the best epoch's and the learning rate is halved (None: never)")
    dtype: str = setting("float32", "float32 or float64")
    compile: bool = setting(False, "compile the training step with Inductor (forces by torch.func inside it, neighbour "
                                   "pairs found outside): 1.6-1.9x faster steps here after about a minute of "
                                   "compiling (docs/benchmarks/training_step.md); results equal the eager step's to "
                                   "float32 rounding")
    torch_threads: int | None = setting(None, "torch threads (default: openmlff.core.threads' choice: 1 unless a batch "
                                              "holds thousands of atoms)", aliases=("--threads",))

    RESUMABLE_CHANGES = RESUMABLE_CHANGES

    def __post_init__(self) -> None:
        check_finite(self)
        check(self, self.architecture in ARCHITECTURES, "architecture",
              f"must be one of {sorted(ARCHITECTURES)}, got {self.architecture!r}")
        check(self, isinstance(self.hyperparameters, dict), "hyperparameters",
              f"must be a table of hyperparameters, got {self.hyperparameters!r}")
        check(self, self.preset in PRESETS, "preset", f"must be one of {list(PRESETS)}, got {self.preset!r}")
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            check(self, value is None or value >= 0, name, f"must be >= 0 or None, got {value}")
        check(self, self.n_train is None or self.n_train >= 1, "n_train", f"must be >= 1, got {self.n_train}")
        check(self, self.split is None or self.n_val is None and self.n_test is None, "n_val",
              "and n_test must be left unset with a kept split (its validation and test frames are kept as they are)")
        for name in ("batch_size", "early_stopping_patience_epochs"):
            check(self, getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "lr_patience_epochs", "max_epochs", "energy_weight", "force_weight"):
            value = getattr(self, name)
            check(self, value is None and name == "warmup_steps" or value >= 0, name, f"must be >= 0, got {value}")
        for name in ("learning_rate", "min_learning_rate"):
            value = getattr(self, name)
            check(self, value is None and name == "learning_rate" or value > 0, name, f"must be positive, got {value}")
        check(self, 0 < self.lr_factor < 1, "lr_factor", f"must be in (0, 1), got {self.lr_factor}")
        check(self, self.energy_weight + self.force_weight > 0, "force_weight",
              "and energy_weight must not both be 0")
        check(self, 0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        check(self, self.time_budget_s is None or self.time_budget_s > 0, "time_budget_s",
              f"must be positive or None, got {self.time_budget_s}")
        check(self, self.divergence_factor is None or self.divergence_factor > 1, "divergence_factor",
              f"must be > 1 or None, got {self.divergence_factor}")
        check(self, self.dtype in DTYPES, "dtype", f"must be one of {list(DTYPES)}, got {self.dtype!r}")
        check(self, self.loss in LOSSES, "loss", f"must be one of {list(LOSSES)}, got {self.loss!r}")
        check(self, isinstance(self.loss_options, dict), "loss_options", f"must be a table, got {self.loss_options!r}")
        try:
            check_loss(self.loss, self.loss_options)
        except InputError as exc:
            check(self, False, "loss_options", f"do not fit: {exc}")
        check(self, self.torch_threads is None or self.torch_threads >= 1, "torch_threads",
              f"must be a positive integer or None, got {self.torch_threads}")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved(self) -> "TrainingConfig":
        """This config with the architecture's optimiser defaults (ARCHITECTURE_DEFAULTS) in the fields left None."""
        return replace(self, **{k: v for k, v in ARCHITECTURE_DEFAULTS[self.architecture].items()
                                if getattr(self, k) is None})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def resolved_hyperparameters(self) -> dict:
        hp = default_hyperparameters(self.architecture, self.preset)
        hp.update(self.hyperparameters)
        return hp
