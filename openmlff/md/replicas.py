"""Replicas: N non-interacting copies of one molecule in one OpenMM Context, the model evaluating every copy in
one batched call, each copy an ordinary run directory (docs/architecture.md "Replicas").

A Context of 21-166 atoms leaves a GPU (and, less so, a CPU core) mostly idle: a step is a few kernel launches
around one model call. Here the copies are the frames of one call of the model's batched `energies`
(potentials.exported.write_replica_module), so neighbour pairs never cross copies, and the copies share one
integrator step.

The batch directory holds
  batch.json          the members (their run directories, seeds, starting positions' SHA-256) and the batch seed
  replicas_model.pt   the TorchScript module that sums the copies' energies (rewritten each session)
  checkpoint.json     + checkpoint_step*.chk: the batch Context's OpenMM checkpoint and, for each member still
                      running, its trajectory frames and state rows written: one commit for all members
and each member's run directory is that of a lone run (run.json, topology.pdb, trajectory, state.csv,
summary.json, collapse_frames.dcd), so `analyze`, `correlate` and `campaign status` read it as any other run.
Its run.json records "replicas" (the batch directory, the member's index, the count); it holds no checkpoint
of its own: it resumes through the batch, and run_simulation on it alone is refused (the record differs).

Physics. Each copy starts from the velocities a lone run with its seed starts from (Context.
setVelocitiesToTemperature with the copy's seed, on its own atoms). The Langevin noise comes from the batch
integrator's one random stream, different for every particle: the copies are independent, and a copy's
trajectory is statistically, not bitwise, that of a lone run with its seed. A batch of one is the lone path
(run_simulation) itself, bit for bit.

A collapse stops one copy, not the batch. The monitor checks every copy at its interval as in a lone run; a
collapsed copy is recorded exactly as a lone collapse (summary.json, collapse_frames.dcd), and the batch goes on
without it: the Context is rebuilt from the other copies' positions and velocities at that step (a System of
one copy fewer, an integrator seeded by the batch seed and the number of rebuilds) and checkpointed at once.
Rebuilt rather than frozen: a frozen copy (mass zero) would still be evaluated every step, at exploded
positions that can give NaN forces or an OpenMM error for the whole Context, and would cost a copy's time.
Every step of the batch is deterministic on a given platform and thread count (the seeds are fixed, the
rebuilds happen at the same steps), so a batch killed at any moment and resumed gives every member the result
of an uninterrupted batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit

from ..core import elements
from ..core.atomic_io import atomic_write_json
from ..core.errors import InputError
from ..potentials import get_potential
from ..potentials.exported import ExportedModel, build_replica_system, write_replica_module
from ..core.resume import check_resumable
from ..core.threads import set_threads
from ..core.units import FS_IN_PS, NM_IN_ANGSTROM
from ..core.versions import utc_now
from . import monitor as _monitor
from .config import SimulationConfig
from .integrators import make_integrator
from .monitor import CollapseEvent
from .platforms import select_platform, torchforce_properties_in_effect
from .recorder import RunRecorder, structure_for_run
from .reporters import Checkpointer, warm_up
from .rundir import RunDirectory, RunSummary, array_sha256, check_same_inputs, record_extension, run_record
from .runner import minimize, run_simulation

BATCH_JSON = "batch.json"
REPLICA_MODULE = "replicas_model.pt"


def replica_directories(batch_dir, count: int) -> list[Path]:
    """The default member run directories of a batch: BATCH_DIR/replica_000, replica_001, ..."""
    return [Path(batch_dir) / f"replica_{k:03d}" for k in range(int(count))]


def run_replicas(model, atomic_numbers, starts_angstrom, batch_dir, config: SimulationConfig | None = None,
                 seeds=None, run_dirs=None, topology=None, reference_positions_angstrom=None,
                 progress: bool = True) -> list[RunSummary]:
    """Run (or resume, or extend) len(starts_angstrom) copies of one molecule in one Context; a RunSummary each.

    model: an exported model file (or its ExportedModel). starts_angstrom (N, n_atoms, 3): each copy's start.
    seeds: each copy's seed (default config.seed + k); it draws the copy's initial velocities and names the copy
    as a lone run's seed would. run_dirs: the members' run directories (default replica_directories). topology
    and reference_positions_angstrom are shared by all copies (see run_simulation). N = 1 is run_simulation.
    """
    config = config or SimulationConfig()
    zs = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    elements.check_atomic_numbers(zs)
    starts = np.asarray(starts_angstrom, dtype=np.float64)
    if starts.ndim != 3 or starts.shape[1:] != (len(zs), 3) or len(starts) < 1 or not np.isfinite(starts).all():
        raise InputError(f"starts_angstrom must be a finite (N, {len(zs)}, 3) array for {len(zs)} atoms, "
                         f"got shape {starts.shape}")
    n = len(starts)
    seeds = [int(config.seed) + k for k in range(n)] if seeds is None else [int(s) for s in seeds]
    run_dirs = replica_directories(batch_dir, n) if run_dirs is None else [Path(d) for d in run_dirs]
    if len(seeds) != n or len(run_dirs) != n:
        raise InputError(f"{n} starts need {n} seeds and {n} run directories, got {len(seeds)} and {len(run_dirs)}")
    if len({d.resolve() for d in run_dirs}) != n:
        raise InputError("the replicas' run directories must differ")
    reference = None if reference_positions_angstrom is None else np.asarray(reference_positions_angstrom, np.float64)
    if n == 1:
        return [run_simulation(model, zs, starts[0], run_dirs[0], replace(config, seed=seeds[0]), topology=topology,
                               reference_positions_angstrom=reference, progress=progress)]
    potential = get_potential(model)
    if not isinstance(potential, ExportedModel):
        raise InputError(f"replicas need an exported model file (one batched call of its `energies`); "
                         f"{potential.name!r} is a {potential.kind} potential: run its starts one by one")
    if config.solvate_padding_nm is not None or config.pressure_bar is not None or (
            topology is not None and topology.getPeriodicBoxVectors() is not None):
        raise InputError("replicas are copies of a molecule in vacuum; run periodic and solvated systems one by one")
    potential.check_atoms(zs)
    batch = _Batch(potential, zs, starts, seeds, run_dirs, Path(batch_dir), config, topology, reference)
    return batch.run(progress)


class _Batch:
    """The batch's Context, its members and its checkpoint; `run` is the whole of run_replicas past the checks."""

    def __init__(self, potential: ExportedModel, zs, starts, seeds, run_dirs, batch_dir: Path,
                 config: SimulationConfig, topology, reference) -> None:
        self.potential, self.zs, self.reference = potential, zs, reference
        self.config = config
        self.n_atoms = len(zs)
        self.masses = elements.masses(zs)
        self.batch_dir = batch_dir
        self.batch_files = RunDirectory(batch_dir)
        self.checkpointer = Checkpointer(self.batch_files)
        self.configs = [replace(config, seed=s) for s in seeds]
        self.seeds = seeds
        self.starts = starts
        self.paths = [RunDirectory(d, config.trajectory_format) for d in run_dirs]
        self.structures = [structure_for_run(zs, start, topology if topology is not None
                                              else potential.topology(zs, start)) for start in starts]
        self.platform, self.platform_properties = select_platform(config.platform, config.platform_precision)
        self.batch_seed = _batch_seed(seeds, starts)
        self.context = None
        self.module = None
        self.active: list[int] = []
        self.rebuilds = 0
        self.members: dict[int, RunRecorder] = {}
        self._state = None  # (positions, velocities, forces or None, energies or None) of the active copies

    # -- records --------------------------------------------------------------------------------

    def _records(self) -> list[dict]:
        records = []
        for k, (cfg, paths, structure) in enumerate(zip(self.configs, self.paths, self.structures)):
            record = run_record(self.potential.record(self.zs, self.starts[k], structure.topology), self.zs,
                                self.starts[k], self.reference, cfg, self.platform.getName(), self.platform_properties)
            record["replicas"] = {"batch_directory": os.path.relpath(self.batch_dir.resolve(), paths.directory.resolve()),
                                  "index": k, "count": len(self.paths)}
            records.append(record)
        return records

    def _batch_record(self) -> dict:
        return {"count": len(self.paths),
                "runs": [os.path.relpath(p.directory.resolve(), self.batch_dir.resolve()) for p in self.paths],
                "seeds": self.seeds, "batch_seed": self.batch_seed,
                "starts_sha256": [array_sha256(s) for s in self.starts],
                "model_sha256": self.potential.identity_sha256(self.zs)}

    # -- the run --------------------------------------------------------------------------------

    def run(self, progress: bool) -> list[RunSummary]:
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        for p in self.paths:
            p.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as locks:
            locks.enter_context(self.batch_files.lock())
            for p in self.paths:
                locks.enter_context(p.lock())
            try:
                return self._run_locked(progress)
            except OSError as exc:
                if exc.filename is None:  # a buffered write of a trajectory or CSV failed (a full disk): name the batch
                    raise OSError(exc.errno, exc.strerror or str(exc), str(self.batch_dir)) from exc
                raise

    def _run_locked(self, progress: bool) -> list[RunSummary]:
        cfg = self.config
        records = self._records()
        batch_json = self.batch_dir / BATCH_JSON
        if batch_json.is_file():
            recorded = json.loads(batch_json.read_text())
            check_resumable({k: recorded.get(k) for k in self._batch_record()}, self._batch_record(),
                            where=str(batch_json))
        else:
            atomic_write_json(batch_json, {"created": utc_now(), **self._batch_record()})
        for paths, record in zip(self.paths, records):
            if paths.run_json.is_file():
                recorded = json.loads(paths.run_json.read_text())
                check_same_inputs(paths.run_json, recorded, record)
                summary = paths.read_summary()
                if cfg.steps > recorded["config"]["steps"] and not (summary and summary.collapsed):
                    record_extension(paths, recorded, cfg.steps)

        set_threads(cfg.torch_threads, atoms_per_call=self.n_atoms * len(self.paths))
        setup_start = time.perf_counter()
        write_replica_module(self.potential.path, self.n_atoms, self.batch_dir / REPLICA_MODULE)
        self.module = torch.jit.load(str(self.batch_dir / REPLICA_MODULE), map_location="cpu").eval()
        loaded = self.checkpointer.load() if self.checkpointer.exists() else None
        if loaded is not None:
            document = loaded[0]
            self.active, self.rebuilds = [int(k) for k in document["active"]], int(document["rebuilds"])
            step = int(document["step"])
        else:
            document, step = None, 0
            self.active = list(range(len(self.paths)))
        # a collapsed copy is done for good, even while the checkpoint still counts it (the batch's last collapse
        # writes no checkpoint: there is nothing left to run)
        summaries = {k: self.paths[k].read_summary() for k in self.active}
        if not any(summaries[k] is None or (not summaries[k].collapsed and step < cfg.steps) for k in self.active):
            return [p.read_summary() for p in self.paths]
        for k in range(len(self.paths)):
            if k not in self.active and self.paths[k].read_summary() is None:
                raise InputError(f"{self.paths[k].directory}: left the batch in {self.batch_dir} (collapsed) but "
                                 "has no summary.json; use a new batch directory")
        self._build_context()
        for k, record in enumerate(records):
            if k in self.active and not self.paths[k].run_json.is_file():
                record["platform"]["properties_in_effect"] = {
                    name: self.platform.getPropertyValue(self.context, name) for name in self.platform.getPropertyNames()}
                record["torchforce_properties"] = torchforce_properties_in_effect(self.context.getSystem())
                atomic_write_json(self.paths[k].run_json, record)
        self.members = {k: RunRecorder(self.configs[k], self.paths[k], self.zs, self.starts[k], self.reference,
                                       self.structures[k]) for k in self.active}
        # a copy can end while the batch starts (a collapse at step 0): its summary needs these already
        self._session_start, self._setup_start, self._setup_s = step, setup_start, None
        if document is None:
            self._start_fresh()
        else:
            document = self.checkpointer.restore(self.context, self.potential.warmup_evaluations, loaded)
            for k in self.active:
                self.members[k].restore(document, document["members"][str(k)])
        return self._loop(progress, setup_s=time.perf_counter() - setup_start)

    def _build_context(self, positions=None, velocities=None, step: int = 0) -> None:
        """The Context of the active copies (a new integrator seed per rebuild); state copied over when given."""
        cfg = self.config
        system = build_replica_system(self.zs, self.batch_dir / REPLICA_MODULE, len(self.active), backend=cfg.backend,
                                      torch_properties=cfg.torch_properties, model_path=self.potential.path)
        integrator = make_integrator(cfg.integrator, cfg.temperature_K, cfg.friction_per_ps, cfg.timestep_fs,
                                     _generation_seed(self.batch_seed, self.rebuilds))
        self.context = openmm.Context(system, integrator, self.platform, self.platform_properties)
        if positions is not None:
            self.context.setPositions(positions)
            self.context.setVelocities(velocities)
            self.context.setStepCount(step)
            self.context.setTime(step * cfg.timestep_fs * FS_IN_PS)
        self._state = None

    def _start_fresh(self) -> None:
        starts = [self._lone_start(k) for k in self.active]  # (positions Å, velocities nm/ps) each
        self.context.setPositions(np.concatenate([start / NM_IN_ANGSTROM for start, _ in starts]))
        warm_up(self.context, self.potential.warmup_evaluations)
        self.context.setVelocities(np.concatenate([velocity for _, velocity in starts]))
        self.context.setStepCount(0)
        self.context.setTime(0.0)
        for k in self.active:
            self.members[k].start()
        self._after_checks(0, self._report(0, full=True, monitor=True), checkpoint=True)

    def _lone_start(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Copy k's start (Å) and initial velocities (nm/ps) as its lone run makes them, in a Context of its own:
        minimised when asked (recorded in its run.json), then Context.setVelocitiesToTemperature with its seed
        (OpenMM adjusts the draw to the System and the integrator, so the same System and integrator are used)."""
        cfg = self.configs[k]
        system = self.potential.build_system(self.zs, self.starts[k], backend=cfg.backend)
        integrator = make_integrator(cfg.integrator, cfg.temperature_K, cfg.friction_per_ps, cfg.timestep_fs,
                                     cfg.openmm_seed)
        context = openmm.Context(system, integrator, self.platform, self.platform_properties)
        context.setPositions(self.starts[k] / NM_IN_ANGSTROM)
        if cfg.minimize:
            minimize(context, self.starts[k], self.paths[k].run_json)
        context.setVelocitiesToTemperature(cfg.temperature_K * unit.kelvin, cfg.openmm_seed)
        state = context.getState(getPositions=True, getVelocities=True)
        return (np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)),
                np.asarray(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)))

    # -- stepping -------------------------------------------------------------------------------

    def _loop(self, progress: bool, setup_s: float) -> list[RunSummary]:
        from tqdm.auto import tqdm

        cfg = self.config
        step = int(self.context.getStepCount())
        t0 = time.perf_counter()
        for member in self.members.values():
            member.session_t0 = t0
        self._setup_s, self._session_start = setup_s, step
        self._last_checkpoint = time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc=f"MD x{len(self.active)}", disable=not progress,
                   dynamic_ncols=True)
        try:
            while self.active and step < cfg.steps:
                target = min(_next_multiple(step, cfg.monitor_interval_steps),
                             _next_multiple(step, cfg.checkpoint_interval_steps), cfg.steps)
                try:
                    self.context.getIntegrator().step(target - step)
                except openmm.OpenMMException as exc:
                    step = int(self.context.getStepCount())
                    self._simulation_error(step, str(exc).strip())
                    continue
                step = target
                full = step % cfg.report_interval_steps == 0
                collapsed = self._report(step, full=full, monitor=step % cfg.monitor_interval_steps == 0)
                due = (step % cfg.checkpoint_interval_steps == 0 or step == cfg.steps
                       or time.perf_counter() - self._last_checkpoint >= cfg.checkpoint_interval_s)
                self._after_checks(step, collapsed, checkpoint=due)
                bar.update(step - bar.n)
                bar.set_postfix(active=len(self.active), refresh=False)
        finally:
            bar.close()
        for k in list(self.active):  # the ones still running at the last step: stable
            self._finish(k, step, None)
        return [p.read_summary() for p in self.paths]

    def _fetch(self, forces: bool, energies: bool) -> None:
        state = self.context.getState(getPositions=True, getVelocities=True, getForces=forces)
        shape = (len(self.active), self.n_atoms, 3)
        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).reshape(shape)
        velocities = np.asarray(state.getVelocities(asNumpy=True).value_in_unit(
            unit.nanometer / unit.picosecond)).reshape(shape)
        f = (np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
             .reshape(shape) if forces else None)
        e = self._energies(positions) if energies else None
        self._state = (positions, velocities, f, e)

    def _energies(self, positions_nm: np.ndarray) -> np.ndarray:
        """The copies' energies (kJ/mol) from the replica module's batched call (the TorchForce gives their sum only)."""
        with torch.no_grad():
            return self.module.energies(torch.as_tensor(positions_nm, dtype=torch.float64)).double().numpy()

    def _report(self, step: int, full: bool, monitor: bool) -> list[tuple[int, CollapseEvent]]:
        """Each copy's writers (at report steps) and monitor (at check steps), in a lone run's order, from its
        slice of the batch State (its energy from the replica module's batched call)."""
        self._fetch(forces=full, energies=full)
        positions, velocities, forces, energies = self._state
        # leapfrog Verlet: OpenMM's kinetic energy is at the full step, half a step past the velocities
        half_step_ps = 0.5 * self.config.timestep_fs * FS_IN_PS if self.config.integrator == "verlet" else 0.0
        collapsed = []
        for slot, k in enumerate(list(self.active)):
            kinetic = None
            if full:
                v = velocities[slot]
                if half_step_ps:
                    v = v + half_step_ps * forces[slot] / self.masses[:, None]
                kinetic = 0.5 * float(np.sum(self.masses[:, None] * v ** 2))
            event = self.members[k].observe(
                step, positions[slot], velocities[slot], potential=float(energies[slot]) if full else None,
                kinetic=kinetic, forces=None if forces is None else forces[slot], report=full, check=monitor,
                energy_now=lambda slot=slot: float(self._energies(positions[slot:slot + 1])[0]))
            if event is not None:
                collapsed.append((k, event))
        return collapsed

    def _simulation_error(self, step: int, message: str) -> None:
        """An OpenMM error while stepping: the copies with non-finite coordinates (else all) end with it."""
        self._fetch(forces=False, energies=False)
        positions, velocities = self._state[0], self._state[1]
        bad = [k for slot, k in enumerate(self.active)
               if not (np.isfinite(positions[slot]).all() and np.isfinite(velocities[slot]).all())] or list(self.active)
        events = [(k, self.members[k].monitor.event(step, _monitor.SIMULATION_ERROR, message)) for k in bad]
        self._after_checks(step, events, checkpoint=True)

    def _after_checks(self, step: int, collapsed: list, checkpoint: bool) -> None:
        """Collapsed copies end (their summaries) and leave the Context, which is rebuilt; then the checkpoint."""
        if collapsed:
            fetched = list(self.active)  # the copies of the fetched state, in its order
            positions, velocities = self._state[0], self._state[1]
            for k, event in collapsed:
                self._finish(k, step, event)
            if not self.active:
                return
            slots = [slot for slot, k in enumerate(fetched) if k in self.active]
            self.rebuilds += 1
            self._build_context(positions[slots].reshape(-1, 3), velocities[slots].reshape(-1, 3), step)
            warm_up(self.context, self.potential.warmup_evaluations)
            checkpoint = True
        if checkpoint and self.active:
            self._checkpoint(step)

    def _finish(self, k: int, step: int, event: CollapseEvent | None) -> None:
        member = self.members[k]
        setup_s = self._setup_s if self._setup_s is not None else time.perf_counter() - self._setup_start
        member.finish(step, event, session_start_step=self._session_start, setup_s=setup_s,
                      md_wall_s=member.md_wall_s(), platform=self.context.getPlatform().getName())
        member.close()
        self.active.remove(k)

    def _checkpoint(self, step: int) -> None:
        members = {str(k): self.members[k].marks() for k in self.active}
        self.checkpointer.save(self.context, step, {
            "time_ps": step * self.config.timestep_fs * FS_IN_PS, "active": list(self.active), "rebuilds": self.rebuilds,
            "members": members, "md_wall_time_s": self.members[self.active[0]].md_wall_s()})
        self._last_checkpoint = time.perf_counter()


def _batch_seed(seeds, starts) -> int:
    """The batch integrator's seed, from the members' seeds and starts (two batches of other members differ)."""
    digest = hashlib.sha256(json.dumps([list(seeds), [array_sha256(s) for s in starts]]).encode()).hexdigest()
    return int(digest, 16) % (2 ** 31 - 2)


def _generation_seed(batch_seed: int, rebuilds: int) -> int:
    """OpenMM's seed of the Context after `rebuilds` rebuilds (never 0, which OpenMM reads as random)."""
    return 1 + (int(batch_seed) + 104729 * int(rebuilds)) % (2 ** 31 - 2)


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval
