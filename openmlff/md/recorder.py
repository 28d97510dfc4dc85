"""One run's files and watch: what a run writes and checks, whichever stepper drives it (docs/architecture.md
"MD run directory").

A RunRecorder owns a run directory's writers (trajectory, state.csv, the committee's trust files, an on_report
callback), its stability monitor, the frames kept before a collapse and the summary. Two steppers drive one:
md/runner.py's lone run on an openmm.app.Simulation (the recorder's reporters go to simulation.reporters) and
md/replicas.py's batch, one Context of N copies with a recorder each (`observe` with each copy's arrays). Both
commit checkpoints with the recorder's `marks` and resume with its `restore`, so a copy of a batch and a lone
run write the same files the same way.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..core import elements
from ..core.errors import InputError
from ..core.units import NM_IN_ANGSTROM
from ..core.versions import utc_now
from .config import SimulationConfig
from .monitor import CollapseDetected, CollapseEvent, MonitorReporter, StabilityMonitor
from .reporters import ScheduledReporter, StateCSVReporter, StepRecord, StepRecords, ns_per_day
from .rundir import RunDirectory, RunSummary
from .trajectory import DCDTrajectoryWriter, TrajectoryMark, open_trajectory
from .trust import TrustReporter, TrustSettings, UntrustedStop

if TYPE_CHECKING:
    import openmm.app


class RunRecorder:
    """The files and the watch of one run: open (or reopen at a checkpoint), record each report, check, finish.

    structure: the molecule's start (its topology names the atoms of collapse_frames.dcd); system_structure: what
    topology.pdb and the trajectory hold (the whole box of a solvated run; default the molecule); atoms: the
    System's particles that are the molecule (None: all), which the monitor watches; degrees_of_freedom: of the
    System, for state.csv's temperature (default: the molecule's 3N).
    """

    def __init__(self, config: SimulationConfig, paths: RunDirectory, zs, start_angstrom, reference, structure, *,
                 system_structure=None, atoms=None, degrees_of_freedom: int | None = None,
                 trust: TrustSettings | None = None, on_report: Callable[[StepRecord], None] | None = None) -> None:
        self.config = config
        self.paths = paths
        self.structure = structure
        self.system_structure = system_structure if system_structure is not None else structure
        self.on_report = on_report
        self.periodic = atoms is not None
        self.monitor = StabilityMonitor(
            zs, start_angstrom, config.timestep_fs, reference_positions_angstrom=reference,
            bond_deviation_limit_angstrom=config.bond_deviation_limit_angstrom,
            temperature_limit_K=config.resolved_temperature_limit_K,
            min_nonbonded_distance_angstrom=config.min_nonbonded_distance_angstrom,
            frames_kept=config.collapse_frames_kept)
        self.watch = MonitorReporter(self.monitor, elements.masses(zs), config.monitor_interval_steps,
                                     config.report_interval_steps, atoms=atoms)
        self.degrees_of_freedom = (self.watch.degrees_of_freedom if degrees_of_freedom is None
                                   else int(degrees_of_freedom))
        self.trust = None if trust is None else TrustReporter(trust, zs, config.report_interval_steps, config.timestep_fs)
        self.trajectory = None
        self.states: StateCSVReporter | None = None
        self.records: StepRecords | None = None
        self.md_wall_before_s = 0.0  # MD time (stepping, reporting, checkpoints) of earlier sessions' kept steps
        self.session_t0 = time.perf_counter()
        self.resumed_from_step: int | None = None

    # -- open -------------------------------------------------------------------------------------

    def open(self, step: int = 0, resume_at: TrajectoryMark | None = None, state_rows: int | None = None) -> None:
        """The writers from `step`: new files at 0, or the files cut back to a checkpoint's marks."""
        cfg = self.config
        self.records = StepRecords(cfg.timestep_fs, self.degrees_of_freedom, cfg.steps, start_step=step,
                                   periodic=self.periodic)
        self.trajectory = open_trajectory(cfg.trajectory_format, self.paths.trajectory, self.system_structure.topology,
                                          cfg.timestep_fs, cfg.report_interval_steps, resume_at=resume_at)
        self.states = StateCSVReporter(self.paths.state_csv, keep_rows=state_rows,
                                       interval_steps=cfg.report_interval_steps,
                                       annotate=None if self.trust is None else self.trust.annotate)
        self.trajectory.records = self.states.records = self.records
        if self.trust is not None:
            self.trust.records = self.records

    def start(self) -> None:
        """A new run: topology.pdb, then the writers from step 0."""
        from ..structures import structure_to_pdb

        structure_to_pdb(self.system_structure, self.paths.topology_pdb)
        self.open(0)

    def restore(self, document: dict, marks: dict | None = None) -> None:
        """Reopen at a checkpoint: `document` is the checkpoint's (step, MD wall time), `marks` this run's entry
        in it (frames and rows written; default the document itself)."""
        marks = document if marks is None else marks
        step = int(document["step"])
        self.open(step, TrajectoryMark(int(marks["frames_written"]), marks.get("trajectory_bytes")),
                  int(marks["state_rows_written"]))
        self.md_wall_before_s = float(document.get("md_wall_time_s", 0.0))
        self.resumed_from_step = step
        if self.trust is not None:
            self.trust.restore(self.paths.directory, step)

    # -- record and check -------------------------------------------------------------------------

    def recorders(self) -> list:
        """The reporters that write each report, in order: trajectory, state.csv, trust, the on_report callback."""
        recorders = [self.trajectory, self.states] + ([self.trust] if self.trust is not None else [])
        if self.on_report is not None:
            recorders.append(_CallbackReporter(self.on_report, self.config.report_interval_steps, self.records))
        return recorders

    def observe(self, step: int, positions_nm, velocities_nm_per_ps, *, potential=None, kinetic=None, forces=None,
                energy_now=None, report: bool, check: bool) -> CollapseEvent | None:
        """One step of a stepper without a Simulation, in OpenMM units: written when `report` (potential, kinetic
        and forces given), checked when `check` (MonitorReporter.observe); the collapse found, or None."""
        if report:
            record = self.records.make(step, positions_nm, potential, kinetic)
            for recorder in self.recorders():
                recorder.take(record)
        if check:
            try:
                self.watch.observe(step, positions_nm, velocities_nm_per_ps, potential=potential if report else None,
                                   kinetic=kinetic if report else None, forces=forces if report else None,
                                   energy_now=energy_now)
            except CollapseDetected as collapse:
                return collapse.event
        return None

    def report_start(self, simulation, state) -> CollapseEvent | None:
        """Step 0, which a Simulation does not report: the frame, the state row and the full check."""
        try:
            for reporter in self.recorders() + [self.watch]:
                reporter.report(simulation, state)
        except CollapseDetected as collapse:
            return collapse.event
        except UntrustedStop:
            pass  # the trust reporter remembers the stop; nothing to step
        return None

    # -- checkpoints ------------------------------------------------------------------------------

    def marks(self) -> dict:
        """What a checkpoint records of this run: its files synced to disk, frames and rows written."""
        self.trajectory.flush(sync=True)
        self.states.flush(sync=True)
        mark = self.trajectory.mark()
        return {"frames_written": mark.frames, "trajectory_bytes": mark.bytes,
                "state_rows_written": self.states.rows_written}

    def committed(self) -> None:
        """After a checkpoint's commit: the trust state that goes with it."""
        if self.trust is not None:
            self.trust.save(self.paths.directory)

    def md_wall_s(self) -> float:
        return self.md_wall_before_s + time.perf_counter() - self.session_t0

    # -- the end ----------------------------------------------------------------------------------

    def finish(self, step: int, event: CollapseEvent | None, *, session_start_step: int, setup_s: float,
               md_wall_s: float, platform: str) -> RunSummary:
        """Write summary.json (and collapse_frames.dcd after a collapse) and close the files."""
        cfg = self.config
        collapse = event.to_dict() if event is not None else {}
        summary = RunSummary(
            stable=event is None,
            steps_completed=int(step),
            steps_requested=int(cfg.steps),
            simulated_time_ps=self.monitor.time_ps(step),
            collapse_step=collapse.get("step"),
            collapse_time_ps=collapse.get("time_ps"),
            collapse_reason=collapse.get("reason"),
            collapse_message=collapse.get("message"),
            first_broken_bond=collapse.get("broken_bond"),
            n_broken_bonds=collapse.get("n_broken_bonds", 0),
            closest_nonbonded_pair=collapse.get("close_pair"),
            collapse_frames=self._write_collapse_frames() if event is not None else None,
            frames_written=self.trajectory.frames_written,
            state_rows_written=self.states.rows_written,
            trajectory=self.paths.trajectory.name,
            ns_per_day=ns_per_day(step, cfg.timestep_fs, md_wall_s) if step > 0 else None,
            wall_time_s=md_wall_s,
            setup_time_s=setup_s,
            platform=platform,
            backend=cfg.backend,
            integrator=cfg.integrator,
            resumed_from_step=self.resumed_from_step,
            steps_this_session=int(step - session_start_step),
            bonds_monitored=int(len(self.monitor.bonds)),
            minimization=json.loads(self.paths.run_json.read_text()).get("minimization"),
            finished_at=utc_now(),
            **(self.trust.summary() if self.trust is not None else {}),
        )
        self.committed()
        self.trajectory.flush(sync=True)
        self.trajectory.finish()
        self.states.flush(sync=True)
        summary.to_json(self.paths.summary_json)
        return summary

    def _write_collapse_frames(self) -> dict | None:
        """The monitor's last checked frames as collapse_frames.dcd (finite ones), with their steps and values."""
        frames = [f for f in self.monitor.recent_frames if np.isfinite(f.positions_angstrom).all()]
        if not frames:
            return None
        writer = DCDTrajectoryWriter(self.paths.collapse_frames, self.structure.topology, self.config.timestep_fs,
                                     self.config.monitor_interval_steps, first_step=frames[0].step)
        try:
            for f in frames:
                writer.write(StepRecord(step=f.step, time_ps=self.monitor.time_ps(f.step),
                                        positions_nm=f.positions_angstrom / NM_IN_ANGSTROM,
                                        potential_energy_kJ_per_mol=f.potential_energy_kJ_per_mol,
                                        kinetic_energy_kJ_per_mol=0.0, temperature_K=f.temperature_K,
                                        speed_ns_per_day=0.0))
            writer.flush(sync=True)
        finally:
            writer.close()
        return {"file": self.paths.collapse_frames.name, "topology": self.paths.topology_pdb.name,
                **({"atoms": "the molecule's (environment.ml_atoms of the topology)"} if self.periodic else {}),
                "steps": [f.step for f in frames],
                "temperature_K": [_finite_or_none(f.temperature_K) for f in frames],
                "potential_energy_kJ_per_mol": [_finite_or_none(f.potential_energy_kJ_per_mol) for f in frames],
                "max_bond_deviation_angstrom": [_finite_or_none(f.max_bond_deviation_angstrom) for f in frames]}

    def close(self) -> None:
        for writer in (self.trajectory, self.states):
            if writer is not None:
                writer.close()


def structure_for_run(zs: np.ndarray, start_angstrom: np.ndarray, topology: openmm.app.Topology | None):
    """An openmlff.structures.Structure of the run's start: the given topology, or one built from the atoms."""
    from ..structures.builtin import Structure, structure_from_atoms

    if topology is None:
        return structure_from_atoms("molecule", zs, start_angstrom)
    atoms = list(topology.atoms())
    missing = [a.index for a in atoms if a.element is None]
    if missing:
        raise InputError(f"the topology's atoms {missing[:5]} have no element")
    if len(atoms) != len(zs) or any(a.element.atomic_number != z for a, z in zip(atoms, zs)):
        raise InputError("the topology's atoms (elements) do not match atomic_numbers")
    return Structure(name="molecule", atomic_numbers=zs, positions_angstrom=start_angstrom, topology=topology)


class _CallbackReporter(ScheduledReporter):
    """run_simulation's on_report: the callback gets each report's StepRecord."""

    include = ("positions", "energy")

    def __init__(self, callback: Callable[[StepRecord], None], interval_steps: int, records: StepRecords) -> None:
        self.callback = callback
        self.interval_steps = int(interval_steps)
        self.records = records

    def write(self, record: StepRecord) -> None:
        self.callback(record)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
