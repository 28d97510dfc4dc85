"""Reweighted fine-tuning: train a model further with more weight on the training frames it gets wrong.

The model's own per-frame force MAE e_m (kcal/mol/Å) on its training frames, through the exported
model (model_errors.checkpoint_errors), gives each frame a sampling weight w_m, normalised to mean 1;
each fine-tuning epoch then draws as many frames as the training set holds, with replacement, frame m
with probability w_m / sum(w) (training.trainer.epoch_order). The rules (`--reweight`):

  frames    w_m = clip((e_m / median(e))^power, floor, cap)                 power 1, floor 0.1, cap 10
            larger error, larger weight; the floor keeps every frame in play, the cap keeps a few
            outliers from taking the epoch. With target_ess s (0 < s <= 1) the power is solved for instead
            (scipy brentq on [0, 50]) so that the weights' effective sample size (sum w)^2 / sum w^2 is s x the
            frames: a strength fixed before the run, whatever the errors' spread (docs/study.md, H2 c). If the
            floor and cap cannot reach it, the power is 50 and the summary says the share reached.
  clusters  w_m = 1 + strength * RBP(c_m)                                       strength 4
            c_m the k-means conformation cluster of frame m among the training frames
            (metrics.conformations.cluster_conformations; k by the silhouette rule, or n_clusters),
            RBP(c) the cluster's ratio of bad points: its share of frames with e_m above the model's
            global training force MAE (metrics.conformations.cluster_force_metrics). A cluster the
            model gets entirely wrong weighs 1 + strength times a clean one.
  none      w_m = 1: plain fine-tuning, the control for the two rules above (same data, same budget).

Everything else is an ordinary training run (training.train) from the parent's best weights, with
the parent's model settings, split and energy statistics: resumable, budgeted, early-stopped on the
unweighted validation loss. The rule, its parameters, the weights' summary (and the clusters' RBP)
are saved in the checkpoint's `origin`, the weights themselves in `sample_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize

from ..data.dataset import Dataset
from ..core.config import check, check_finite, named_options, setting
from ..core.errors import InputError
from ..metrics.conformations import cluster_conformations, cluster_force_metrics
from ..training.checkpoint import read_checkpoint
from ..training.config import TrainingConfig
from ..training.start import TrainingStart, check_parent_data, parent_record
from ..training.trainer import TrainingResult, train
from .model_errors import checkpoint_errors

REWEIGHT_RULES = ("frames", "clusters", "none")
RULE_DEFAULTS = {"frames": {"power": 1.0, "floor": 0.1, "cap": 10.0, "target_ess": None},
                 "clusters": {"strength": 4.0, "n_clusters": None, "cluster_seed": 0},
                 "none": {}}
#: The largest power the frames rule's target_ess solves for.
MAX_POWER = 50.0
#: Fine-tuning's learning rate as a fraction of the parent's, unless given.
DEFAULT_LR_FRACTION = 0.25


def check_rule(rule: str, options: dict) -> dict:
    """The rule's parameters with their defaults; InputError naming an unknown rule or parameter."""
    params = named_options("reweighting rule", rule, options, RULE_DEFAULTS)
    if rule == "frames" and not (params["power"] >= 0 and 0 < params["floor"] <= 1 <= params["cap"]):
        raise InputError(f"rule 'frames' needs power >= 0 and 0 < floor <= 1 <= cap, got {params}")
    target = params.get("target_ess")
    if rule == "frames" and target is not None and not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise InputError(f"rule 'frames' needs target_ess in (0, 1] (a share of the frames) or null, got {target!r}")
    if rule == "frames" and target is None:
        del params["target_ess"]  # unset, the parameters read as before it existed (a fine-tuning run resumes)
    if rule == "clusters" and not params["strength"] >= 0:
        raise InputError(f"rule 'clusters' needs strength >= 0, got {params['strength']}")
    return params


def sample_weights(rule: str, frame_force_mae, positions_angstrom=None, global_force_mae: float | None = None,
                   **options) -> tuple[np.ndarray, dict]:
    """(weights (n_frames,) with mean 1, a JSON-ready summary) by `rule` (module docstring) from frame_force_mae,
    the model's per-frame force MAE on the training frames (any one force unit); 'clusters' also needs
    positions_angstrom (n_frames, n_atoms, 3) and global_force_mae (same unit)."""
    params = check_rule(rule, options)
    e = np.asarray(frame_force_mae, dtype=np.float64).reshape(-1)
    if e.size == 0 or not np.all(np.isfinite(e)) or np.any(e < 0):
        raise InputError("frame_force_mae must hold finite non-negative errors, one per training frame")
    summary = {"rule": rule, "parameters": params}
    if rule == "none":
        w = np.ones_like(e)
    elif rule == "frames":
        median = float(np.median(e))
        ratio = e / median if median > 0 else np.ones_like(e)

        def weights(power: float) -> np.ndarray:
            return np.clip(ratio ** power, params["floor"], params["cap"])

        power = params["power"]
        if "target_ess" in params:
            def excess(p: float) -> float:
                return _ess(weights(p)) / e.size - params["target_ess"]

            power = MAX_POWER if excess(MAX_POWER) > 0 else 0.0 if excess(0.0) <= 0 else float(
                optimize.brentq(excess, 0.0, MAX_POWER, xtol=1e-6))
            summary["solved_power"] = power
        w = weights(power)
        summary["median_frame_force_mae"] = median
    else:
        if positions_angstrom is None or global_force_mae is None:
            raise InputError("rule 'clusters' needs the training frames' positions and the global force MAE")
        labels, _, info = cluster_conformations(positions_angstrom, n_clusters=params["n_clusters"],
                                                seed=params["cluster_seed"])
        frame_metrics = {"force_mae": e, "fnm_mae": e, "force_max": e, "fnm_max": e}  # only force_mae is used
        rbp = cluster_force_metrics(frame_metrics, labels, global_force_mae)["ratio_bad_points"]
        w = 1.0 + params["strength"] * rbp[labels]
        summary.update(n_clusters=int(info["n_clusters"]), cluster_rule=info["rule"],
                       cluster_sizes=info["cluster_sizes"], ratio_bad_points=[float(r) for r in rbp],
                       global_force_mae=float(global_force_mae))
    w = w / w.mean()
    summary.update(weight_min=float(w.min()), weight_max=float(w.max()), effective_sample_size=_ess(w),
                   effective_sample_share=_ess(w) / w.size, n_frames=int(w.size))
    return w, summary


def _ess(w: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 of the weights."""
    return float(w.sum() ** 2 / (w ** 2).sum())


@dataclass
class FinetuneConfig:
    """A fine-tuning run: the reweighting rule and what changes from the parent's training settings (the rest is
    the parent's). The fields are `openmlff finetune`'s options."""

    reweight: str = setting("none", "frames: weight by each frame's force error; clusters: by its conformation "
                                    "cluster's ratio of bad points; none: uniform (the control)")
    reweight_options: dict = setting(dict, "parameters of the rule, e.g. '{\"power\": 2}' (openmlff.improve.reweight)")
    time_budget_s: float | None = setting(None, "wall-clock budget in s", aliases=("--time-budget",))
    max_epochs: int | None = setting(None, "epochs (default: the parent's, until early stopping)")
    learning_rate: float | None = setting(None, "learning rate (default: a quarter of the parent's)",
                                          aliases=("--lr",))
    warmup_steps: int = setting(0, "optimiser steps of warm-up")
    seed: int | None = setting(None, "seed of the batch draws (default: the parent's)")
    early_stopping_patience_epochs: int | None = setting(None, "stop after this many epochs without improvement "
                                                               "(default: the parent's)")
    torch_threads: int | None = setting(None, "torch threads (default: openmlff.core.threads' choice)",
                                        aliases=("--threads",))

    def __post_init__(self) -> None:
        check_finite(self)
        check(self, self.reweight in REWEIGHT_RULES, "reweight",
              f"must be one of {list(REWEIGHT_RULES)}, got {self.reweight!r}")
        check(self, self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")


def finetune(checkpoint, out_dir, config: FinetuneConfig, *, data: Dataset | None = None,
             progress: bool = True) -> TrainingResult:
    """Fine-tune the model of `checkpoint` with sample weights by config.reweight into out_dir/model.ckpt, resuming
    an interrupted fine-tuning with the same parent and rule there. data: the parent's training data (default: the
    file its checkpoint records). The parent's settings except learning_rate (default DEFAULT_LR_FRACTION of the
    parent's), warmup_steps, max_epochs, time_budget_s, seed, early_stopping_patience_epochs and torch_threads,
    which config gives."""
    from ..core.threads import set_threads

    parent = read_checkpoint(checkpoint)
    params = check_rule(config.reweight, dict(config.reweight_options))
    dataset = data if data is not None else recorded_training_data(parent)
    set_threads(config.torch_threads, atoms_per_call=32 * dataset.n_atoms)
    check_parent_data(parent, dataset)
    split = parent.split
    train_set = dataset.subset(split.train)
    errors = checkpoint_errors(parent, train_set, progress=progress)
    weights, summary = sample_weights(config.reweight, errors["frames"]["force_mae"], positions_angstrom=train_set.R,
                                      global_force_mae=errors["force_mae"], **params)
    summary.update(parent_training_force_mae=errors["force_mae"], force_unit=errors["units"]["force"])
    origin = {"kind": "finetuned", "parent": parent_record(parent), "reweighting": summary}
    base = TrainingConfig.from_dict(parent.config)
    training = replace(base, learning_rate=config.learning_rate or base.learning_rate * DEFAULT_LR_FRACTION,
                       warmup_steps=config.warmup_steps, time_budget_s=config.time_budget_s,
                       max_epochs=config.max_epochs if config.max_epochs is not None else base.max_epochs,
                       seed=base.seed if config.seed is None else config.seed, torch_threads=config.torch_threads,
                       early_stopping_patience_epochs=config.early_stopping_patience_epochs or
                       base.early_stopping_patience_epochs)
    start = TrainingStart(parent, split, origin, sample_weights=weights)
    return train(dataset, out_dir, training, progress=progress, start=start)


def recorded_training_data(parent) -> Dataset:
    """The training data file named in a checkpoint's data provenance; InputError when it is not there."""
    from ..data import load_dataset

    source = parent.data_source
    if source is None or not source.is_file():
        raise InputError(f"{parent.path}: its training data file ({source or 'not recorded'}) is not found; "
                         "give it with --data")
    return load_dataset(source)
