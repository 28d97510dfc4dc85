"""The one reader and writer of training checkpoints (`model.ckpt`; docs/architecture.md "Training checkpoint").

Checkpoints are what people share, and a pickle can run any code when it is loaded. So a checkpoint
is read with `torch.load(weights_only=True)`, whose unpickler builds only tensors and plain Python
containers, plus the short allow-list below (what checkpoints of openmlff 0.1 hold: numpy arrays of
the per-element energies, and torch's version string). Anything else in the file - a crafted object
with a `__reduce__` - is refused before it is built, with an error naming the file and the type.
Checkpoints are written with plain types only (lists, not numpy arrays), so new ones need no
allow-list at all; old ones are converted on read.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.atomic_io import atomic_torch_save
from ..data.splits import Split
from ..core.errors import InputError

CHECKPOINT_NAME = "model.ckpt"
CHECKPOINT_FORMAT = 1
#: Which stored weights `TrainingCheckpoint.state_dict` returns for each choice of `weights`.
WEIGHT_KEYS = {"best": "best_state", "ema": "ema_state", "raw": "model_state"}


class CheckpointError(InputError):
    """A file is not a readable openmlff training checkpoint, or holds objects a checkpoint never holds."""


def _allowed_globals() -> list:
    """Types besides tensors and plain containers that checkpoints of openmlff 0.1 hold (numpy arrays, TorchVersion)."""
    from torch.torch_version import TorchVersion

    try:
        reconstruct = np._core.multiarray._reconstruct
    except AttributeError:  # numpy < 2
        reconstruct = np.core.multiarray._reconstruct
    return [TorchVersion, np.ndarray, np.dtype, reconstruct, *{type(np.dtype(t)) for t in (np.float64, np.float32,
                                                                                             np.int64, np.int32)}]


@dataclass(frozen=True)
class TrainingCheckpoint:
    """A training checkpoint as read from disk: the state the trainer wrote, with typed access to its parts."""

    path: Path
    state: dict

    @property
    def split(self) -> Split:
        return Split.from_dict(self.state["split"])

    @property
    def architecture(self) -> str:
        return self.state["architecture"]

    @property
    def hyperparameters(self) -> dict:
        return self.state["hyperparameters"]

    @property
    def config(self) -> dict:
        return self.state["config"]

    @property
    def data_fingerprint(self) -> str | None:
        return self.state.get("data_fingerprint")

    @property
    def data_source(self) -> Path | None:
        """The training data file recorded in the checkpoint's data provenance (None: not recorded)."""
        source = (self.state.get("data_provenance") or {}).get("source_file")
        return Path(source) if source else None

    def state_dict(self, weights: str = "best") -> dict:
        """The stored weights: 'best' (EMA weights of the best validation epoch), 'ema' or 'raw'."""
        if weights not in WEIGHT_KEYS:
            raise InputError(f"weights must be one of {list(WEIGHT_KEYS)}, got {weights!r}")
        stored = self.state.get(WEIGHT_KEYS[weights])
        return stored if stored is not None else self.state["ema_state"]

    def potential(self, weights: str = "best"):
        """The EnergyModel with the chosen weights, in the training dtype, in eval mode."""
        from ..models import build_model

        potential = build_model(self.architecture, self.hyperparameters, saved=True)
        potential.to(getattr(torch, self.config["dtype"]))
        potential.load_state_dict(self.state_dict(weights))
        potential.eval()
        return potential


def read_checkpoint(path) -> TrainingCheckpoint:
    """Read a training checkpoint safely; CheckpointError naming the file when it is not one (or is crafted).

    FileNotFoundError when there is no file at `path`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such training checkpoint")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; expected a training checkpoint file "
                              f"(the {CHECKPOINT_NAME} inside a training folder)")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects that a training checkpoint never holds, so it was "
            f"not loaded (openmlff never unpickles code; torch says: {_first_line(exc)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an openmlff training checkpoint (expected a table with "
                              f"format {CHECKPOINT_FORMAT})")
    missing = [k for k in ("split", "architecture", "hyperparameters", "config") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: training checkpoint lacks the fields {missing}")
    for key in ("best_state", "ema_state"):  # the weights a model is exported or fine-tuned from
        weights = state.get(key)
        bad = [name for name, value in (weights or {}).items()
               if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
        if bad:
            raise CheckpointError(f"{path}: field '{key}' holds non-finite weights (in {bad[0]}); expected finite "
                                  "numbers")
    return TrainingCheckpoint(path, _plain(state))


def read_split(path) -> tuple[Split, str | None]:
    """(the split, the data fingerprint or None) of a training checkpoint or of a split .json file."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return Split.load(path), None
    checkpoint = read_checkpoint(path)
    try:
        return checkpoint.split, checkpoint.data_fingerprint
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: field 'split': not a train/val/test split ({exc})") from None


def write_checkpoint(path, state: dict) -> Path:
    """Write the trainer's state atomically, with plain types only (readable without any allow-list)."""
    return atomic_torch_save(path, _plain(state))


def _plain(state: dict) -> dict:
    """Old checkpoints held numpy arrays and a TorchVersion: the same values as lists and str."""
    out = dict(state)
    if isinstance(out.get("element_energy_ev"), np.ndarray):
        out["element_energy_ev"] = out["element_energy_ev"].tolist()
    versions = out.get("versions")
    if isinstance(versions, dict):
        out["versions"] = {k: str(v) for k, v in versions.items()}
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
