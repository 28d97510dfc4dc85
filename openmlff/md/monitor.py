"""Stability monitor: stops an MD run at the first collapsed frame (DESIGN.md "Stability criterion").

After Fu et al. 2022 ("Forces are not enough"): bonds are found from covalent radii on the
starting structure; a frame has collapsed when any bond length departs from its reference
length by more than a limit (0.5 Å), or when the energy or positions are not finite, or when the
temperature exceeds a limit. Reference lengths are the mean over reference frames (e.g. the
training data) when given, else the starting structure's. A check is a few vectorised numpy
operations (microseconds for small molecules), cheap enough for every reported frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import elements
from ..units import FS_IN_PS

DEFAULT_BOND_DEVIATION_LIMIT_ANGSTROM = 0.5
DEFAULT_TEMPERATURE_LIMIT_K = 2000.0

# Reasons a collapse is recorded with, in the order they are checked.
NON_FINITE_POSITIONS = "non_finite_positions"
NON_FINITE_ENERGY = "non_finite_energy"
BOND_DEVIATION = "bond_deviation"
TEMPERATURE = "temperature"
#: OpenMM or the model raised during integration (e.g. NaN coordinates caught by OpenMM).
SIMULATION_ERROR = "simulation_error"


def default_temperature_limit_K(temperature_K: float) -> float:
    """Temperature above which a run counts as collapsed: max(2000 K, 4 x the thermostat temperature)."""
    return max(DEFAULT_TEMPERATURE_LIMIT_K, 4.0 * float(temperature_K))


@dataclass(frozen=True)
class BrokenBond:
    """A bond whose length left its reference by more than the limit; indices 0-based, lengths in Å."""

    atoms: tuple[int, int]
    elements: tuple[str, str]
    reference_length_angstrom: float
    length_angstrom: float

    @property
    def deviation_angstrom(self) -> float:
        return abs(self.length_angstrom - self.reference_length_angstrom)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["atoms"] = list(self.atoms)
        out["elements"] = list(self.elements)
        out["deviation_angstrom"] = self.deviation_angstrom
        return out


@dataclass(frozen=True)
class CollapseEvent:
    """Where and why a run collapsed. broken_bond is the most deviating bond (reason 'bond_deviation')."""

    step: int
    time_ps: float
    reason: str
    message: str
    broken_bond: BrokenBond | None = None
    n_broken_bonds: int = 0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["broken_bond"] = None if self.broken_bond is None else self.broken_bond.to_dict()
        return out


class StabilityMonitor:
    """Checks frames of one run against the stability criterion; `check` returns a CollapseEvent or None.

    atomic_numbers (n_atoms,); positions_angstrom (n_atoms, 3): the starting structure, where bonds
    are found; timestep_fs converts steps to ps; reference_positions_angstrom (n_frames, n_atoms, 3)
    or (n_atoms, 3): frames whose mean bond lengths are the references (default: the starting structure).
    """

    def __init__(
        self,
        atomic_numbers,
        positions_angstrom,
        timestep_fs: float,
        reference_positions_angstrom=None,
        bond_deviation_limit_angstrom: float = DEFAULT_BOND_DEVIATION_LIMIT_ANGSTROM,
        temperature_limit_K: float = DEFAULT_TEMPERATURE_LIMIT_K,
        bond_tolerance: float = 1.2,
    ) -> None:
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.int64)
        n = len(self.atomic_numbers)
        start = np.asarray(positions_angstrom, dtype=np.float64)
        if start.shape != (n, 3):
            raise ValueError(f"positions_angstrom has shape {start.shape}, expected ({n}, 3) for {n} atoms")
        self.timestep_fs = float(timestep_fs)
        self.bond_deviation_limit_angstrom = float(bond_deviation_limit_angstrom)
        self.temperature_limit_K = float(temperature_limit_K)
        self.bonds = elements.find_bonds(self.atomic_numbers, start, tolerance=bond_tolerance)
        self._i = self.bonds[:, 0]
        self._j = self.bonds[:, 1]
        self._symbols = elements.symbols(self.atomic_numbers)
        if reference_positions_angstrom is None:
            reference = start[None]
        else:
            reference = np.asarray(reference_positions_angstrom, dtype=np.float64)
            if reference.ndim == 2:
                reference = reference[None]
            if reference.ndim != 3 or reference.shape[1:] != (n, 3) or reference.shape[0] == 0:
                raise ValueError(
                    f"reference_positions_angstrom has shape {reference.shape}, expected (n_frames, {n}, 3)")
            if not np.isfinite(reference).all():
                raise ValueError("reference_positions_angstrom has non-finite values")
        self.reference_lengths_angstrom = self.bond_lengths(reference).mean(axis=0)

    def bond_lengths(self, positions_angstrom: np.ndarray) -> np.ndarray:
        """Lengths in Å of the monitored bonds: (n_bonds,) for one frame, (n_frames, n_bonds) for many."""
        pos = np.asarray(positions_angstrom, dtype=np.float64)
        d = pos[..., self._j, :] - pos[..., self._i, :]
        return np.sqrt(np.einsum("...k,...k->...", d, d))

    def time_ps(self, step: int) -> float:
        return step * self.timestep_fs * FS_IN_PS

    def event(self, step: int, reason: str, message: str, broken_bond: BrokenBond | None = None,
              n_broken_bonds: int = 0) -> CollapseEvent:
        """A CollapseEvent at `step` (time from the timestep)."""
        return CollapseEvent(step=int(step), time_ps=self.time_ps(step), reason=reason, message=message,
                             broken_bond=broken_bond, n_broken_bonds=n_broken_bonds)

    def check(self, step: int, positions_angstrom, potential_energy_kj: float, temperature_K: float) -> CollapseEvent | None:
        """None while the frame is sound; else the CollapseEvent (non-finite positions or energy, bond deviation, temperature)."""
        pos = np.asarray(positions_angstrom, dtype=np.float64)
        if not np.isfinite(pos).all():
            bad = int(np.argwhere(~np.isfinite(pos))[0][0])
            return self.event(step, NON_FINITE_POSITIONS, f"non-finite position of atom {bad} ({self._symbols[bad]})")
        if not np.isfinite(potential_energy_kj):
            return self.event(step, NON_FINITE_ENERGY, f"potential energy is {potential_energy_kj} kJ/mol")
        if len(self.bonds):
            lengths = self.bond_lengths(pos)
            deviation = np.abs(lengths - self.reference_lengths_angstrom)
            worst = int(np.argmax(deviation))
            if deviation[worst] > self.bond_deviation_limit_angstrom:
                i, j = int(self._i[worst]), int(self._j[worst])
                bond = BrokenBond(
                    atoms=(i, j), elements=(self._symbols[i], self._symbols[j]),
                    reference_length_angstrom=float(self.reference_lengths_angstrom[worst]),
                    length_angstrom=float(lengths[worst]))
                n_broken = int((deviation > self.bond_deviation_limit_angstrom).sum())
                return self.event(
                    step, BOND_DEVIATION,
                    f"bond {bond.elements[0]}{i}-{bond.elements[1]}{j} is {bond.length_angstrom:.3f} Å long, "
                    f"reference {bond.reference_length_angstrom:.3f} Å (limit ±{self.bond_deviation_limit_angstrom} Å); "
                    f"{n_broken} bond(s) beyond the limit",
                    broken_bond=bond, n_broken_bonds=n_broken)
        if not np.isfinite(temperature_K) or temperature_K > self.temperature_limit_K:
            return self.event(step, TEMPERATURE,
                              f"temperature {temperature_K:.1f} K exceeds the limit {self.temperature_limit_K:.1f} K")
        return None
