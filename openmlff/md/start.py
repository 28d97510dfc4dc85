"""Where a run starts: a frame of a dataset or a structure (built-in name or file), then run_simulation.

A dataset start also gives the monitor its reference bond lengths (the mean over the dataset's
frames, as docs/architecture.md "Stability criterion" asks); a structure start uses its own topology (residues, bonds) for the
trajectory and the starting structure as the bond reference.
"""

from __future__ import annotations

import numpy as np

from ..data.dataset import Dataset
from ..errors import InputError
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
