"""The reference data of a run: the data set a trajectory is compared with, and the model's training frames in it.

An exported model's metadata (openmlff.model_file.writer.export_checkpoint) records its training data
(`training.data_provenance.source_file`, `training.data_fingerprint_sha256`), the split sizes
and seed (`training.split`) and the training checkpoint (`training.checkpoint`). The training
frames are taken, in this order of preference, from
  1. the checkpoint's stored split, when the checkpoint file is there and was trained on these data;
  2. the split recomputed with openmlff.data.make_split from the recorded seed and sizes, when the
     data's fingerprint equals the recorded one (make_split is deterministic);
  3. otherwise all frames, saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import Dataset, load_dataset, make_split
from ..core.errors import InputError


@dataclass
class ReferenceData:
    """A reference data set, where it came from, and the model's training frames in it (None: unknown).

    origin: how the file was found; training_frames_origin: where the training frames came from
    (or why all frames are used); is_training_data: whether the data's fingerprint equals the
    model's recorded training-data fingerprint (None when the model records none).
    """

    dataset: Dataset
    origin: str
    training_frames: np.ndarray | None
    training_frames_origin: str
    is_training_data: bool | None

    def training_dataset(self) -> Dataset:
        """The training frames (all frames when they are unknown)."""
        return self.dataset if self.training_frames is None else self.dataset.subset(self.training_frames)

    def describe(self) -> dict:
        return {"source": self.dataset.source, "origin": self.origin, "frames": self.dataset.n_frames,
                "atoms": self.dataset.n_atoms, "fingerprint_sha256": self.dataset.fingerprint(),
                "is_model_training_data": self.is_training_data,
                "training_frames": None if self.training_frames is None else int(self.training_frames.size),
                "training_frames_origin": self.training_frames_origin}


def recorded_training_source(model_metadata: dict) -> Path | None:
    """The training data file named in a model's metadata, or None if it names none."""
    source = ((model_metadata.get("training") or {}).get("data_provenance") or {}).get("source_file")
    return Path(source) if source else None


def find_reference_data(model_metadata: dict, data=None, *, energy_unit: str | None = None,
                        length_unit: str | None = None) -> ReferenceData | None:
    """The reference data: `data` (a path or a Dataset) if given, else the model's recorded training file
    if it exists; None when there is neither. FileNotFoundError naming `data` if it does not exist."""
    if isinstance(data, Dataset):
        dataset, origin = data, "given as a Dataset"
    elif data is not None:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: reference data file not found")
        dataset, origin = load_dataset(path, energy_unit=energy_unit, length_unit=length_unit), "given (--data)"
    else:
        path = recorded_training_source(model_metadata)
        if path is None or not path.is_file():
            return None
        dataset = load_dataset(path, energy_unit=energy_unit, length_unit=length_unit)
        origin = "the model's training data (metadata training.data_provenance.source_file)"
    frames, frames_origin, same = training_frames(model_metadata, dataset)
    return ReferenceData(dataset=dataset, origin=origin, training_frames=frames, training_frames_origin=frames_origin,
                         is_training_data=same)


def training_frames(model_metadata: dict, dataset: Dataset) -> tuple[np.ndarray | None, str, bool | None]:
    """(training frame indices or None, where they came from, whether `dataset` is the model's training data)."""
    splits, origin, same = model_splits(model_metadata, dataset)
    return (None if splits is None else splits["train"]), origin, same


def model_splits(model_metadata: dict, dataset: Dataset) -> tuple[dict | None, str, bool | None]:
    """({"train", "val", "test"}: frame indices, or None; where they came from; whether `dataset` is the
    model's training data). The split is read from the training checkpoint when it still exists, else
    recomputed with make_split from the seed and sizes in the model metadata."""
    training = model_metadata.get("training") or {}
    recorded = training.get("data_fingerprint_sha256")
    if recorded is None:
        return None, "all frames: the model records no training data", None
    if recorded != dataset.fingerprint():
        return None, "all frames: these data are not the model's training data (fingerprints differ)", False
    if training.get("split_indices") is not None:  # a model of another code: its split named with it
        named = training["split_indices"]
        return ({k: np.asarray(named[k], dtype=np.int64) for k in ("train", "val", "test")},
                f"the split named with the model ({training.get('split_file')})", True)
    checkpoint = training.get("checkpoint")
    if checkpoint and Path(checkpoint).is_file():
        splits = _checkpoint_splits(Path(checkpoint), recorded)
        if splits is not None:
            return splits, f"the split stored in the training checkpoint {checkpoint}", True
    split = training.get("split") or {}
    if all(k in split for k in ("seed", "n_train", "n_val", "n_test")):
        recomputed = make_split(dataset.n_frames, split["n_train"], split["n_val"], split["n_test"], seed=split["seed"])
        return ({"train": recomputed.train, "val": recomputed.val, "test": recomputed.test},
                f"recomputed with make_split(seed={split['seed']}, n_train={split['n_train']}, "
                f"n_val={split['n_val']}, n_test={split['n_test']}) from the model metadata", True)
    return None, "all frames: the model metadata records no split", True


def _checkpoint_splits(path: Path, fingerprint: str) -> dict | None:
    """The split stored in a training checkpoint trained on data with `fingerprint`, else None. Read with
    openmlff.training.checkpoint (weights only): a crafted file named in a model's metadata is refused like any
    other unreadable checkpoint, and the recomputed split is used instead."""
    from ..training.checkpoint import read_checkpoint

    try:
        state = read_checkpoint(path).state
    except (InputError, OSError):
        return None
    if state.get("data_fingerprint") != fingerprint or not isinstance(state.get("split"), dict):
        return None
    return {name: np.asarray(state["split"].get(name, []), dtype=np.int64) for name in ("train", "val", "test")}


def named_training_metadata(training: dict | None) -> dict:
    """The metadata shape of model_splits for a model of another code whose training is named with it
    (potentials.model_ref.ModelRef.training: the data file and optionally a split .json file); {} without one."""
    if not training:
        return {}
    from ..data.splits import Split

    path = Path(training["data"])
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the model's training data file (training.data) not found")
    out = {"data_provenance": {"source_file": str(path.resolve())},
           "data_fingerprint_sha256": load_dataset(path).fingerprint()}
    if training.get("split"):
        split = Split.load(training["split"])
        out.update(split_indices={k: getattr(split, k).tolist() for k in ("train", "val", "test")},
                   split_file=str(training["split"]))
    return {"training": out}
