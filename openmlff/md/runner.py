"""Production MD with a potential (an exported model, a classical force field or a reference method) in OpenMM,
watched by the stability monitor, written to a run directory that can be resumed after any interruption (docs/architecture.md "MD run directory").

The run directory holds:
  run.json          every input (model SHA-256, atoms, starting positions, config), versions, platform and
                    its properties, TorchForce properties, integrator, minimisation, history of extensions
  topology.pdb      the topology with the starting positions (CONECT records for bonds)
  trajectory.dcd    (or .xtc, .h5) frame k = state.csv row k = step k * report_interval_steps, from step 0
                    (a collapse found between two reports is in collapse_frames.dcd, not here); an HDF5
                    trajectory is written when the run ends, its frames are in trajectory_partial.dcd until then
  state.csv         step, time, energies (kJ/mol), temperature (K), speed (ns/day), estimated time left (s)
  checkpoint.json   + checkpoint_step*.chk: the last committed OpenMM checkpoint (atomic)
  summary.json      written when the run ends: stable or not, collapse step/time/reason/bond, ns/day
  collapse_frames.dcd  after a collapse: the last checked frames up to it (every monitor_interval_steps),
                    the collapsed frame last when its positions are finite; steps listed in summary.json

Calling run_simulation again on the same directory resumes from the checkpoint, or returns the
summary of a finished run. It refuses when an input recorded in run.json has changed, naming it;
only `torch_threads` may change, and `steps` may grow, which extends a finished or unfinished run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import openmm
import openmm.app as app
from openmm import unit

from .. import elements
from ..atomic_io import atomic_write_json
from ..errors import InputError
from ..threads import set_threads
from ..units import FS_IN_PS, NM_IN_ANGSTROM
from . import monitor as _monitor
from .config import SimulationConfig
from .environment import (
    Environment, build_environment_system, check_box_for_cutoff, degrees_of_freedom, prepare_environment,
    save_solvated_start, platform_properties as platform_properties_for,
)
from .integrators import make_integrator
from .monitor import CollapseDetected, CollapseEvent, MonitorReporter, StabilityMonitor
from .platforms import select_platform
from .reporters import Checkpointer, ScheduledReporter, StateCSVReporter, StepRecord, StepRecords, ns_per_day
from ..resume import ResumeMismatchError
from .rundir import RunDirectory, RunSummary, check_same_inputs, record_extension, run_record
from ..potentials import Potential, get_potential
from .trajectory import DCDTrajectoryWriter, TrajectoryMark, open_trajectory
from .trust import TrustReporter, TrustSettings, UntrustedStop
from ..versions import utc_now

#: Model evaluations in every new Context before it steps (Potential.warmup_evaluations; 2 for an exported model).
#: TorchScript's profiling executor runs a model's first call through another graph than the later ones, and its
#: forces differ from theirs in the last bits; a resumed run whose first step used that call would drift from the
#: uninterrupted run (visible ~100 steps later).
MODEL_WARMUP_EVALUATIONS = 2


def read_run_summary(out_dir) -> RunSummary | None:
    """summary.json of a run directory, or None while the run has not ended."""
    return RunDirectory(out_dir).read_summary()


def run_simulation(
    model: "str | Path | Potential",
    atomic_numbers,
    positions_angstrom,
    out_dir,
    config: SimulationConfig | None = None,
    topology: app.Topology | None = None,
    reference_positions_angstrom=None,
    progress: bool = True,
    on_report: Callable[[StepRecord], None] | None = None,
    reporters: list | None = None,
    trust: TrustSettings | None = None,
    start_name: str = "structure",
) -> RunSummary:
    """Run (or resume, or extend) MD of one molecule with a potential; returns its RunSummary.

    model: an exported model file, a potential name ('amber14', 'gaff-2.11', 'gfn2-xtb', 'dft'; see
    openmlff.potentials) or a Potential.

    positions_angstrom (n_atoms, 3): the starting structure, also where the monitor finds bonds;
    reference_positions_angstrom (n_frames, n_atoms, 3): frames whose mean bond lengths the monitor
    compares with (default: the starting structure). topology: written as topology.pdb (default:
    one residue, bonds from covalent radii). on_report: called with each StepRecord after it is
    written. reporters: OpenMM reporters of your own (e.g. openmm.app.StateDataReporter), called by the
    openmm.app.Simulation on their own schedule (after openmlff's writers, before the stability monitor);
    they see only this session's steps, from the checkpoint on when the run resumes. The monitor stops a
    collapsed run at once. trust: a committee evaluated at each report (md/trust.py: state.csv's
    uncertainty column, untrusted frames, an optional stop). start_name: what errors call the start (the
    structure file it came from). See the module docstring for the files and the resume rules.

    Summary (RunSummary, also a mapping with the keys of summary.json): stable, steps_completed, steps_requested, simulated_time_ps, collapse_step,
    collapse_time_ps, collapse_reason, collapse_message, first_broken_bond (atoms, elements,
    reference/current length and deviation in Å), n_broken_bonds, closest_nonbonded_pair (atoms,
    elements, distance in Å; reason 'nonbonded_contact'), collapse_frames (file, steps, temperatures,
    energies, largest bond deviations of the frames kept), frames_written, state_rows_written,
    ns_per_day and wall_time_s (MD wall time behind the kept steps, summed over sessions: setup and
    work lost to an interruption excluded), setup_time_s, platform, backend, integrator,
    resumed_from_step, steps_this_session, bonds_monitored, minimization.
    """
    config = config or SimulationConfig()
    paths = RunDirectory(Path(out_dir), config.trajectory_format)
    zs = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    elements.check_atomic_numbers(zs)
    start_angstrom = np.asarray(positions_angstrom, dtype=np.float64)
    if start_angstrom.shape != (len(zs), 3) or not np.isfinite(start_angstrom).all():
        raise InputError(f"positions_angstrom must be a finite ({len(zs)}, 3) array for {len(zs)} atoms, "
                         f"got shape {start_angstrom.shape}")
    reference = None if reference_positions_angstrom is None else np.asarray(reference_positions_angstrom, dtype=np.float64)
    potential = get_potential(model)
    structure = _structure_for_run(
        zs, start_angstrom, topology if topology is not None else potential.topology(zs, start_angstrom))
    environment = prepare_environment(structure, config, where=_where(topology), saved=paths.solvated_start)
    if environment.kind != "vacuum":
        _check_environment_options(environment, config, trust)
        check_box_for_cutoff(environment, config)
        zs, start_angstrom = environment.atomic_numbers[environment.ml_atoms], \
            environment.positions_angstrom[environment.ml_atoms]
        structure = _structure_for_run(zs, start_angstrom, _subset_topology(environment))
    potential.check_atoms(zs, where=start_name)
    platform, platform_properties = select_platform(config.platform, config.platform_precision)
    platform_properties = platform_properties_for(platform, platform_properties, environment)
    record = run_record(potential.record(zs, start_angstrom, structure.topology), zs, start_angstrom, reference, config,
                        platform.getName(), platform_properties)
    if trust is not None:
        record["trust"] = trust.record(zs, start_angstrom)
    if environment.kind != "vacuum":
        record["environment"] = environment.record(config)

    paths.directory.mkdir(parents=True, exist_ok=True)
    with paths.lock():  # one writer per run directory: a second simulate or campaign worker is refused here
        try:
            return _resume_or_run(paths, record, config, platform, platform_properties, potential, zs, start_angstrom,
                                  reference, structure, progress, on_report, reporters, trust, environment)
        except OSError as exc:
            if exc.filename is None:  # a buffered write of a trajectory or CSV failed (a full disk): name the run
                raise OSError(exc.errno, exc.strerror or str(exc), str(paths.directory)) from exc
            raise


def _resume_or_run(paths: RunDirectory, record: dict, config: SimulationConfig, platform, platform_properties: dict,
                   potential: Potential, zs, start_angstrom, reference, structure, progress: bool, on_report,
                   reporters, trust: TrustSettings | None, environment: Environment) -> RunSummary:
    """run_simulation's work once the run directory's lock is held."""
    if paths.run_json.is_file():
        recorded = json.loads(paths.run_json.read_text())
        check_same_inputs(paths.run_json, recorded, record)
        summary = read_run_summary(paths.directory)
        if summary is not None and (summary.collapsed or summary.stopped_untrusted):
            return summary  # a collapsed (or stopped untrusted) run is over, whatever its length
        if config.steps > recorded["config"]["steps"]:
            record_extension(paths, recorded, config.steps)
            summary = None
        if summary is not None and summary.steps_completed >= config.steps:
            return summary
    elif paths.checkpoint_json.is_file() or paths.summary_json.is_file():
        raise ResumeMismatchError(
            f"{paths.directory}: holds a checkpoint or summary but no run.json, so its inputs cannot be "
            "checked; use a new output directory")

    set_threads(config.torch_threads, atoms_per_call=len(zs))
    setup_start = time.perf_counter()
    if environment.kind == "vacuum":
        system = potential.build_system(zs, start_angstrom, backend=config.backend,
                                        torch_properties=config.torch_properties, topology=structure.topology)
    else:
        system = build_environment_system(potential, environment, config)
    integrator = make_integrator(config.integrator, config.temperature_K, config.friction_per_ps, config.timestep_fs,
                                 config.openmm_seed)
    simulation = app.Simulation(environment.topology, system, integrator, platform, platform_properties)
    record["platform"]["properties_in_effect"] = {
        name: platform.getPropertyValue(simulation.context, name) for name in platform.getPropertyNames()}
    record["torchforce_properties"] = _force_properties(system)
    if not paths.run_json.is_file():
        if environment.solvent_relaxation is not None:
            save_solvated_start(paths.solvated_start, environment)  # before run.json: a run never lacks its start
        atomic_write_json(paths.run_json, record)

    run = _Run(config, simulation, paths, zs, start_angstrom, reference, structure, on_report, reporters, trust,
               warmup_evaluations=potential.warmup_evaluations, environment=environment)
    try:
        return run.execute(progress, setup_s=time.perf_counter() - setup_start)
    finally:
        run.close()


def minimize(context: openmm.Context, start_angstrom: np.ndarray, run_json: Path) -> None:
    """LocalEnergyMinimizer from the starting positions; energies and displacement recorded in run.json."""
    before = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    t0 = time.perf_counter()
    openmm.LocalEnergyMinimizer.minimize(context)
    state = context.getState(getEnergy=True, getPositions=True)
    moved = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom) - start_angstrom
    minimization = {
        "potential_energy_before_kJ_per_mol": before,
        "potential_energy_after_kJ_per_mol": state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
        "rms_displacement_angstrom": float(np.sqrt((moved ** 2).sum(axis=1).mean())),
        "max_displacement_angstrom": float(np.linalg.norm(moved, axis=1).max()),
        "tolerance_kJ_per_mol_per_nm": 10.0,  # LocalEnergyMinimizer's default
        "wall_time_s": time.perf_counter() - t0,
    }
    recorded = json.loads(run_json.read_text())
    recorded["minimization"] = minimization
    atomic_write_json(run_json, recorded)


def _where(topology) -> str:
    return "structure" if topology is None else "the structure's topology"


def _check_environment_options(environment: Environment, config: SimulationConfig, trust) -> None:
    """Options that periodic and solvated runs do not have (yet)."""
    if trust is not None:
        raise InputError("--committee (trust) is not available in periodic or solvated runs; run the molecule in vacuum")
    if config.trajectory_format == "hdf5":
        raise InputError("trajectory_format hdf5 keeps no box; periodic and solvated runs write dcd or xtc")


def _subset_topology(environment: Environment) -> app.Topology:
    """A Topology of the molecule alone (the ML atoms; no box): collapse frames and the monitor's bonds use it."""
    import mdtraj

    full = mdtraj.Topology.from_openmm(environment.topology)
    topology = full.subset(environment.ml_atoms.tolist()).to_openmm()
    topology.setPeriodicBoxVectors(None)
    return topology


def _structure_for_run(zs: np.ndarray, start_angstrom: np.ndarray, topology: app.Topology | None):
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


def _force_properties(system: openmm.System) -> dict[str, str] | None:
    """The TorchForce properties as the force in the System reports them (None without a TorchForce)."""
    from .._compat import import_openmmtorch

    torch_force_class = import_openmmtorch().TorchForce
    for force in system.getForces():
        if torch_force_class.isinstance(force):
            return dict(torch_force_class.cast(force).getProperties())
    return None


class _Run:
    """One session of a run on an openmm.app.Simulation: sets up or restores the state and the reporters
    (trajectory, state CSV, the caller's, the stability monitor, checkpoints), steps, and writes the summary."""

    def __init__(self, config: SimulationConfig, simulation: app.Simulation, paths: RunDirectory, zs, start_angstrom,
                 reference, structure, on_report, reporters, trust: TrustSettings | None = None,
                 warmup_evaluations: int = MODEL_WARMUP_EVALUATIONS, environment: Environment | None = None):
        self.config = config
        self.warmup_evaluations = int(warmup_evaluations)
        self.trust = None if trust is None else TrustReporter(trust, zs, config.report_interval_steps, config.timestep_fs)
        self.simulation = simulation
        self.context = simulation.context
        self.paths = paths
        self.structure = structure
        self.start_angstrom = start_angstrom
        self.on_report = on_report
        self.user_reporters = list(reporters or [])
        self.monitor = StabilityMonitor(
            zs, start_angstrom, config.timestep_fs, reference_positions_angstrom=reference,
            bond_deviation_limit_angstrom=config.bond_deviation_limit_angstrom,
            temperature_limit_K=config.resolved_temperature_limit_K,
            min_nonbonded_distance_angstrom=config.min_nonbonded_distance_angstrom,
            frames_kept=config.collapse_frames_kept)
        vacuum = environment is None or environment.kind == "vacuum"
        #: The whole system (topology.pdb, the trajectory); the monitor sees the molecule (environment.ml_atoms).
        self.system_structure = structure if vacuum else environment.structure()
        self.watch = MonitorReporter(self.monitor, elements.masses(zs), config.monitor_interval_steps,
                                     config.report_interval_steps, atoms=None if vacuum else environment.ml_atoms)
        self.degrees_of_freedom = (self.watch.degrees_of_freedom if vacuum
                                   else degrees_of_freedom(simulation.system))
        self.periodic = not vacuum
        self.checkpointer = Checkpointer(paths)
        self.trajectory = None
        self.states: StateCSVReporter | None = None
        self.records: StepRecords | None = None
        self.md_wall_before_s = 0.0  # MD time (stepping, reporting, checkpoints) of earlier sessions' kept steps
        self._session_t0 = time.perf_counter()
        self._last_checkpoint_time = time.perf_counter()  # wall clock of the last checkpoint (checkpoint_interval_s)
        self.resumed_from_step: int | None = None

    def md_wall_s(self) -> float:
        return self.md_wall_before_s + time.perf_counter() - self._session_t0

    # -- start or restore -------------------------------------------------------------------------

    def _open_writers(self, step: int, resume_at: TrajectoryMark | None, state_rows: int | None) -> None:
        cfg = self.config
        self.records = StepRecords(cfg.timestep_fs, self.degrees_of_freedom, cfg.steps, start_step=step,
                                   periodic=self.periodic)
        self.trajectory = open_trajectory(cfg.trajectory_format, self.paths.trajectory, self.system_structure.topology,
                                          cfg.timestep_fs, cfg.report_interval_steps, resume_at=resume_at)
        self.states = StateCSVReporter(self.paths.state_csv, keep_rows=state_rows, interval_steps=cfg.report_interval_steps,
                                       annotate=None if self.trust is None else self.trust.annotate)
        self.trajectory.records = self.states.records = self.records
        if self.trust is not None:
            self.trust.records = self.records

    def _start_fresh(self) -> CollapseEvent | None:
        from ..structures import structure_to_pdb

        cfg = self.config
        structure_to_pdb(self.system_structure, self.paths.topology_pdb)
        self.context.setPositions(self.system_structure.positions_angstrom / NM_IN_ANGSTROM)
        self._warm_up_model()
        if cfg.minimize:
            self._minimize()
        self.context.setVelocitiesToTemperature(cfg.temperature_K * unit.kelvin, cfg.openmm_seed)
        if self.simulation.system.getNumConstraints():  # rigid water: no velocity along a constraint at step 0
            self.context.applyVelocityConstraints(1e-6)
        self.context.setStepCount(0)
        self.context.setTime(0.0)
        self._open_writers(0, None, None)
        event = self._report_start()
        if event is None:
            self._checkpoint(0)
        return event

    def _report_start(self) -> CollapseEvent | None:
        """Step 0, which a Simulation does not report: the frame, the state row and the full check."""
        state = self.context.getState(getPositions=True, getVelocities=True, getEnergy=True, getForces=True)
        try:
            for reporter in self._recorders() + [self.watch]:
                reporter.report(self.simulation, state)
        except CollapseDetected as collapse:
            return collapse.event
        except UntrustedStop:
            return None  # the trust reporter remembers the stop; nothing to step
        return None

    def _warm_up_model(self) -> None:
        """Evaluate the model `warmup_evaluations` times (read-only), so that fresh and resumed runs step alike."""
        for _ in range(self.warmup_evaluations):
            self.context.getState(getEnergy=True, getForces=True)

    def _minimize(self) -> None:
        minimize(self.context, self.system_structure.positions_angstrom, self.paths.run_json)

    def _restore(self) -> int:
        document, data = self.checkpointer.load()
        self.context.loadCheckpoint(data)
        self._warm_up_model()
        step = int(document["step"])
        if self.context.getStepCount() != step:
            raise InputError(f"{self.checkpointer.json_path}: records step {step}, "
                             f"the OpenMM checkpoint step {self.context.getStepCount()}")
        self._open_writers(step, TrajectoryMark(int(document["frames_written"]), document.get("trajectory_bytes")),
                           int(document["state_rows_written"]))
        self.md_wall_before_s = float(document.get("md_wall_time_s", 0.0))
        self.resumed_from_step = step
        if self.trust is not None:
            self.trust.restore(self.paths.directory, step)
        return step

    # -- the loop ---------------------------------------------------------------------------------

    def _recorders(self) -> list:
        """The reporters that write each report: trajectory, state CSV, the on_report callback."""
        recorders = [self.trajectory, self.states] + ([self.trust] if self.trust is not None else [])
        if self.on_report is not None:
            recorders.append(_CallbackReporter(self.on_report, self.config.report_interval_steps, self.records))
        return recorders

    def execute(self, progress: bool, setup_s: float) -> RunSummary:
        from tqdm.auto import tqdm

        cfg = self.config
        self._session_t0 = time.perf_counter()
        if self.checkpointer.exists():
            step, event = self._restore(), None
        else:
            step, event = 0, self._start_fresh()
        session_start_step = step
        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="MD", disable=not progress, dynamic_ncols=True)
        # Called in this order at a step where several are due: writers first, so the frame of a collapse is
        # written; the caller's; then the monitor, whose CollapseDetected stops the Simulation before a checkpoint.
        # OpenMM calls reporters that want no positions (or wrapped ones) in other groups, before or after the rest;
        # every reporter here asks for unwrapped positions (which the due reporters fetch anyway) to keep this order.
        self.simulation.reporters = [_InOrder(r) for r in (
            *self._recorders(), *self.user_reporters, self.watch, _CheckpointReporter(self),
            _ProgressReporter(bar, cfg.report_interval_steps, self.watch))]
        stopped = self.trust is not None and self.trust.stop_step is not None
        try:
            if event is None and step < cfg.steps and not stopped:
                try:
                    self.simulation.step(cfg.steps - step)
                except CollapseDetected as collapse:
                    event = collapse.event
                except UntrustedStop:
                    pass  # the run ends here, at its first untrusted report
                except openmm.OpenMMException as exc:
                    event = self.monitor.event(self.context.getStepCount(), _monitor.SIMULATION_ERROR, str(exc).strip())
        finally:
            bar.close()
            self.simulation.reporters = []
        md_wall_s = self.md_wall_s()
        step = event.step if event is not None else int(self.simulation.currentStep)
        if self.trust is not None and self.trust.stop_step is not None:
            step = self.trust.stop_step
        return self._finish(step, event, session_start_step, setup_s, md_wall_s)

    def _checkpoint(self, step: int) -> None:
        self.trajectory.flush(sync=True)
        self.states.flush(sync=True)
        mark = self.trajectory.mark()
        self.checkpointer.save(self.context, step, {
            "time_ps": self.monitor.time_ps(step),
            "frames_written": mark.frames,
            "trajectory_bytes": mark.bytes,
            "state_rows_written": self.states.rows_written,
            "md_wall_time_s": self.md_wall_s(),
        })
        if self.trust is not None:
            self.trust.save(self.paths.directory)
        if self.periodic:
            # OpenMM's CPU platform sums periodic forces in an order that depends on the Context's history, so a
            # Context restored from this checkpoint would drift from this one in the last bits: continue as a
            # resumed session would, from a re-initialised Context (and the model's warm-up calls).
            self.context.reinitialize(preserveState=True)
            self._warm_up_model()
        self._last_checkpoint_time = time.perf_counter()

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
                                        potential_energy_kJ_per_mol=f.potential_energy_kJ_per_mol, kinetic_energy_kJ_per_mol=0.0,
                                        temperature_K=f.temperature_K, speed_ns_per_day=0.0))
            writer.flush(sync=True)
        finally:
            writer.close()
        return {"file": self.paths.collapse_frames.name, "topology": self.paths.topology_pdb.name,
                **({"atoms": "the molecule's (environment.ml_atoms of the topology)"} if self.periodic else {}),
                "steps": [f.step for f in frames],
                "temperature_K": [_finite_or_none(f.temperature_K) for f in frames],
                "potential_energy_kJ_per_mol": [_finite_or_none(f.potential_energy_kJ_per_mol) for f in frames],
                "max_bond_deviation_angstrom": [_finite_or_none(f.max_bond_deviation_angstrom) for f in frames]}

    def _finish(self, step: int, event: CollapseEvent | None, session_start_step: int, setup_s: float,
                md_wall_s: float) -> RunSummary:
        cfg = self.config
        collapse = event.to_dict() if event is not None else {}
        summary = RunSummary(
            stable=event is None,
            steps_completed=int(step),
            steps_requested=int(cfg.steps),
            simulated_time_ps=step * cfg.timestep_fs * FS_IN_PS,
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
            platform=self.context.getPlatform().getName(),
            backend=cfg.backend,
            integrator=cfg.integrator,
            resumed_from_step=self.resumed_from_step,
            steps_this_session=int(step - session_start_step),
            bonds_monitored=int(len(self.monitor.bonds)),
            minimization=json.loads(self.paths.run_json.read_text()).get("minimization"),
            finished_at=utc_now(),
            **(self.trust.summary() if self.trust is not None else {}),
        )
        if self.trust is not None:
            self.trust.save(self.paths.directory)
        self.trajectory.flush(sync=True)
        self.trajectory.finish()
        self.states.flush(sync=True)
        summary.to_json(self.paths.summary_json)
        return summary

    def close(self) -> None:
        for writer in (self.trajectory, self.states):
            if writer is not None:
                writer.close()


class _InOrder:
    """A reporter as it is, but asking for unwrapped positions: OpenMM then calls all of a run's reporters due
    at a step in one group, in list order (in a periodic run every atom's path stays continuous, so the molecule
    stays whole in the trajectory and for the monitor)."""

    def __init__(self, reporter) -> None:
        self.reporter = reporter

    def describeNextReport(self, simulation) -> dict:
        report = self.reporter.describeNextReport(simulation)
        if isinstance(report, tuple):  # OpenMM's older form: (steps, positions, velocities, forces, energy, ...)
            names = ("positions", "velocities", "forces", "energy")
            report = {"steps": report[0], "include": [n for n, wanted in zip(names, report[1:5]) if wanted]}
        include = list(report.get("include", []))
        return {**report, "periodic": False, "include": include + ([] if "positions" in include else ["positions"])}

    def report(self, simulation, state) -> None:
        self.reporter.report(simulation, state)


class _CallbackReporter(ScheduledReporter):
    """run_simulation's on_report: the callback gets each report's StepRecord."""

    include = ("positions", "energy")

    def __init__(self, callback: Callable[[StepRecord], None], interval_steps: int, records: StepRecords) -> None:
        self.callback = callback
        self.interval_steps = int(interval_steps)
        self.records = records

    def write(self, record: StepRecord) -> None:
        self.callback(record)


class _CheckpointReporter:
    """Checkpoints every checkpoint_interval_steps, at the run's last step, and at the first monitor check after
    checkpoint_interval_s of wall time since the last one."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def describeNextReport(self, simulation) -> dict:
        cfg, step = self.run.config, int(simulation.currentStep)
        steps = cfg.checkpoint_interval_steps - step % cfg.checkpoint_interval_steps
        if step < cfg.steps:
            steps = min(steps, cfg.steps - step)
        if time.perf_counter() - self.run._last_checkpoint_time >= cfg.checkpoint_interval_s:
            steps = min(steps, cfg.monitor_interval_steps - step % cfg.monitor_interval_steps)
        return {"steps": steps, "periodic": False, "include": []}

    def report(self, simulation, state) -> None:
        self.run._checkpoint(int(simulation.currentStep))


class _ProgressReporter:
    """The tqdm bar: steps done and the temperature at each report."""

    def __init__(self, bar, interval_steps: int, watch: MonitorReporter) -> None:
        self.bar, self.interval_steps, self.watch = bar, int(interval_steps), watch

    def describeNextReport(self, simulation) -> dict:
        return {"steps": self.interval_steps - int(simulation.currentStep) % self.interval_steps, "periodic": False,
                "include": []}

    def report(self, simulation, state) -> None:
        self.bar.update(int(simulation.currentStep) - self.bar.n)
        self.bar.set_postfix(T=f"{self.watch.last_temperature_K:.0f} K", refresh=False)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None

