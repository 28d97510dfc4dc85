"""Stability monitor: stops an MD run at the first collapsed frame (docs/architecture.md "Stability criterion").

After Fu et al. 2022 ("Forces are not enough"): bonds are found from covalent radii on the
starting structure; a frame has collapsed when any bond length departs from its reference
length by more than a limit (0.5 Å). Reference lengths are the mean over reference frames (e.g.
the training data) when given, else the starting structure's. Also a collapse:

* non-finite positions, energy or forces;
* two atoms that are not bonded closer than a limit (0.7 Å by default: shorter than any
  covalent bond, H-H in H2 being 0.74 Å, so no sound molecule has such a pair; catches atoms
  falling onto each other, which a bond criterion misses when neither is bonded to the other);
* a temperature above a limit (max(2000 K, 4 x the thermostat temperature) by default).

A check is a few vectorised numpy operations and a k-d tree query (tens of µs for small
molecules). The monitor also keeps the last few checked frames, so that a collapse can be
looked at more finely than the trajectory's frame interval.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, replace

import numpy as np
import openmm
from openmm import unit
from scipy.spatial import cKDTree

from ..core import elements
from ..core.errors import InputError
from ..core.units import FS_IN_PS
from .config import (
    DEFAULT_BOND_DEVIATION_LIMIT_ANGSTROM, DEFAULT_FRAMES_KEPT, DEFAULT_MIN_NONBONDED_DISTANCE_ANGSTROM,
    DEFAULT_TEMPERATURE_LIMIT_K,
)
from .reporters import temperature_K

# Reasons a collapse is recorded with, in the order they are checked.
NON_FINITE_POSITIONS = "non_finite_positions"
NON_FINITE_ENERGY = "non_finite_energy"
NON_FINITE_FORCES = "non_finite_forces"
BOND_DEVIATION = "bond_deviation"
NONBONDED_CONTACT = "nonbonded_contact"
TEMPERATURE = "temperature"
#: OpenMM or the model raised during integration (e.g. NaN coordinates caught by OpenMM).
SIMULATION_ERROR = "simulation_error"


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
        return {**asdict(self), "atoms": list(self.atoms), "elements": list(self.elements),
                "deviation_angstrom": self.deviation_angstrom}


@dataclass(frozen=True)
class ClosePair:
    """Two atoms that are not bonded but closer than the limit; indices 0-based, distance in Å."""

    atoms: tuple[int, int]
    elements: tuple[str, str]
    distance_angstrom: float

    def to_dict(self) -> dict:
        return {"atoms": list(self.atoms), "elements": list(self.elements), "distance_angstrom": self.distance_angstrom}


@dataclass(frozen=True)
class CollapseEvent:
    """Where and why a run collapsed. broken_bond is the most deviating bond (reason 'bond_deviation');
    close_pair the closest non-bonded pair (reason 'nonbonded_contact')."""

    step: int
    time_ps: float
    reason: str
    message: str
    broken_bond: BrokenBond | None = None
    n_broken_bonds: int = 0
    close_pair: ClosePair | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "broken_bond": None if self.broken_bond is None else self.broken_bond.to_dict(),
                "close_pair": None if self.close_pair is None else self.close_pair.to_dict()}


@dataclass(frozen=True)
class CheckedFrame:
    """One checked frame: step, positions (n_atoms, 3) in Å, temperature in K, potential energy in
    kJ/mol (NaN where the check had none), and the largest bond deviation in Å."""

    step: int
    positions_angstrom: np.ndarray
    temperature_K: float
    potential_energy_kJ_per_mol: float
    max_bond_deviation_angstrom: float


class StabilityMonitor:
    """Checks frames of one run against the stability criterion; `check` returns a CollapseEvent or None.

    positions_angstrom (n_atoms, 3): the start, where bonds are found; reference_positions_angstrom ((n_frames,)
    n_atoms, 3): frames whose mean bond lengths are the references (default: the start).
    min_nonbonded_distance_angstrom None switches that criterion off. `recent_frames`: the last `frames_kept`
    checked frames, oldest first.
    """

    def __init__(
        self,
        atomic_numbers,
        positions_angstrom,
        timestep_fs: float,
        reference_positions_angstrom=None,
        bond_deviation_limit_angstrom: float = DEFAULT_BOND_DEVIATION_LIMIT_ANGSTROM,
        temperature_limit_K: float = DEFAULT_TEMPERATURE_LIMIT_K,
        min_nonbonded_distance_angstrom: float | None = DEFAULT_MIN_NONBONDED_DISTANCE_ANGSTROM,
        bond_tolerance: float = 1.2,
        frames_kept: int = DEFAULT_FRAMES_KEPT,
    ) -> None:
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.int64)
        n = len(self.atomic_numbers)
        start = np.asarray(positions_angstrom, dtype=np.float64)
        if start.shape != (n, 3):
            raise InputError(f"positions_angstrom has shape {start.shape}, expected ({n}, 3) for {n} atoms")
        self.timestep_fs = float(timestep_fs)
        self.bond_deviation_limit_angstrom = float(bond_deviation_limit_angstrom)
        self.temperature_limit_K = float(temperature_limit_K)
        self.min_nonbonded_distance_angstrom = (
            None if min_nonbonded_distance_angstrom is None else float(min_nonbonded_distance_angstrom))
        self.bonds = elements.find_bonds(self.atomic_numbers, start, tolerance=bond_tolerance)
        self._i, self._j = self.bonds[:, 0], self.bonds[:, 1]
        self._bond_codes = np.sort(self._i * n + self._j)  # pair (i < j) -> i * n + j
        self.recent_frames: deque[CheckedFrame] = deque(maxlen=max(int(frames_kept), 0))
        self._symbols = elements.symbols(self.atomic_numbers)
        if reference_positions_angstrom is None:
            reference = start[None]
        else:
            reference = np.asarray(reference_positions_angstrom, dtype=np.float64)
            if reference.ndim == 2:
                reference = reference[None]
            if reference.ndim != 3 or reference.shape[1:] != (n, 3) or reference.shape[0] == 0:
                raise InputError(
                    f"reference_positions_angstrom has shape {reference.shape}, expected (n_frames, {n}, 3)")
            if not np.isfinite(reference).all():
                raise InputError("reference_positions_angstrom has non-finite values")
        self.reference_lengths_angstrom = self.bond_lengths(reference).mean(axis=0)

    def bond_lengths(self, positions_angstrom: np.ndarray) -> np.ndarray:
        """Lengths in Å of the monitored bonds: (n_bonds,) for one frame, (n_frames, n_bonds) for many."""
        pos = np.asarray(positions_angstrom, dtype=np.float64)
        d = pos[..., self._j, :] - pos[..., self._i, :]
        return np.sqrt(np.einsum("...k,...k->...", d, d))

    def time_ps(self, step: int) -> float:
        return step * self.timestep_fs * FS_IN_PS

    def event(self, step: int, reason: str, message: str, broken_bond: BrokenBond | None = None,
              n_broken_bonds: int = 0, close_pair: ClosePair | None = None) -> CollapseEvent:
        """A CollapseEvent at `step` (time from the timestep)."""
        return CollapseEvent(step=int(step), time_ps=self.time_ps(step), reason=reason, message=message,
                             broken_bond=broken_bond, n_broken_bonds=n_broken_bonds, close_pair=close_pair)

    def check(self, step: int, positions_angstrom, potential_energy_kj: float | None, temperature_K: float,
              forces_kj_per_mol_nm=None) -> CollapseEvent | None:
        """None while the frame is sound, else the CollapseEvent; the frame joins `recent_frames` either way.

        Checked in this order: positions finite, energy finite (None: not evaluated at this
        step), forces finite (None: not evaluated), bond deviations, non-bonded contacts, temperature.
        """
        pos = np.asarray(positions_angstrom, dtype=np.float64)
        finite = bool(np.isfinite(pos).all())
        deviation = np.abs(self.bond_lengths(pos) - self.reference_lengths_angstrom) if finite and len(self.bonds) else None
        self.recent_frames.append(CheckedFrame(
            step=int(step), positions_angstrom=pos.copy(), temperature_K=float(temperature_K),
            potential_energy_kJ_per_mol=float("nan") if potential_energy_kj is None else float(potential_energy_kj),
            max_bond_deviation_angstrom=float(deviation.max()) if deviation is not None else float("nan")))
        if not finite:
            bad = int(np.argwhere(~np.isfinite(pos))[0][0])
            return self.event(step, NON_FINITE_POSITIONS, f"non-finite position of atom {bad} ({self._symbols[bad]})")
        if potential_energy_kj is not None and not np.isfinite(potential_energy_kj):
            return self.event(step, NON_FINITE_ENERGY, f"potential energy is {potential_energy_kj} kJ/mol")
        if forces_kj_per_mol_nm is not None:
            forces = np.asarray(forces_kj_per_mol_nm, dtype=np.float64)
            if not np.isfinite(forces).all():
                bad = int(np.argwhere(~np.isfinite(forces))[0][0])
                return self.event(step, NON_FINITE_FORCES,
                                  f"non-finite force on atom {bad} ({self._symbols[bad]}): {forces[bad].tolist()} kJ/mol/nm")
        if deviation is not None and (event := self._bond_event(step, pos, deviation)):
            return event
        if self.min_nonbonded_distance_angstrom is not None and (event := self._contact_event(step, pos)):
            return event
        if not np.isfinite(temperature_K) or temperature_K > self.temperature_limit_K:
            return self.event(step, TEMPERATURE,
                              f"temperature {temperature_K:.1f} K exceeds the limit {self.temperature_limit_K:.1f} K")
        return None

    def _bond_event(self, step: int, pos: np.ndarray, deviation: np.ndarray) -> CollapseEvent | None:
        worst = int(np.argmax(deviation))
        if deviation[worst] <= self.bond_deviation_limit_angstrom:
            return None
        i, j = int(self._i[worst]), int(self._j[worst])
        length = float(np.linalg.norm(pos[j] - pos[i]))
        bond = BrokenBond(atoms=(i, j), elements=(self._symbols[i], self._symbols[j]),
                          reference_length_angstrom=float(self.reference_lengths_angstrom[worst]), length_angstrom=length)
        n_broken = int((deviation > self.bond_deviation_limit_angstrom).sum())
        return self.event(
            step, BOND_DEVIATION,
            f"bond {bond.elements[0]}{i}-{bond.elements[1]}{j} is {bond.length_angstrom:.3f} Å long, "
            f"reference {bond.reference_length_angstrom:.3f} Å (limit ±{self.bond_deviation_limit_angstrom} Å); "
            f"{n_broken} bond(s) beyond the limit",
            broken_bond=bond, n_broken_bonds=n_broken)

    def closest_nonbonded_pair(self, positions_angstrom, within_angstrom: float) -> ClosePair | None:
        """The closest pair of atoms that are not bonded, if closer than `within_angstrom` (else None)."""
        pos = np.asarray(positions_angstrom, dtype=np.float64)
        pairs = cKDTree(pos).query_pairs(within_angstrom, output_type="ndarray")
        if len(pairs):
            codes = pairs[:, 0] * len(pos) + pairs[:, 1]
            pairs = pairs[~np.isin(codes, self._bond_codes, assume_unique=False)]
        if not len(pairs):
            return None
        distances = np.linalg.norm(pos[pairs[:, 1]] - pos[pairs[:, 0]], axis=1)
        k = int(np.argmin(distances))
        i, j = int(pairs[k, 0]), int(pairs[k, 1])
        return ClosePair(atoms=(i, j), elements=(self._symbols[i], self._symbols[j]),
                         distance_angstrom=float(distances[k]))

    def _contact_event(self, step: int, pos: np.ndarray) -> CollapseEvent | None:
        pair = self.closest_nonbonded_pair(pos, self.min_nonbonded_distance_angstrom)
        if pair is None:
            return None
        (i, j), (a, b) = pair.atoms, pair.elements
        return self.event(step, NONBONDED_CONTACT,
                          f"atoms {a}{i} and {b}{j} are not bonded but {pair.distance_angstrom:.3f} Å apart "
                          f"(limit {self.min_nonbonded_distance_angstrom} Å)", close_pair=pair)


class CollapseDetected(Exception):
    """Raised by MonitorReporter from inside Simulation.step: the run stops at the collapsed frame."""

    def __init__(self, event: CollapseEvent) -> None:
        super().__init__(event.message)
        self.event = event


class MonitorReporter:
    """The StabilityMonitor as an OpenMM reporter; a collapse raises CollapseDetected.

    Every monitor_interval_steps a cheap check from positions and velocities (no model evaluation); every
    report_interval_steps the full check, with the energy and forces that the reporters due then share. A collapse
    found by a cheap check evaluates the potential energy once, for its frame's record in collapse_frames.
    """

    def __init__(self, monitor: StabilityMonitor, masses_dalton, monitor_interval_steps: int,
                 report_interval_steps: int, atoms=None) -> None:
        self.monitor = monitor
        self.masses_dalton = np.asarray(masses_dalton, dtype=np.float64)
        #: The System's particles that are the monitored molecule (None: all): its bonds, contacts and temperature.
        self.atoms = None if atoms is None else np.asarray(atoms, dtype=np.int64)
        self.degrees_of_freedom = 3 * len(self.masses_dalton)  # no constraints, no centre-of-mass motion removal
        self.monitor_interval_steps = int(monitor_interval_steps)
        self.report_interval_steps = int(report_interval_steps)
        self.last_temperature_K = float("nan")

    def describeNextReport(self, simulation) -> dict:
        step = int(simulation.currentStep)
        steps = self.monitor_interval_steps - step % self.monitor_interval_steps
        full = (step + steps) % self.report_interval_steps == 0
        return {"steps": steps, "periodic": False,
                "include": ["positions", "velocities"] + (["energy", "forces"] if full else [])}

    def report(self, simulation, state) -> None:
        step = int(simulation.currentStep)
        full = step % self.report_interval_steps == 0
        energy = unit.kilojoule_per_mole
        self.observe(step, state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                     state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond),
                     potential=state.getPotentialEnergy().value_in_unit(energy) if full else None,
                     kinetic=state.getKineticEnergy().value_in_unit(energy) if full and self.atoms is None else None,
                     forces=state.getForces(asNumpy=True).value_in_unit(energy / unit.nanometer) if full else None,
                     energy_now=lambda: _potential_energy(simulation.context))

    def observe(self, step: int, positions_nm, velocities_nm_per_ps, *, potential=None, kinetic=None, forces=None,
                energy_now=None) -> None:
        """The check of `step` from arrays in OpenMM units: cheap, or full at report steps (potential and forces
        given; kinetic: the System's kinetic energy, else taken from the velocities). energy_now() gives the
        potential energy when a cheap check finds a collapse. CollapseDetected on a collapse."""
        positions = self._mine(unit.Quantity(np.asarray(positions_nm), unit.nanometer).value_in_unit(unit.angstrom))
        if step % self.report_interval_steps == 0:
            kinetic = kinetic if kinetic is not None else self._kinetic(velocities_nm_per_ps)
            self.last_temperature_K = temperature_K(kinetic, self.degrees_of_freedom)
            # In a solvated run the energy is the whole system's; the forces checked are the molecule's.
            event = self.monitor.check(step, positions, potential, self.last_temperature_K, self._mine(forces))
        else:
            event = self.monitor.check(step, positions, None,
                                       temperature_K(self._kinetic(velocities_nm_per_ps), self.degrees_of_freedom))
            if event is not None and self.monitor.recent_frames and energy_now is not None:
                last = self.monitor.recent_frames.pop()
                self.monitor.recent_frames.append(replace(last, potential_energy_kJ_per_mol=float(energy_now())))
        if event is not None:
            raise CollapseDetected(event)

    def _mine(self, values) -> np.ndarray:
        values = np.asarray(values)
        return values if self.atoms is None else values[self.atoms]

    def _kinetic(self, velocities_nm_per_ps) -> float:
        """The monitored atoms' kinetic energy in kJ/mol."""
        velocities = self._mine(velocities_nm_per_ps)
        return 0.5 * float(np.sum(self.masses_dalton[:, None] * velocities ** 2))


def _potential_energy(context) -> float:
    """The Context's potential energy in kJ/mol now (NaN when OpenMM cannot give it)."""
    try:
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    except openmm.OpenMMException:
        return float("nan")
