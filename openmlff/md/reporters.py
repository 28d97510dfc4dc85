"""What an MD run writes as it goes, as OpenMM reporters: state rows (CSV) and checkpoints; trajectories in
trajectory.py, the stability monitor in monitor.py.

openmlff's writers follow OpenMM's reporter protocol (`describeNextReport(simulation)`, `report(simulation,
state)`), so openmm.app.Simulation calls them on schedule next to the user's own; `report(record)` with a
StepRecord writes one directly. Each writer can reopen its file for a resumed run, dropping what was written
after the checkpoint, so that a resumed run holds every frame and row exactly once, in order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import openmm
from openmm import unit

from ..core.atomic_io import atomic_write_bytes, atomic_write_json
from ..core.errors import InputError
from ..core.units import FS_IN_NS, FS_IN_PS, NM_IN_ANGSTROM, SECONDS_PER_DAY
from .state_table import STATE_COLUMNS, UNCERTAINTY_COLUMN, truncate_csv_rows

if TYPE_CHECKING:
    from .rundir import RunDirectory


@dataclass
class StepRecord:
    """The state of a run at one reported step: positions in nm, energies in kJ/mol, temperature in K.

    speed_ns_per_day: over the steps since the previous report; estimated_time_left_s: the steps
    still to do at this session's average speed (NaN until a step has been timed).
    """

    step: int
    time_ps: float
    positions_nm: np.ndarray
    potential_energy_kJ_per_mol: float
    kinetic_energy_kJ_per_mol: float
    temperature_K: float
    speed_ns_per_day: float
    estimated_time_left_s: float = float("nan")
    #: The committee's force spread per atom (kcal/mol/Å) when the run has one (md/trust.py), else None.
    force_uncertainty_kcal_per_mol_per_A: np.ndarray | None = None
    #: Box vectors (3, 3) in nm as rows in a periodic run, else None.
    box_nm: np.ndarray | None = None

    @property
    def total_energy_kJ_per_mol(self) -> float:
        return self.potential_energy_kJ_per_mol + self.kinetic_energy_kJ_per_mol

    @property
    def positions_angstrom(self) -> np.ndarray:
        return self.positions_nm * NM_IN_ANGSTROM


_KJ_PER_MOL_PER_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def ns_per_day(steps: int, timestep_fs: float, wall_s: float) -> float:
    """Simulation speed: `steps` of `timestep_fs` done in `wall_s` seconds, in ns/day (0 when nothing was timed)."""
    if steps <= 0 or wall_s <= 0:
        return 0.0
    return steps * timestep_fs * FS_IN_NS / (wall_s / SECONDS_PER_DAY)


def temperature_K(kinetic_energy_kJ_per_mol: float, degrees_of_freedom: int) -> float:
    """Instantaneous temperature from the kinetic energy: 2 KE / (n_dof R)."""
    return 2.0 * kinetic_energy_kJ_per_mol / (degrees_of_freedom * _KJ_PER_MOL_PER_K)


class StepRecords:
    """The StepRecord of each reported step of one run, built once from the State OpenMM hands its reporters."""

    def __init__(self, timestep_fs: float, degrees_of_freedom: int, steps_requested: int, start_step: int = 0,
                 periodic: bool = False) -> None:
        self.timestep_fs = float(timestep_fs)
        self.periodic = bool(periodic)  # records carry the box (NPT changes it)
        self.degrees_of_freedom = int(degrees_of_freedom)
        self.steps_requested = int(steps_requested)
        now = time.perf_counter()
        self._last = self._session = (int(start_step), now)
        self._cached: StepRecord | None = None

    def at(self, simulation, state: openmm.State) -> StepRecord:
        """The record of the Simulation's current step from the State OpenMM hands its reporters."""
        step = int(simulation.currentStep)
        if self._cached is not None and self._cached.step == step:
            return self._cached
        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        try:
            potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        except openmm.OpenMMException:  # no energies in this State (no reporter due now asked for them)
            potential = kinetic = float("nan")
        box = (np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
               if self.periodic else None)
        return self.make(step, positions, potential, kinetic, box)

    def make(self, step: int, positions_nm: np.ndarray, potential_kJ_per_mol: float, kinetic_kJ_per_mol: float,
             box_nm: np.ndarray | None = None) -> StepRecord:
        """The record of `step` from arrays (a stepper without a Simulation: md/replicas.py)."""
        if self._cached is not None and self._cached.step == step:
            return self._cached
        now = time.perf_counter()
        (last_step, last_time), (session_step, session_time) = self._last, self._session
        done = step - session_step
        left = (self.steps_requested - step) * (now - session_time) / done if done > 0 else float("nan")
        self._last = (step, now)
        self._cached = StepRecord(step=step, time_ps=step * self.timestep_fs * FS_IN_PS, positions_nm=positions_nm,
                                  potential_energy_kJ_per_mol=potential_kJ_per_mol,
                                  kinetic_energy_kJ_per_mol=kinetic_kJ_per_mol,
                                  temperature_K=temperature_K(kinetic_kJ_per_mol, self.degrees_of_freedom),
                                  speed_ns_per_day=ns_per_day(step - last_step, self.timestep_fs, now - last_time),
                                  estimated_time_left_s=max(left, 0.0), box_nm=box_nm)
        return self._cached


class ScheduledReporter:
    """OpenMM's reporter protocol for openmlff's writers: a report at every multiple of `interval_steps`.

    `records` (a StepRecords, set by the run) turns the State into a StepRecord for `write`. Called by a
    Simulation as report(simulation, state); called directly as report(record).
    """

    interval_steps: int = 1
    include: tuple[str, ...] = ("positions",)
    records: StepRecords | None = None

    def describeNextReport(self, simulation) -> dict:
        steps = self.interval_steps - int(simulation.currentStep) % self.interval_steps
        return {"steps": steps, "periodic": False, "include": list(self.include)}

    def report(self, simulation, state=None) -> None:
        if state is None:
            self.write(simulation)  # a StepRecord given directly
            return
        if self.records is None:
            raise InputError(f"{type(self).__name__}: attach a StepRecords (reporter.records) before the Simulation runs")
        self.take(self.records.at(simulation, state))

    def take(self, record: StepRecord) -> None:
        """Write a record of the run's schedule unless the writer refuses it (`accepts`)."""
        if self.accepts(record):
            self.write(record)

    def accepts(self, record: StepRecord) -> bool:
        """Whether a record from a Simulation is written (all are, unless a writer says otherwise)."""
        return True

    def write(self, record: StepRecord) -> None:
        raise NotImplementedError


# --- state table --------------------------------------------------------------------------------

class FileBacked:
    """flush/close for a writer that keeps one open file in `self._file`."""

    _file = None

    def flush(self, sync: bool = False) -> None:
        """Push what was written to the operating system; with sync, to the disk."""
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class StateCSVReporter(FileBacked, ScheduledReporter):
    """Writes one row of STATE_COLUMNS per report to a CSV file, flushed at once (safe to tail).

    keep_rows=None starts a new file; an integer reopens an existing file cut to its header and first `keep_rows`
    rows (resume). annotate: a committee's TrustReporter.annotate (md/trust.py), which sets the record's force
    uncertainty; its maximum over the atoms is then one more column.
    """

    include = ("positions", "energy")

    def __init__(self, path, keep_rows: int | None = None, interval_steps: int = 1, annotate=None) -> None:
        self.path = Path(path)
        self.interval_steps = int(interval_steps)
        self.annotate = annotate
        self.columns = STATE_COLUMNS + ((UNCERTAINTY_COLUMN,) if annotate is not None else ())
        if keep_rows is not None:
            truncate_csv_rows(self.path, keep_rows, self.columns)
        self._file = open(self.path, "w" if keep_rows is None else "a", newline="")
        self._writer = csv.writer(self._file)
        self.rows_written = keep_rows or 0
        if keep_rows is None:
            self._writer.writerow(self.columns)
            self._file.flush()

    def write(self, record: StepRecord) -> None:
        row = [record.step] + [repr(float(getattr(record, name))) for name in STATE_COLUMNS[1:]]  # StepRecord fields
        if self.annotate is not None:
            self.annotate(record)
            row.append(repr(float(np.max(record.force_uncertainty_kcal_per_mol_per_A))))
        self._writer.writerow(row)
        self._file.flush()
        self.rows_written += 1


# --- checkpoints --------------------------------------------------------------------------------

class Checkpointer:
    """Atomic checkpoints of an OpenMM Context in a run directory.

    `save` writes context.createCheckpoint() to a file named after the step, then commits by replacing
    checkpoint.json (that file's name and SHA-256, the caller's step, frames and rows written) and removes older
    files. A kill at any moment, or a full disk (its OSError goes to the caller), leaves the previous commit intact.
    """

    def __init__(self, run: RunDirectory) -> None:
        self.run = run
        self.directory = run.directory
        self.json_path = run.checkpoint_json

    def save(self, context: openmm.Context, step: int, info: dict) -> None:
        data = context.createCheckpoint()
        path = self.run.checkpoint_file(step)
        atomic_write_bytes(path, data)
        document = {"step": int(step), **info, "checkpoint_file": path.name,
                    "checkpoint_sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_json(self.json_path, document)
        for old in self.run.checkpoint_files():
            if old.name != path.name:
                old.unlink(missing_ok=True)

    def exists(self) -> bool:
        return self.json_path.is_file()

    def restore(self, context: openmm.Context, warmup_evaluations: int,
                loaded: tuple[dict, bytes] | None = None) -> dict:
        """Load the committed checkpoint into `context`, evaluate the model `warmup_evaluations` times (so that a
        resumed run steps as the uninterrupted one did) and return the checkpoint's document. loaded: what `load`
        returned, when the caller read the checkpoint already (a batch reads it to build its Context)."""
        document, data = loaded if loaded is not None else self.load()
        context.loadCheckpoint(data)
        warm_up(context, warmup_evaluations)
        if context.getStepCount() != int(document["step"]):
            raise InputError(f"{self.json_path}: records step {document['step']}, "
                             f"the OpenMM checkpoint step {context.getStepCount()}")
        return document

    def load(self) -> tuple[dict, bytes]:
        """The committed checkpoint: (its JSON document, the OpenMM checkpoint bytes); ValueError if corrupt."""
        document = json.loads(self.json_path.read_text())
        chk = self.directory / document["checkpoint_file"]
        if not chk.is_file():
            raise InputError(f"{self.json_path}: names {chk.name}, which does not exist")
        data = chk.read_bytes()
        if hashlib.sha256(data).hexdigest() != document["checkpoint_sha256"]:
            raise InputError(f"{chk}: SHA-256 differs from the one recorded in {self.json_path}")
        return document, data


def warm_up(context: openmm.Context, evaluations: int) -> None:
    """Evaluate the model `evaluations` times (read-only) in a new Context before it steps.

    TorchScript's profiling executor runs a model's first calls through another graph than the later ones, and
    their forces differ in the last bits; a resumed run whose first step used such a call would drift from the
    uninterrupted run (visible ~100 steps later). Potential.warmup_evaluations says how many (2 for a model file).
    """
    for _ in range(int(evaluations)):
        context.getState(getEnergy=True, getForces=True)
