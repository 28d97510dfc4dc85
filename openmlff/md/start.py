"""Where a run starts: a frame of a dataset or a structure (built-in name or file), then run_simulation;
or N copies from N frames, or from one start with N seeds, then run_replicas (`simulate --replicas N`).

A dataset start also gives the monitor its reference bond lengths (the mean over the dataset's
frames, as docs/architecture.md "Stability criterion" asks); a structure start uses its own topology (residues, bonds) for the
trajectory and the starting structure as the bond reference.
"""

from __future__ import annotations

import numpy as np

from ..data.dataset import Dataset
from ..core.errors import InputError
from .runner import SimulationConfig, run_simulation

#: At most this many dataset frames are averaged for the reference bond lengths.
MAX_REFERENCE_FRAMES = 2000


def reference_frames(positions_angstrom: np.ndarray) -> np.ndarray:
    """At most MAX_REFERENCE_FRAMES of the frames (n, n_atoms, 3), evenly strided: enough for mean bond lengths."""
    return positions_angstrom[::max(1, len(positions_angstrom) // MAX_REFERENCE_FRAMES)]


def run_from_dataset_frame(model, dataset: Dataset, frame: int, out_dir, config: SimulationConfig,
                           progress: bool = True, trust=None) -> dict:
    """MD from frame `frame` of `dataset`; bond references are the mean over (up to 2000 of) its frames."""
    if not 0 <= frame < dataset.n_frames:
        raise InputError(f"{dataset.source}: frame {frame} does not exist (the dataset has {dataset.n_frames} frames, 0-based)")
    return run_simulation(model, dataset.z, dataset.R[frame], out_dir, config,
                          reference_positions_angstrom=reference_frames(dataset.R), progress=progress, trust=trust)


def run_from_structure(model, structure, out_dir, config: SimulationConfig, progress: bool = True,
                       trust=None) -> dict:
    """MD from a built-in structure name ('aspirin', 'ac-ala3-nhme', 'chignolin') or a PDB/XYZ file."""
    from ..structures import load_structure

    s = load_structure(structure)
    return run_simulation(model, np.asarray(s.atomic_numbers), s.positions_angstrom, out_dir, config,
                          topology=s.topology, progress=progress, trust=trust,
                          start_name=f"structure {s.source}" if s.source else "structure")


def replica_seeds(seed: int, frames: list[int] | None, n: int) -> list[int]:
    """The copies' seeds: seed..seed+N-1, except that N distinct frames share `seed` (the copies already differ
    in their starts, and each copy then is the lone run `simulate --frame I --seed SEED` would be)."""
    if frames is not None and len(set(frames)) == n:
        return [int(seed)] * n
    return [int(seed) + k for k in range(n)]


def replicas_from_dataset(model, dataset: Dataset, frames: list[int], out_dir, config: SimulationConfig,
                          progress: bool = True) -> tuple[list, list[int]]:
    """len(frames) copies in one Context (md/replicas.py), copy k from dataset frame frames[k]; the summaries and
    the seeds (replica_seeds). Bond references as run_from_dataset_frame's."""
    from .replicas import run_replicas

    bad = [f for f in frames if not 0 <= f < dataset.n_frames]
    if bad:
        raise InputError(f"{dataset.source}: frame {bad[0]} does not exist (the dataset has {dataset.n_frames} "
                         "frames, 0-based)")
    seeds = replica_seeds(config.seed, list(frames), len(frames))
    return run_replicas(model, dataset.z, dataset.R[list(frames)], out_dir, config, seeds=seeds,
                        reference_positions_angstrom=reference_frames(dataset.R), progress=progress), seeds


def replicas_from_structure(model, structure, n: int, out_dir, config: SimulationConfig,
                            progress: bool = True) -> tuple[list, list[int]]:
    """N copies of one structure in one Context, with the seeds config.seed..+N-1; the summaries and the seeds."""
    from ..structures import load_structure
    from .replicas import run_replicas

    s = load_structure(structure)
    seeds = replica_seeds(config.seed, None, n)
    return run_replicas(model, s.atomic_numbers, np.stack([s.positions_angstrom] * n), out_dir, config, seeds=seeds,
                        topology=s.topology, progress=progress), seeds
