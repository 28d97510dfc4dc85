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

from ..core import elements
from ..core.atomic_io import atomic_write_json
from ..core.errors import InputError
from ..potentials import Potential, get_potential
from ..core.resume import ResumeMismatchError
from ..core.threads import set_threads
from ..core.units import NM_IN_ANGSTROM
from . import monitor as _monitor
from .config import SimulationConfig
from .environment import (
    Environment, build_environment_system, check_box_for_cutoff, degrees_of_freedom, prepare_environment,
    save_solvated_start, platform_properties as platform_properties_for,
)
from .integrators import make_integrator
from .monitor import CollapseDetected, CollapseEvent, MonitorReporter
from .platforms import select_platform, torchforce_properties_in_effect
from .recorder import RunRecorder, structure_for_run
from .reporters import Checkpointer, StepRecord, warm_up
from .rundir import RunDirectory, RunSummary, check_same_inputs, record_extension, run_record
from .trust import TrustSettings, UntrustedStop


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
    """Run (or resume, or extend) MD of one molecule with a potential; returns its RunSummary (md/rundir.py).

    model: an exported model file, a potential name ('amber14', 'gaff-2.11', 'gfn2-xtb', 'dft'; see
    openmlff.potentials) or a Potential. positions_angstrom (n_atoms, 3): the start, where the monitor finds
    bonds; reference_positions_angstrom (n_frames, n_atoms, 3): frames whose mean bond lengths the monitor
    compares with (default: the start). topology: written as topology.pdb (default: one residue, bonds from
    covalent radii). on_report: called with each StepRecord after it is written. reporters: OpenMM reporters of
    your own, on their own schedule (after openmlff's writers, before the monitor), seeing only this session's
    steps. trust: a committee evaluated at each report (md/trust.py). start_name: what errors call the start.
    See the module docstring for the files and the resume rules.
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
    structure = structure_for_run(
        zs, start_angstrom, topology if topology is not None else potential.topology(zs, start_angstrom))
    environment = prepare_environment(structure, config, saved=paths.solvated_start,
                                      where="structure" if topology is None else "the structure's topology")
    if environment.kind != "vacuum":
        _check_environment_options(config, trust)
        check_box_for_cutoff(environment, config)
        zs, start_angstrom = environment.atomic_numbers[environment.ml_atoms], \
            environment.positions_angstrom[environment.ml_atoms]
        structure = structure_for_run(zs, start_angstrom, _subset_topology(environment))
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
    vacuum = environment.kind == "vacuum"
    if vacuum:
        system = potential.build_system(zs, start_angstrom, backend=config.backend,
                                        torch_properties=config.torch_properties, topology=structure.topology)
    else:
        system = build_environment_system(potential, environment, config)
    integrator = make_integrator(config.integrator, config.temperature_K, config.friction_per_ps, config.timestep_fs,
                                 config.openmm_seed)
    simulation = app.Simulation(environment.topology, system, integrator, platform, platform_properties)
    record["platform"]["properties_in_effect"] = {
        name: platform.getPropertyValue(simulation.context, name) for name in platform.getPropertyNames()}
    record["torchforce_properties"] = torchforce_properties_in_effect(system)
    if not paths.run_json.is_file():
        if environment.solvent_relaxation is not None:
            save_solvated_start(paths.solvated_start, environment)  # before run.json: a run never lacks its start
        atomic_write_json(paths.run_json, record)

    recorder = RunRecorder(config, paths, zs, start_angstrom, reference, structure,
                           system_structure=None if vacuum else environment.structure(),
                           atoms=None if vacuum else environment.ml_atoms,
                           degrees_of_freedom=None if vacuum else degrees_of_freedom(system), trust=trust,
                           on_report=on_report)
    if config.backend == "compiled":  # Inductor compiles at the model's first call: setup time, not MD time
        simulation.context.setPositions(recorder.system_structure.positions_angstrom / NM_IN_ANGSTROM)
        warm_up(simulation.context, 1)
    run = _LoneRun(config, simulation, recorder, potential.warmup_evaluations, reporters)
    try:
        return run.execute(progress, setup_s=time.perf_counter() - setup_start)
    finally:
        recorder.close()


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


def _check_environment_options(config: SimulationConfig, trust) -> None:
    """Options that periodic and solvated runs do not have (yet)."""
    if trust is not None:
        raise InputError("--committee (trust) is not available in periodic or solvated runs; run the molecule in vacuum")
    if config.trajectory_format == "hdf5":
        raise InputError("trajectory_format hdf5 keeps no box; periodic and solvated runs write dcd or xtc")


def _subset_topology(environment: Environment) -> app.Topology:
    """A Topology of the molecule alone (the ML atoms; no box): collapse frames and the monitor's bonds use it."""
    import mdtraj

    topology = mdtraj.Topology.from_openmm(environment.topology).subset(environment.ml_atoms.tolist()).to_openmm()
    topology.setPeriodicBoxVectors(None)
    return topology


class _LoneRun:
    """One session of a lone run: the stepper on an openmm.app.Simulation. It sets up or restores the Context,
    hands the RunRecorder's reporters (and the caller's, the checkpoints', the progress bar's) to the Simulation,
    steps, and has the recorder write the summary."""

    def __init__(self, config: SimulationConfig, simulation: app.Simulation, recorder: RunRecorder,
                 warmup_evaluations: int, user_reporters=None) -> None:
        self.config = config
        self.simulation = simulation
        self.context = simulation.context
        self.recorder = recorder
        self.warmup_evaluations = int(warmup_evaluations)
        self.user_reporters = list(user_reporters or [])  # the caller's OpenMM reporters
        self.checkpointer = Checkpointer(recorder.paths)
        self.last_checkpoint_time = time.perf_counter()  # wall clock of the last checkpoint (checkpoint_interval_s)

    def _start_fresh(self) -> CollapseEvent | None:
        cfg, recorder = self.config, self.recorder
        self.context.setPositions(recorder.system_structure.positions_angstrom / NM_IN_ANGSTROM)
        warm_up(self.context, self.warmup_evaluations)
        if cfg.minimize:
            minimize(self.context, recorder.system_structure.positions_angstrom, recorder.paths.run_json)
        self.context.setVelocitiesToTemperature(cfg.temperature_K * unit.kelvin, cfg.openmm_seed)
        if self.simulation.system.getNumConstraints():  # rigid water: no velocity along a constraint at step 0
            self.context.applyVelocityConstraints(1e-6)
        self.context.setStepCount(0)
        self.context.setTime(0.0)
        recorder.start()
        state = self.context.getState(getPositions=True, getVelocities=True, getEnergy=True, getForces=True)
        event = recorder.report_start(self.simulation, state)
        if event is None:
            self._checkpoint(0)
        return event

    def execute(self, progress: bool, setup_s: float) -> RunSummary:
        from tqdm.auto import tqdm

        cfg, recorder = self.config, self.recorder
        recorder.session_t0 = time.perf_counter()
        if self.checkpointer.exists():
            recorder.restore(self.checkpointer.restore(self.context, self.warmup_evaluations))
            step, event = recorder.resumed_from_step, None
        else:
            step, event = 0, self._start_fresh()
        session_start_step = step
        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="MD", disable=not progress, dynamic_ncols=True)
        # Called in this order at a step where several are due: writers first, so the frame of a collapse is
        # written; the caller's; then the monitor, whose CollapseDetected stops the Simulation before a checkpoint.
        # OpenMM calls reporters that want no positions (or wrapped ones) in other groups, before or after the rest;
        # every reporter here asks for unwrapped positions (which the due reporters fetch anyway) to keep this order.
        self.simulation.reporters = [_InOrder(r) for r in (
            *recorder.recorders(), *self.user_reporters, recorder.watch, _CheckpointReporter(self),
            _ProgressReporter(bar, cfg.report_interval_steps, recorder.watch))]
        trust = recorder.trust
        stopped = trust is not None and trust.stop_step is not None
        try:
            if event is None and step < cfg.steps and not stopped:
                try:
                    self.simulation.step(cfg.steps - step)
                except CollapseDetected as collapse:
                    event = collapse.event
                except UntrustedStop:
                    pass  # the run ends here, at its first untrusted report
                except openmm.OpenMMException as exc:
                    event = recorder.monitor.event(self.context.getStepCount(), _monitor.SIMULATION_ERROR,
                                                   str(exc).strip())
        finally:
            bar.close()
            self.simulation.reporters = []
        md_wall_s = recorder.md_wall_s()
        step = event.step if event is not None else int(self.simulation.currentStep)
        if trust is not None and trust.stop_step is not None:
            step = trust.stop_step
        return recorder.finish(step, event, session_start_step=session_start_step, setup_s=setup_s,
                               md_wall_s=md_wall_s, platform=self.context.getPlatform().getName())

    def _checkpoint(self, step: int) -> None:
        recorder = self.recorder
        self.checkpointer.save(self.context, step, {"time_ps": recorder.monitor.time_ps(step), **recorder.marks(),
                                                    "md_wall_time_s": recorder.md_wall_s()})
        recorder.committed()
        if recorder.periodic:
            # OpenMM's CPU platform sums periodic forces in an order that depends on the Context's history, so a
            # Context restored from this checkpoint would drift from this one in the last bits: continue as a
            # resumed session would, from a re-initialised Context (and the model's warm-up calls).
            self.context.reinitialize(preserveState=True)
            warm_up(self.context, self.warmup_evaluations)
        self.last_checkpoint_time = time.perf_counter()


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


class _CheckpointReporter:
    """Checkpoints every checkpoint_interval_steps, at the run's last step, and at the first monitor check after
    checkpoint_interval_s of wall time since the last one."""

    def __init__(self, run: _LoneRun) -> None:
        self.run = run

    def describeNextReport(self, simulation) -> dict:
        cfg, step = self.run.config, int(simulation.currentStep)
        steps = cfg.checkpoint_interval_steps - step % cfg.checkpoint_interval_steps
        if step < cfg.steps:
            steps = min(steps, cfg.steps - step)
        if time.perf_counter() - self.run.last_checkpoint_time >= cfg.checkpoint_interval_s:
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
