"""Training that starts from a trained model: fine-tuning and continued training (docs/architecture.md
"Training checkpoint", "Metric-guided improvement").

A `TrainingStart` says where such a run begins: the parent checkpoint's weights ('best' by default),
its split, its per-element energies and force scale (unchanged, so the model's normalisation stays
the one it learnt with), optionally one sampling weight per training frame (reweighted fine-tuning,
openmlff.improve.reweight) and training frames added to the parent's (recruited data,
openmlff.improve.recruit). What it records (`origin`) goes into the new checkpoint, so a resume is
checked against it and an exported model names its parent.

Continued training on added frames trains on one dataset file, `DIR/training_data.npz` (the
parent's frames in their order, then the added ones), so that analysis and correlation later find
the model's training frames like any other model's: the parent's validation and test frames keep
their indices and the added frames join the training set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.dataset import Dataset
from ..data.splits import Split
from ..core.errors import InputError
from .checkpoint import TrainingCheckpoint
from .config import TrainingConfig

COMBINED_DATA_NAME = "training_data.npz"
#: Settings a run started from a parent takes from the parent: they define the model and its split.
INHERITED_FIELDS = ("architecture", "hyperparameters", "preset", "dtype")


class StartError(InputError):
    """A training cannot start from the given checkpoint with the given data."""


@dataclass(frozen=True)
class TrainingStart:
    """Where a training from a trained model begins (module docstring).

    split: the split of the new run (the parent's, with any added frames in its training set);
    sample_weights: one weight per frame of split.train (ascending frame index), mean 1, or None for
    uniform; origin: the JSON-ready record saved as the checkpoint's `origin`.
    """

    parent: TrainingCheckpoint
    split: Split
    origin: dict
    weights: str = "best"
    sample_weights: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if self.sample_weights is not None:
            w = np.asarray(self.sample_weights, dtype=np.float64)
            if w.shape != self.split.train.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise StartError(f"sample weights must be {self.split.train.size} finite non-negative numbers "
                                 f"(one per training frame) with a positive sum, got shape {w.shape}")

    def config(self, config: TrainingConfig) -> TrainingConfig:
        """`config` with the model's settings and split sizes of the parent (INHERITED_FIELDS) and this split."""
        parent = self.parent.config
        return replace(config, **{k: parent[k] for k in INHERITED_FIELDS},
                       n_train=int(self.split.train.size), n_val=int(self.split.val.size),
                       n_test=int(self.split.test.size), split=None)  # the start brings its split

    def initial_state(self) -> dict:
        """The parts of a new checkpoint that come from the parent: split, energy statistics, weights, origin."""
        p = self.parent.state
        weights = self.parent.state_dict(self.weights)
        return {
            "architecture": p["architecture"], "hyperparameters": p["hyperparameters"],
            "split": self.split.to_dict(), "atomic_numbers": list(p["atomic_numbers"]),
            "element_energy_ev": list(p["element_energy_ev"]), "scale_ev": float(p["scale_ev"]),
            "model_state": weights, "ema_state": weights, "best_state": None,
            "sample_weights": None if self.sample_weights is None else np.asarray(self.sample_weights).tolist(),
            "origin": self.origin,
        }


def parent_record(parent: TrainingCheckpoint, weights: str = "best") -> dict:
    """What identifies the parent of a run: its file, weights, data and how far it had trained."""
    return {"checkpoint": str(Path(parent.path).resolve()), "weights": weights,
            "data_fingerprint": parent.data_fingerprint, "architecture": parent.architecture,
            "epoch": int(parent.state.get("epoch", 0)), "step": int(parent.state.get("step", 0))}


def check_parent_data(parent: TrainingCheckpoint, dataset: Dataset) -> None:
    """StartError unless `dataset` holds exactly the numbers the parent was trained on."""
    if parent.data_fingerprint != dataset.fingerprint():
        raise StartError(f"{dataset.source}: not the data {parent.path} was trained on (fingerprint "
                         f"{dataset.fingerprint()[:12]}, the checkpoint's {str(parent.data_fingerprint)[:12]}); "
                         "give the parent's training data file")


def continue_start(parent: TrainingCheckpoint, dataset: Dataset, added: Dataset | None, out_dir,
                   weights: str = "best") -> tuple[Dataset, TrainingStart]:
    """(the dataset to train on, the start) for continued training of `parent`, on `added` frames too.

    Without added frames the dataset is `dataset` (the parent's). With them it is the parent's frames
    followed by the added ones, written to (or, on resume, checked against) out_dir/training_data.npz.
    """
    from ..data import load_dataset, save_dataset

    check_parent_data(parent, dataset)
    split = parent.split
    origin = {"kind": "continued", "parent": parent_record(parent, weights), "added_data": None}
    if added is None:
        return dataset, TrainingStart(parent, split, origin, weights)
    if not added.has_labels:
        raise StartError(f"{added.source}: the added data have no energies and forces to train on")
    if not np.array_equal(added.z, dataset.z):
        raise StartError(f"{added.source}: field 'z' (atomic numbers): the added frames are of other atoms than the "
                         f"parent's training data ({added.n_atoms} atoms, expected {dataset.n_atoms} in the same order)")
    n0, n1 = dataset.n_frames, added.n_frames
    combined = Dataset(z=dataset.z, R=np.concatenate([dataset.R, added.R]), E=np.concatenate([dataset.E, added.E]),
                       F=np.concatenate([dataset.F, added.F]), name=dataset.name,
                       provenance={"combined_from": [{"source_file": dataset.source, "frames": n0,
                                                      "fingerprint_sha256": dataset.fingerprint()},
                                                     {"source_file": added.source, "frames": n1,
                                                      "fingerprint_sha256": added.fingerprint(),
                                                      "provenance": added.provenance}],
                                   "level_of_theory": dataset.provenance.get("level_of_theory")})
    path = Path(out_dir) / COMBINED_DATA_NAME
    if path.exists():
        on_disk = load_dataset(path)
        if on_disk.fingerprint() != combined.fingerprint():
            raise StartError(f"{path}: holds other frames than the parent's data plus {added.source}; "
                             "use a new output folder for other added data")
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_dataset(combined, path)
    combined = load_dataset(path)  # its provenance names the file, so the model's metadata does too
    new_split = Split(train=np.concatenate([split.train, np.arange(n0, n0 + n1)]), val=split.val, test=split.test,
                      seed=split.seed, n_frames=n0 + n1)
    origin["added_data"] = {"source_file": added.source, "fingerprint_sha256": added.fingerprint(),
                            "n_frames": n1, "frame_indices": list(range(n0, n0 + n1)),
                            "provenance": added.provenance}
    return combined, TrainingStart(parent, new_split, origin, weights)
