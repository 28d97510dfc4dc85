"""Production MD with an exported model: Langevin dynamics in OpenMM, watched by the stability monitor,
written to a run directory that can be resumed (DESIGN.md "MD run directory").

The run directory holds:
  run.json         every input (model SHA-256, atoms, starting positions, config), versions, platform
  topology.pdb     the topology with the starting positions (CONECT records for bonds)
  trajectory.dcd   frame k = step k * report_interval_steps, from step 0; mdtraj.load(dcd, top=pdb)
  state.csv        one row per frame: step, time, energies (kJ/mol), temperature (K), speed (ns/day)
  checkpoint.json  + checkpoint_step*.chk: the last committed OpenMM checkpoint (atomic)
  summary.json     written when the run ends: stable or not, collapse step/time/reason/bond, ns/day

Calling run_simulation again on the same directory resumes from the checkpoint, or returns the
summary of a finished run; it refuses when an input recorded in run.json has changed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform as _platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import openmm
import openmm.app as app
from openmm import unit

from .. import elements
from ..units import FS_IN_PS, NM_IN_ANGSTROM
from . import monitor as _monitor
from .monitor import CollapseEvent, StabilityMonitor
from .platforms import select_platform, set_torch_threads
from ..atomic_io import atomic_write_json
from ..versions import runtime_versions
from .reporters import (
    Checkpointer, DCDTrajectoryReporter, StateCSVReporter, StepRecord,
)
from .system import BACKENDS, build_system, file_sha256, read_model_metadata
from .topology import topology_atomic_numbers, topology_from_atomic_numbers, write_topology_pdb

#: Config fields that may differ when a run is resumed (they do not change the trajectory).
RESUMABLE_CHANGES = ("torch_threads",)
_KJ_PER_MOL_PER_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
_FS_IN_NS = 1.0e-6
_SECONDS_PER_DAY = 86400.0


class ResumeMismatchError(ValueError):
    """A run directory was started with other inputs than the ones given now; the message names them."""


@dataclass
class SimulationConfig:
    """Settings of one MD run (units in the names).

    seed: drives both the initial velocities and the Langevin noise; OpenMM reads a seed of 0 as
    'choose one at random', so OpenMM is given seed + 1. platform: None picks CUDA, OpenCL, then
    CPU (see select_platform); platform_precision: 'single', 'mixed' (default on GPUs) or 'double'.
    report_interval_steps: steps between trajectory frames, state rows and monitor checks.
    temperature_limit_K: None means max(2000 K, 4 x temperature_K). backend: 'torchforce' or
    'pythonforce'. torch_threads: torch intra-op threads (None leaves torch's default).
    """

    temperature_K: float = 300.0
    timestep_fs: float = 0.5
    steps: int = 20000
    friction_per_ps: float = 1.0
    seed: int = 0
    platform: str | None = None
    platform_precision: str | None = None
    report_interval_steps: int = 100
    checkpoint_interval_steps: int = 5000
    minimize: bool = False
    bond_deviation_limit_angstrom: float = 0.5
    temperature_limit_K: float | None = None
    backend: str = "torchforce"
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        positive = {"temperature_K": self.temperature_K, "timestep_fs": self.timestep_fs,
                    "report_interval_steps": self.report_interval_steps,
                    "checkpoint_interval_steps": self.checkpoint_interval_steps,
                    "bond_deviation_limit_angstrom": self.bond_deviation_limit_angstrom}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"SimulationConfig.{name} must be positive, got {value}")
        if self.steps < 0:
            raise ValueError(f"SimulationConfig.steps must be >= 0, got {self.steps}")
        if self.friction_per_ps < 0:
            raise ValueError(f"SimulationConfig.friction_per_ps must be >= 0, got {self.friction_per_ps}")
        if not 0 <= self.seed < 2**31 - 1:
            raise ValueError(f"SimulationConfig.seed must be in [0, 2**31 - 2], got {self.seed}")
        if self.backend not in BACKENDS:
            raise ValueError(f"SimulationConfig.backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.temperature_limit_K is not None and not self.temperature_limit_K > 0:
            raise ValueError(f"SimulationConfig.temperature_limit_K must be positive or None, got {self.temperature_limit_K}")

    @property
    def resolved_temperature_limit_K(self) -> float:
        if self.temperature_limit_K is not None:
            return float(self.temperature_limit_K)
        return _monitor.default_temperature_limit_K(self.temperature_K)

    @property
    def openmm_seed(self) -> int:
        return int(self.seed) + 1


@dataclass(frozen=True)
class RunPaths:
    """The files of an MD run directory."""

    directory: Path

    @property
    def run_json(self) -> Path:
        return self.directory / "run.json"

    @property
    def summary_json(self) -> Path:
        return self.directory / "summary.json"

    @property
    def trajectory(self) -> Path:
        return self.directory / "trajectory.dcd"

    @property
    def topology_pdb(self) -> Path:
        return self.directory / "topology.pdb"

    @property
    def state_csv(self) -> Path:
        return self.directory / "state.csv"


def read_run_summary(out_dir) -> dict | None:
    """summary.json of a run directory, or None while the run has not ended."""
    path = RunPaths(Path(out_dir)).summary_json
    return json.loads(path.read_text()) if path.is_file() else None


def run_simulation(
    model_path,
    atomic_numbers,
    positions_angstrom,
    out_dir,
    config: SimulationConfig | None = None,
    topology: app.Topology | None = None,
    reference_positions_angstrom=None,
    progress: bool = True,
    on_report: Callable[[StepRecord], None] | None = None,
) -> dict:
    """Run (or resume) Langevin MD of one molecule with an exported model; returns the summary dict.

    positions_angstrom (n_atoms, 3): the starting structure, also where the monitor finds bonds;
    reference_positions_angstrom (n_frames, n_atoms, 3): frames whose mean bond lengths the monitor
    compares with (default: the starting structure). topology: written as topology.pdb (default:
    one residue from the atomic numbers). on_report: called with each StepRecord after it is written.
    The monitor stops a collapsed run at once. See the module docstring for the files and the
    resume rules.

    Summary keys: stable, steps_completed, steps_requested, simulated_time_ps, collapse_step,
    collapse_time_ps, collapse_reason, collapse_message, first_broken_bond (atoms, elements,
    reference/current length and deviation in Å) and n_broken_bonds (collapse fields null/0 when
    stable), frames_written, state_rows_written, ns_per_day and wall_time_s (MD wall time behind
    the kept steps, summed over sessions: setup and work lost to an interruption excluded),
    setup_time_s, platform, backend, resumed_from_step, steps_this_session, bonds_monitored.
    """
    config = config or SimulationConfig()
    paths = RunPaths(Path(out_dir))
    zs = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    elements.check_atomic_numbers(zs)
    start_angstrom = np.asarray(positions_angstrom, dtype=np.float64)
    if start_angstrom.shape != (len(zs), 3) or not np.isfinite(start_angstrom).all():
        raise ValueError(f"positions_angstrom must be a finite ({len(zs)}, 3) array for {len(zs)} atoms, "
                         f"got shape {start_angstrom.shape}")
    reference = None if reference_positions_angstrom is None else np.asarray(reference_positions_angstrom, dtype=np.float64)
    if topology is None:
        topology = topology_from_atomic_numbers(zs, start_angstrom)
    elif not np.array_equal(topology_atomic_numbers(topology), zs):
        raise ValueError("the topology's atoms (elements) do not match atomic_numbers")

    model_path = Path(model_path).resolve()
    model_metadata = read_model_metadata(model_path)
    platform, platform_properties = select_platform(config.platform, config.platform_precision)
    record = _run_record(model_path, model_metadata, zs, start_angstrom, reference, config,
                         platform.getName(), platform_properties)

    paths.directory.mkdir(parents=True, exist_ok=True)
    if paths.run_json.is_file():
        _check_same_inputs(paths.run_json, record)
        summary = read_run_summary(paths.directory)
        if summary is not None and _is_finished(summary):
            return summary
    elif Checkpointer(paths.directory).exists() or paths.summary_json.is_file():
        raise ResumeMismatchError(
            f"{paths.directory}: holds a checkpoint or summary but no run.json, so its inputs cannot be "
            "checked; use a new output directory")

    set_torch_threads(config.torch_threads)
    setup_start = time.perf_counter()
    system = build_system(zs, model_path, backend=config.backend)
    integrator = openmm.LangevinMiddleIntegrator(
        config.temperature_K * unit.kelvin, config.friction_per_ps / unit.picosecond,
        config.timestep_fs * FS_IN_PS * unit.picoseconds)
    integrator.setRandomNumberSeed(config.openmm_seed)
    context = openmm.Context(system, integrator, platform, platform_properties)
    record["platform"]["properties_in_effect"] = {
        name: platform.getPropertyValue(context, name) for name in platform.getPropertyNames()}
    if not paths.run_json.is_file():
        atomic_write_json(paths.run_json, record)

    run = _Run(config, context, integrator, paths, zs, start_angstrom, reference, topology, on_report)
    try:
        return run.execute(progress, setup_s=time.perf_counter() - setup_start)
    finally:
        run.close()


class _Run:
    """One session of a run: sets up or restores the Context and reporters, steps, reports, checkpoints."""

    def __init__(self, config, context, integrator, paths, zs, start_angstrom, reference, topology, on_report):
        self.config = config
        self.context = context
        self.integrator = integrator
        self.paths = paths
        self.topology = topology
        self.start_angstrom = start_angstrom
        self.on_report = on_report
        self.monitor = StabilityMonitor(
            zs, start_angstrom, config.timestep_fs, reference_positions_angstrom=reference,
            bond_deviation_limit_angstrom=config.bond_deviation_limit_angstrom,
            temperature_limit_K=config.resolved_temperature_limit_K)
        self.degrees_of_freedom = 3 * len(zs)  # no constraints, no centre-of-mass motion removal
        self.checkpointer = Checkpointer(paths.directory)
        self.trajectory: DCDTrajectoryReporter | None = None
        self.states: StateCSVReporter | None = None
        self._last_report = (0, time.perf_counter())  # (step, wall clock) of the last report, for the speed column
        self._last_temperature = float("nan")
        self.md_wall_s = 0.0  # MD time (stepping, reporting, checkpoints) behind the kept steps, all sessions
        self.resumed_from_step: int | None = None

    # -- start or restore -------------------------------------------------------------------------

    def _start_fresh(self) -> CollapseEvent | None:
        cfg = self.config
        write_topology_pdb(self.topology, self.start_angstrom, self.paths.topology_pdb)
        self.context.setPositions(self.start_angstrom / NM_IN_ANGSTROM)
        if cfg.minimize:
            openmm.LocalEnergyMinimizer.minimize(self.context)
        self.context.setVelocitiesToTemperature(cfg.temperature_K * unit.kelvin, cfg.openmm_seed)
        self.context.setStepCount(0)
        self.context.setTime(0.0)
        self.trajectory = DCDTrajectoryReporter(self.paths.trajectory, self.topology, cfg.timestep_fs,
                                                cfg.report_interval_steps)
        self.states = StateCSVReporter(self.paths.state_csv)
        self._last_report = (0, time.perf_counter())
        event = self._report(0)
        if event is None:
            self._checkpoint(0)
        return event

    def _restore(self) -> int:
        document, data = self.checkpointer.load()
        self.context.loadCheckpoint(data)
        step = int(document["step"])
        if self.context.getStepCount() != step:
            raise ValueError(f"{self.checkpointer.json_path}: records step {step}, "
                             f"the OpenMM checkpoint step {self.context.getStepCount()}")
        self.trajectory = DCDTrajectoryReporter(
            self.paths.trajectory, self.topology, self.config.timestep_fs, self.config.report_interval_steps,
            keep_frames=int(document["frames_written"]))
        self.states = StateCSVReporter(self.paths.state_csv, keep_rows=int(document["state_rows_written"]))
        self.md_wall_s = float(document.get("md_wall_time_s", 0.0))
        self.resumed_from_step = step
        self._last_report = (step, time.perf_counter())
        return step

    # -- the loop ---------------------------------------------------------------------------------

    def execute(self, progress: bool, setup_s: float) -> dict:
        from tqdm.auto import tqdm

        cfg = self.config
        t0 = time.perf_counter()
        if self.checkpointer.exists():
            step, event = self._restore(), None
        else:
            step, event = 0, self._start_fresh()
        session_start_step = step
        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="MD", disable=not progress, dynamic_ncols=True)
        try:
            while event is None and step < cfg.steps:
                target = min(_next_multiple(step, cfg.report_interval_steps),
                             _next_multiple(step, cfg.checkpoint_interval_steps), cfg.steps)
                try:
                    self.integrator.step(target - step)
                except openmm.OpenMMException as exc:
                    event = self.monitor.event(self.context.getStepCount(), _monitor.SIMULATION_ERROR, str(exc).strip())
                    break
                bar.update(target - step)
                step = target
                if step % cfg.report_interval_steps == 0:
                    event = self._report(step)
                    if event is None:
                        bar.set_postfix(T=f"{self._last_temperature:.0f} K", refresh=False)
                if event is None and (step % cfg.checkpoint_interval_steps == 0 or step == cfg.steps):
                    self.md_wall_s += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._checkpoint(step)
        finally:
            bar.close()
        self.md_wall_s += time.perf_counter() - t0
        if event is not None:
            step = event.step
        return self._finish(step, event, session_start_step, setup_s)

    def _report(self, step: int) -> CollapseEvent | None:
        state = self.context.getState(getPositions=True, getEnergy=True)
        positions_nm = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperature = 2.0 * kinetic / (self.degrees_of_freedom * _KJ_PER_MOL_PER_K)
        now = time.perf_counter()
        last_step, last_time = self._last_report
        speed = _ns_per_day(step - last_step, self.config.timestep_fs, now - last_time)
        self._last_report = (step, now)
        self._last_temperature = temperature
        record = StepRecord(step=step, time_ps=self.monitor.time_ps(step), positions_nm=positions_nm,
                            potential_energy_kJ_per_mol=potential, kinetic_energy_kJ_per_mol=kinetic,
                            temperature_K=temperature, speed_ns_per_day=speed)
        event = self.monitor.check(step, record.positions_angstrom, potential, temperature)
        if np.isfinite(positions_nm).all():
            self.trajectory.report(record)
        self.states.report(record)
        if self.on_report is not None:
            self.on_report(record)
        return event

    def _checkpoint(self, step: int) -> None:
        self.trajectory.flush(sync=True)
        self.states.flush(sync=True)
        self.checkpointer.save(self.context, step, {
            "time_ps": self.monitor.time_ps(step),
            "frames_written": self.trajectory.frames_written,
            "state_rows_written": self.states.rows_written,
            "md_wall_time_s": self.md_wall_s,
        })

    def _finish(self, step: int, event: CollapseEvent | None, session_start_step: int, setup_s: float) -> dict:
        cfg = self.config
        summary = {
            "stable": event is None,
            "steps_completed": int(step),
            "steps_requested": int(cfg.steps),
            "simulated_time_ps": step * cfg.timestep_fs * FS_IN_PS,
            "collapse_step": None if event is None else event.step,
            "collapse_time_ps": None if event is None else event.time_ps,
            "collapse_reason": None if event is None else event.reason,
            "collapse_message": None if event is None else event.message,
            "first_broken_bond": None if event is None or event.broken_bond is None else event.broken_bond.to_dict(),
            "n_broken_bonds": 0 if event is None else event.n_broken_bonds,
            "frames_written": self.trajectory.frames_written,
            "state_rows_written": self.states.rows_written,
            "ns_per_day": _ns_per_day(step, cfg.timestep_fs, self.md_wall_s) if step > 0 else None,
            "wall_time_s": self.md_wall_s,
            "setup_time_s": setup_s,
            "platform": self.context.getPlatform().getName(),
            "backend": cfg.backend,
            "resumed_from_step": self.resumed_from_step,
            "steps_this_session": int(step - session_start_step),
            "bonds_monitored": int(len(self.monitor.bonds)),
            "finished_at": _now(),
        }
        self.trajectory.flush(sync=True)
        self.states.flush(sync=True)
        atomic_write_json(self.paths.summary_json, summary)
        return summary

    def close(self) -> None:
        for writer in (self.trajectory, self.states):
            if writer is not None:
                writer.close()


def _ns_per_day(steps: int, timestep_fs: float, wall_s: float) -> float:
    """Simulation speed: `steps` of `timestep_fs` done in `wall_s` seconds, in ns/day (0 when nothing was timed)."""
    if steps <= 0 or wall_s <= 0:
        return 0.0
    return steps * timestep_fs * _FS_IN_NS / (wall_s / _SECONDS_PER_DAY)


def _next_multiple(step: int, interval: int) -> int:
    """The smallest multiple of `interval` greater than `step`."""
    return (step // interval + 1) * interval


def _is_finished(summary: dict) -> bool:
    return summary.get("collapse_step") is not None or summary.get("steps_completed") == summary.get("steps_requested")


# --- run.json: what was asked for, and checking a resume against it -------------------------------

def _array_sha256(array: np.ndarray | None) -> str | None:
    if array is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float64).tobytes()).hexdigest()


def _run_record(model_path: Path, metadata: dict, zs, start_angstrom, reference, config: SimulationConfig,
                platform_name: str, platform_properties: dict) -> dict:
    return {
        "created": _now(),
        "model": {"path": str(model_path), "sha256": file_sha256(model_path), "metadata": metadata},
        "structure": {
            "atomic_numbers": zs.tolist(),
            "symbols": elements.symbols(zs),
            "positions_angstrom": start_angstrom.tolist(),
            "positions_sha256": _array_sha256(start_angstrom),
        },
        "reference_positions": None if reference is None else {
            "n_frames": int(reference.shape[0]) if reference.ndim == 3 else 1,
            "sha256": _array_sha256(reference),
        },
        "config": asdict(config),
        "temperature_limit_K": config.resolved_temperature_limit_K,
        "openmm_seed": config.openmm_seed,
        "integrator": "LangevinMiddleIntegrator",
        "platform": {"name": platform_name, "properties_requested": dict(platform_properties)},
        "trajectory": {"file": "trajectory.dcd", "topology": "topology.pdb",
                       "frame_interval_steps": config.report_interval_steps, "first_frame_step": 0},
        "versions": runtime_versions(),
    }


def _resume_identity(record: dict) -> dict[str, object]:
    """The inputs that must be equal to resume a run, keyed by the name used in error messages."""
    identity = {
        "model sha256": record["model"]["sha256"],
        "atomic_numbers": record["structure"]["atomic_numbers"],
        "starting positions (sha256)": record["structure"]["positions_sha256"],
        "reference positions (sha256)": (record["reference_positions"] or {}).get("sha256"),
        "platform": record["platform"]["name"],
        "platform properties": record["platform"]["properties_requested"],
    }
    for f in fields(SimulationConfig):
        if f.name not in RESUMABLE_CHANGES:
            identity[f"config.{f.name}"] = record["config"].get(f.name)
    return identity


def _check_same_inputs(run_json: Path, record: dict) -> None:
    recorded = json.loads(run_json.read_text())
    old, new = _resume_identity(recorded), _resume_identity(record)
    changed = [k for k in new if old.get(k) != new[k]]
    if changed:
        details = "; ".join(f"{k}: recorded {_short(old.get(k))}, now {_short(new[k])}" for k in changed)
        raise ResumeMismatchError(
            f"{run_json.parent}: cannot resume, inputs differ from {run_json.name}: {details}. "
            "Use a new output directory for a different run.")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
