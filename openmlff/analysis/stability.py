"""Bond-length deviations over a trajectory and the order in which bonds break (docs/architecture.md "Stability criterion").

The bonds and their reference lengths are those of the MD stability monitor (openmlff.md.monitor.StabilityMonitor:
covalent radii on the starting structure, reference length = mean over reference frames or the starting
structure), so the analysis and the monitor agree on what a broken bond is: |length - reference length| > limit
(0.5 Å by default). Lengths and deviations are in Å (the monitor's unit; names end in _angstrom), the trajectory
in nm.
"""

from __future__ import annotations

import mdtraj
import numpy as np

from ..core import elements
from ..core.errors import InputError
from ..md.monitor import StabilityMonitor
from ..core.units import NM_IN_ANGSTROM


def monitored_bonds(atomic_numbers, start_positions_angstrom, reference_positions_angstrom=None,
                    bond_tolerance: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """The stability monitor's bonds (n_bonds, 2), found on start_positions_angstrom (n_atoms, 3), and reference
    lengths (n_bonds,) in Å: the mean over reference_positions_angstrom (n_frames, n_atoms, 3), or the start's."""
    monitor = StabilityMonitor(atomic_numbers, start_positions_angstrom, timestep_fs=1.0,
                               reference_positions_angstrom=reference_positions_angstrom, bond_tolerance=bond_tolerance)
    return monitor.bonds.copy(), monitor.reference_lengths_angstrom.copy()


def bond_length_deviations_angstrom(traj: mdtraj.Trajectory, bonds, reference_lengths_angstrom) -> np.ndarray:
    """Signed deviation length - reference length in Å of each bond in each frame: (n_frames, n_bonds)."""
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    reference = np.asarray(reference_lengths_angstrom, dtype=np.float64).reshape(-1)
    if reference.size != len(bonds):
        raise InputError(f"{reference.size} reference lengths for {len(bonds)} bonds; expected one per bond")
    if len(bonds) == 0:
        return np.zeros((traj.n_frames, 0))
    lengths = mdtraj.compute_distances(traj, bonds, periodic=False).astype(np.float64) * NM_IN_ANGSTROM
    return lengths - reference[None, :]


def first_frames_beyond_limit(deviations_angstrom, limit_angstrom: float) -> np.ndarray:
    """For each bond, the first frame where |deviation| > limit (Å); -1 for a bond that never goes beyond."""
    beyond = np.abs(np.asarray(deviations_angstrom, dtype=np.float64)) > float(limit_angstrom)
    first = beyond.argmax(axis=0)
    return np.where(beyond.any(axis=0), first, -1).astype(np.int64)


def first_broken_bonds(deviations_angstrom, bonds, atomic_numbers, limit_angstrom: float,
                       max_bonds: int | None = None) -> list[dict]:
    """The broken bonds in the order they broke: by the first frame beyond the limit, ties by the larger
    |deviation| in that frame. Each entry: bond (its index in `bonds`), atoms, elements, first_frame,
    deviation_angstrom (signed, in that frame) and max_abs_deviation_angstrom (over all frames)."""
    dev = np.asarray(deviations_angstrom, dtype=np.float64)
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    first = first_frames_beyond_limit(dev, limit_angstrom)
    broken = np.flatnonzero(first >= 0)
    at_break = dev[first[broken], broken]
    order = broken[np.lexsort((-np.abs(at_break), first[broken]))]
    symbols = elements.symbols(atomic_numbers)
    out = []
    for b in order[:max_bonds]:
        i, j = (int(a) for a in bonds[b])
        out.append({
            "bond": int(b), "atoms": [i, j], "elements": [symbols[i], symbols[j]], "first_frame": int(first[b]),
            "deviation_angstrom": float(dev[first[b], b]), "max_abs_deviation_angstrom": float(np.abs(dev[:, b]).max()),
        })
    return out


def bond_label(bond, atomic_numbers) -> str:
    """'C0-H14': element and 0-based index of both atoms, the way the stability monitor names bonds."""
    i, j = (int(a) for a in bond)
    return f"{elements.symbol(int(atomic_numbers[i]))}{i}-{elements.symbol(int(atomic_numbers[j]))}{j}"
