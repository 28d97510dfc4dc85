"""Evaluate a potential on a dataset, batch by batch, into force metrics.

For an MLFF the potential is the same TorchScript file MD runs with, so the metrics describe exactly the model
that drives the trajectories; a classical force field or a reference method (openmlff.potentials) is evaluated
through the same interface. One batch at a time goes into a ForceErrorAccumulator: memory stays bounded.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..data.dataset import Dataset, DatasetError
from ..potentials import get_potential
from .force_metrics import DEFAULT_ENERGY_UNIT, DEFAULT_FORCE_UNIT, ForceErrorAccumulator


def predict_batches(model, dataset: Dataset, batch_size: int = 32, progress: bool = False):
    """Yield (indices, energies eV (b,), forces eV/Å (b, n_atoms, 3)) for consecutive batches of frames.

    model: an exported model file, a potential name ('amber14', 'gfn2-xtb', ...) or a Potential.
    """
    potential = get_potential(model)
    potential.check_atoms(dataset.z, where=str(dataset.source))
    bar = tqdm(total=dataset.n_frames, disable=not progress, desc="evaluating", unit="frame", dynamic_ncols=True)
    for start in range(0, dataset.n_frames, batch_size):
        idx = np.arange(start, min(start + batch_size, dataset.n_frames))
        energies, forces = potential.energies_and_forces(dataset.z, dataset.R[idx])
        bar.update(len(idx))
        yield idx, energies, forces
    bar.close()


def evaluate_model(model, dataset: Dataset, batch_size: int = 32, force_unit: str = DEFAULT_FORCE_UNIT,
                   energy_unit: str = DEFAULT_ENERGY_UNIT, include_frames: bool = True, progress: bool = False) -> dict:
    """Force and energy metrics of a potential (a model file, a name, a Potential) on the dataset's labelled frames.

    Returns the accumulator's JSON-ready result (global metrics at the top level, plus "elements",
    "atoms", "frames" and "units") with "model", "data" and "evaluation" blocks added.
    """
    if not dataset.has_labels:
        raise DatasetError(f"{dataset.source}: the dataset has no energies and forces to compare with")
    acc = ForceErrorAccumulator(dataset.z)
    t0 = time.perf_counter()
    potential = get_potential(model)
    for idx, e_pred, f_pred in predict_batches(potential, dataset, batch_size, progress):
        acc.add(f_pred, dataset.F[idx], E_pred=e_pred, E_ref=dataset.E[idx])
    wall = time.perf_counter() - t0
    out = acc.result(force_unit=force_unit, energy_unit=energy_unit, include_frames=include_frames)
    out["model"] = str(potential.path) if potential.path is not None else potential.name
    described = potential.metadata(dataset.z)
    out["potential"] = {"kind": potential.kind, "name": potential.name,
                        **{k: described[k] for k in ("architecture", "force_field", "level_of_theory", "source",
                                                     "committee") if k in described}}
    out["data"] = {"source": dataset.source, "frames": dataset.n_frames, "atoms": dataset.n_atoms,
                   "fingerprint_sha256": dataset.fingerprint()}
    out["evaluation"] = {"batch_size": batch_size, "wall_time_s": round(wall, 3),
                         "frames_per_s": round(dataset.n_frames / wall, 1) if wall > 0 else None}
    return out
