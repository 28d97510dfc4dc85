"""Evaluate an exported model on a dataset, batch by batch, into force metrics.

The model file is the same TorchScript file MD runs with, so the metrics describe exactly the
model that drives the trajectories. Predictions of one batch at a time go into a
ForceErrorAccumulator, so memory stays bounded whatever the number of frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import units
from ..data.dataset import Dataset, DatasetError
from ..model_file import check_model_atoms, energies_and_forces, load_exported
from .force_metrics import DEFAULT_ENERGY_UNIT, DEFAULT_FORCE_UNIT, ForceErrorAccumulator

_KJ_PER_MOL_NM_TO_EV_PER_A = 1.0 / (units.EV_IN_KJ_PER_MOL * units.NM_IN_ANGSTROM)


def predict_batches(model_path, dataset: Dataset, batch_size: int = 32, progress: bool = False):
    """Yield (indices, energies eV (b,), forces eV/Å (b, n_atoms, 3)) for consecutive batches of frames."""
    module, meta = load_exported(model_path)
    check_model_atoms(model_path, meta, dataset.z, structure_name=str(dataset.source))
    bar = tqdm(total=dataset.n_frames, disable=not progress, desc="evaluating", unit="frame", dynamic_ncols=True)
    for start in range(0, dataset.n_frames, batch_size):
        idx = np.arange(start, min(start + batch_size, dataset.n_frames))
        e_kj, f_kj = energies_and_forces(module, dataset.R[idx] / units.NM_IN_ANGSTROM)
        bar.update(len(idx))
        yield idx, e_kj / units.EV_IN_KJ_PER_MOL, f_kj * _KJ_PER_MOL_NM_TO_EV_PER_A
    bar.close()


def evaluate_model(model_path, dataset: Dataset, batch_size: int = 32, force_unit: str = DEFAULT_FORCE_UNIT,
                   energy_unit: str = DEFAULT_ENERGY_UNIT, include_frames: bool = True, progress: bool = False) -> dict:
    """Force and energy metrics of the model file on the dataset's labelled frames.

    Returns the accumulator's JSON-ready result (global metrics at the top level, plus "elements",
    "atoms", "frames" and "units") with "model", "data" and "evaluation" blocks added.
    """
    if not dataset.has_labels:
        raise DatasetError(f"{dataset.source}: the dataset has no energies and forces to compare with")
    acc = ForceErrorAccumulator(dataset.z)
    t0 = time.perf_counter()
    for idx, e_pred, f_pred in predict_batches(model_path, dataset, batch_size, progress):
        acc.add(f_pred, dataset.F[idx], E_pred=e_pred, E_ref=dataset.E[idx])
    wall = time.perf_counter() - t0
    out = acc.result(force_unit=force_unit, energy_unit=energy_unit, include_frames=include_frames)
    out["model"] = str(Path(model_path).resolve())
    out["data"] = {"source": dataset.source, "frames": dataset.n_frames, "atoms": dataset.n_atoms,
                   "fingerprint_sha256": dataset.fingerprint()}
    out["evaluation"] = {"batch_size": batch_size, "wall_time_s": round(wall, 3),
                         "frames_per_s": round(dataset.n_frames / wall, 1) if wall > 0 else None}
    return out
