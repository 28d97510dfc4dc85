"""Per-element data: symbols, masses (IUPAC, via ASE) and covalent radii (Cordero et al. 2008).

One table for the whole package, so that force-over-mass metrics, OpenMM particle masses and
bond detection all use the same numbers.
"""

from __future__ import annotations

import numpy as np
from ase.data import atomic_masses as _ase_masses
from ase.data import atomic_numbers as _ase_numbers
from ase.data import chemical_symbols as _ase_symbols
from ase.data import covalent_radii as _ase_covalent_radii

from .errors import InputError

#: Highest atomic number openmlff accepts (ASE knows masses and radii up to here).
MAX_ATOMIC_NUMBER = 94


def symbol(z: int) -> str:
    """Chemical symbol of atomic number z."""
    check_atomic_numbers([z])
    return _ase_symbols[int(z)]


def symbols(zs) -> list[str]:
    """Chemical symbols of a sequence of atomic numbers."""
    return [symbol(z) for z in zs]


def atomic_number(sym: str) -> int:
    """Atomic number of a chemical symbol ('C' -> 6); ValueError if unknown."""
    key = sym.strip().capitalize()
    if key not in _ase_numbers or _ase_numbers[key] == 0:
        raise InputError(f"unknown chemical symbol {sym!r}")
    return int(_ase_numbers[key])


def masses(zs) -> np.ndarray:
    """Atomic masses in dalton (g/mol) of an array of atomic numbers."""
    zs = np.asarray(zs, dtype=int)
    check_atomic_numbers(zs)
    return np.asarray(_ase_masses[zs], dtype=np.float64)


def covalent_radii(zs) -> np.ndarray:
    """Covalent radii in Å of an array of atomic numbers."""
    zs = np.asarray(zs, dtype=int)
    check_atomic_numbers(zs)
    return np.asarray(_ase_covalent_radii[zs], dtype=np.float64)


def check_atomic_numbers(zs) -> None:
    """ValueError naming the offending values if any atomic number is outside 1..MAX_ATOMIC_NUMBER."""
    zs = np.asarray(zs)
    bad = zs[(zs < 1) | (zs > MAX_ATOMIC_NUMBER)] if zs.size else zs
    if bad.size:
        raise InputError(f"unknown atomic numbers {sorted(set(bad.tolist()))}; expected 1..{MAX_ATOMIC_NUMBER}")


def find_bonds(zs, positions_angstrom: np.ndarray, tolerance: float = 1.2) -> np.ndarray:
    """Covalent bonds (i < j) from covalent radii: |r_ij| < tolerance * (r_i + r_j).

    Returns an (n_bonds, 2) int array. The default tolerance of 1.2 is the usual choice of
    bond-perception codes (e.g. Open Babel uses r_i + r_j + 0.45 Å, similar for C-H).
    """
    radii = covalent_radii(zs)
    pos = np.asarray(positions_angstrom, dtype=np.float64)
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    limit = tolerance * (radii[:, None] + radii[None, :])
    i, j = np.nonzero(np.triu(d < limit, k=1))
    return np.stack([i, j], axis=1).astype(np.int64)
