"""MD speed of exported models: OpenMM TorchForce and PythonForce, an ASE dynamics loop, against the floor.

For each architecture (openmlff.models.ARCHITECTURES; one that fails to build is skipped with a
note) and each molecule (built-in aspirin 21 atoms, Ac-Ala3-NHMe 42, chignolin 166), an
untrained model of the default CPU size is exported (speed does not depend on the weights) and
timed along these paths, all 0.5 fs Langevin steps at 500 K:

  floor         bare forward + torch.autograd.grad(energy, positions) of the TorchScript module
                (float64 positions in nm, what TorchForce hands it) at the frames the torchforce path
                visits (a model's cost depends on the geometry): the least a step can cost. Every path runs
                with denormals flushed to zero, as openmlff runs models (benchmarks/denormals.py: unflushed,
                the floor from Python was about 2x slower, which made TorchForce look faster than the floor)
  torchforce    openmm.LangevinMiddleIntegrator.step with the model in openmmtorch.TorchForce
  torchforce-frozen  the same with the model's parameters set requires_grad=False first: TorchForce
                calls energy.backward(), which also computes the parameters' gradients unless
                they are frozen (see the README's MD speed section)
  pythonforce   the same with openmm.PythonForce (a Python callback per step)
  compiled-floor  forward + gradient of the model compiled by Inductor (potentials/compiled.py) at the same frames:
                the compiled floor, which the compiled MD path is held to (the time to compile is printed)
  compiled      openmm.PythonForce of the compiled model (--backend compiled)
  ase           ase.md.langevin.Langevin driving openmlff.md.ExportedModelCalculator: the loop a
                user would otherwise write
  torchforce-cudagraphs  (with --platform CUDA) TorchForce with useCUDAGraphs

The paths of one model and molecule are timed in 5 rounds taken in turn (A, B, C, A, B, C, ...)
of --steps / 5 steps each, every MD round starting again from the starting structure (see
`interleaved`); 'ms/step' is the best round's wall time per step, 'cpu ms' the best round's
process CPU time per step (steadier on a shared machine, where other processes' load stretches
wall time). With --runner, the production runner's own overhead on aspirin:
openmlff.md.run_simulation (reports every 100 steps; cheap checks every 10 steps, or only at the
reports), its fixed costs removed, against bare integrator steps.

    python benchmarks/md_speed.py [--architectures et] [--molecules aspirin] [--threads 1] [--steps 200] [--runner]
"""

from __future__ import annotations

import sys

import argparse
import datetime
import json
import os
import platform as _platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit

from openmlff.md import ExportedModelCalculator, SimulationConfig, build_system, run_simulation
from openmlff.models import ARCHITECTURES
from openmlff.structures import load_structure
from openmlff.core.threads import set_threads
from openmlff.core.versions import processor_name

from pages import result_page  # noqa: E402  (benchmarks/pages.py)

MOLECULES = ("aspirin", "ac-ala3-nhme", "chignolin")
PATHS = ("floor", "torchforce", "torchforce-frozen", "pythonforce", "ase", "compiled-floor", "compiled")
TEMPERATURE_K = 500.0
TIMESTEP_FS = 0.5
ROUNDS = 5


@dataclass
class Timing:
    """Per-step cost in ms: wall time and process CPU time, each the best of the rounds."""

    wall_ms: float
    cpu_ms: float

    @property
    def ns_per_day(self) -> float:
        return TIMESTEP_FS * 1e-6 * 86400e3 / self.wall_ms


def interleaved(advances: dict, steps: int, rounds: int = ROUNDS) -> dict[str, Timing]:
    """Time each advance(n) callable for `steps` steps split into `rounds` rounds taken in turn (path A, B, ..., A, B,
    ...), so that every path sees the same load; per path the best round's wall and CPU time per step.

    An advance with a `reset` attribute is reset (untimed) before each round: MD paths restart from the
    starting structure and the floor from the first of their frames. A model's cost depends on the geometry
    (untrained ET on Ac-Ala3-NHMe: 17 ms per evaluation at the start, 12.5 ms 5 steps later, the untrained
    forces having moved atoms by 0.14 Å), so every path must see the same frames.
    """
    per_round = max(1, steps // rounds)
    best = {name: [float("inf"), float("inf")] for name in advances}
    for _ in range(rounds):
        for name, advance in advances.items():
            if hasattr(advance, "reset"):
                advance.reset()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            advance(per_round)
            wall, cpu = (time.perf_counter() - wall0) / per_round, (time.process_time() - cpu0) / per_round
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
    return {name: Timing(1000 * wall, 1000 * cpu) for name, (wall, cpu) in best.items()}


def export_untrained(architecture: str, atomic_numbers, path: Path) -> Path:
    from openmlff.model_file.writer import export_model
    from openmlff.models import build_model

    torch.manual_seed(0)
    return export_model(build_model(architecture).eval(), atomic_numbers, path)


def frozen_copy(model_path: Path, out_path: Path) -> Path:
    """The exported file with every parameter requires_grad=False (same metadata)."""
    extra = {"openmlff.json": ""}
    module = torch.jit.load(str(model_path), _extra_files=extra)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    torch.jit.save(module, str(out_path), _extra_files=extra)
    return out_path


def floor_stepper(model_path: Path, frames_nm: list[np.ndarray]):
    """Forward + gradient of the bare TorchScript module at the MD path's frames (frame k at call k of a round)."""
    module = torch.jit.load(str(model_path))
    module.eval()
    state = {"k": 0}

    def advance(n: int) -> None:
        for _ in range(n):
            x = torch.tensor(frames_nm[state["k"] % len(frames_nm)], dtype=torch.float64, requires_grad=True)
            torch.autograd.grad(module(x), x)
            state["k"] += 1

    def reset() -> None:
        state["k"] = 0

    advance(10)  # TorchScript profiling runs
    advance.reset = reset
    return advance


def compiled_floor_stepper(model_path: Path, frames_nm: list[np.ndarray]):
    """Forward + gradient of the compiled model at the MD path's frames, as the compiled backend calls it (its
    first call compiles: timed and printed)."""
    from openmlff.potentials.compiled import CompiledModelComputation

    computation = CompiledModelComputation(model_path)
    computation.energy_and_forces(frames_nm[0])
    print(f"# {model_path.stem}: compiled in {computation.compile_s:.1f} s (Inductor, cache "
          f"{os.environ.get('TORCHINDUCTOR_CACHE_DIR')})", flush=True)
    state = {"k": 0}

    def advance(n: int) -> None:
        for _ in range(n):
            computation.energy_and_forces(frames_nm[state["k"] % len(frames_nm)])
            state["k"] += 1

    def reset() -> None:
        state["k"] = 0

    advance.reset = reset
    return advance


def md_frames(model_path: Path, z, positions_nm, steps: int, threads: int) -> list[np.ndarray]:
    """Positions (nm) of the first `steps` steps of the TorchForce path's rounds, where the floor is evaluated."""
    advance = openmm_stepper(model_path, z, positions_nm, "torchforce", "CPU", threads, warmup_steps=0)
    frames = []
    for _ in range(steps):
        frames.append(advance.context.getState(getPositions=True).getPositions(asNumpy=True)._value.copy())
        advance(1)
    return frames


def openmm_stepper(model_path: Path, z, positions_nm, backend: str, platform_name: str, threads: int,
                   cuda_graphs: bool | None = None, seed: int = 1, warmup_steps: int = 20):
    from openmlff.md import torchforce_properties

    properties = None if cuda_graphs is None else torchforce_properties(cuda_graphs)
    system = build_system(z, model_path, backend=backend, torch_properties=properties)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * unit.kelvin, 1 / unit.picosecond,
                                                 TIMESTEP_FS * 1e-3 * unit.picoseconds)
    integrator.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName(platform_name)
    platform_properties = {"Threads": str(threads)} if platform_name == "CPU" else {}
    context = openmm.Context(system, integrator, platform, platform_properties)
    context.setPositions(positions_nm)
    context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, seed)
    integrator.step(warmup_steps)  # TorchScript profiling runs, CUDA graph capture

    def advance(n: int) -> None:
        integrator.step(n)
        context.getState(getEnergy=False)  # wait for a GPU to finish

    def reset() -> None:
        context.setPositions(positions_nm)
        context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, seed)

    advance.context = context  # keep the Context alive with the integrator
    advance.reset = reset
    return advance


def ase_stepper(model_path: Path, z, positions_angstrom):
    from ase import Atoms, units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    atoms = Atoms(numbers=z, positions=positions_angstrom)
    atoms.calc = ExportedModelCalculator(model_path)
    dynamics = Langevin(atoms, TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE_K, friction=0.001 / units.fs,
                        fixcm=False, rng=np.random.default_rng(1))
    dynamics.run(10)

    def advance(n: int) -> None:
        dynamics.run(n)

    def reset() -> None:
        atoms.set_positions(positions_angstrom)
        thermalize_momenta(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(1))

    advance.reset = reset
    return advance


def runner_per_step(model_path: Path, structure, steps: int, threads: int, monitor_interval: int | None,
                    folder: Path) -> float:
    """CPU ms per step in the steady state of openmlff.md.run_simulation (monitor_interval steps between
    checks; reports every 100 steps), or of bare integrator.step calls of 100 steps (monitor_interval None):
    the median over 100-step stretches after the first two (TorchScript warm-up excluded)."""
    stamps: list[float] = []
    if monitor_interval is None:  # the runner's trajectory: its OpenMM seed is seed + 1 = 2, no warm-up steps
        advance = openmm_stepper(model_path, structure.atomic_numbers, structure.positions_angstrom / 10, "torchforce",
                                 "CPU", threads, seed=2, warmup_steps=0)
        for _ in range(steps // 100):
            advance(100)
            stamps.append(time.process_time())
    else:
        out = folder / f"runner_{monitor_interval}"
        shutil.rmtree(out, ignore_errors=True)
        # an untrained model soon breaks bonds: limits no run reaches keep it going (a check costs the same)
        config = SimulationConfig(temperature_K=TEMPERATURE_K, timestep_fs=TIMESTEP_FS, steps=steps, seed=1,
                                  platform="CPU", report_interval_steps=100, monitor_interval_steps=monitor_interval,
                                  checkpoint_interval_steps=steps, torch_threads=threads,
                                  bond_deviation_limit_angstrom=1e3, min_nonbonded_distance_angstrom=1e-6,
                                  temperature_limit_K=1e9)
        summary = run_simulation(model_path, structure.atomic_numbers, structure.positions_angstrom, out, config,
                                 topology=structure.topology, progress=False,
                                 on_report=lambda record: stamps.append(time.process_time()))
        if summary.steps_completed != steps:
            raise RuntimeError(f"the runner benchmark stopped at step {summary.steps_completed}: "
                               f"{summary.collapse_message}")
    return 1000 * float(np.median(np.diff(stamps)[2:])) / 100


def check_costs(model_path: Path, structure, threads: int, repeats: int = 200) -> tuple[float, float]:
    """CPU ms of what the runner does at a check (positions and velocities, StabilityMonitor.check) and at a
    report (positions, energy and forces: one model evaluation; the check with them)."""
    from openmlff.md import StabilityMonitor

    advance = openmm_stepper(model_path, structure.atomic_numbers, structure.positions_angstrom / 10, "torchforce",
                             "CPU", threads)
    context = advance.context
    monitor = StabilityMonitor(structure.atomic_numbers, structure.positions_angstrom, TIMESTEP_FS)
    costs = []
    for full in (False, True):
        cpu0 = time.process_time()
        for _ in range(repeats if not full else repeats // 10):
            state = context.getState(getPositions=True, getVelocities=not full, getEnergy=full, getForces=full)
            positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
            forces = state.getForces(asNumpy=True)._value if full else None
            monitor.check(0, positions, state.getPotentialEnergy()._value if full else None, 300.0, forces)
        costs.append(1000 * (time.process_time() - cpu0) / (repeats if not full else repeats // 10))
    return costs[0], costs[1]


def row(architecture: str, molecule: str, n_atoms: int, path: str, timing: Timing, floor: Timing | None) -> str:
    def over(a: float, b: float) -> str:
        return f"{100 * (a / b - 1):+.1f}%"

    vs = ("floor", "floor") if floor is None or path == "floor" else (over(timing.wall_ms, floor.wall_ms),
                                                                      over(timing.cpu_ms, floor.cpu_ms))
    return (f"{architecture:<8} {molecule:<13} {n_atoms:>5} {path:<18} {timing.wall_ms:>9.3f} {timing.cpu_ms:>8.3f} "
            f"{timing.ns_per_day:>8.3f} {vs[0]:>9} {vs[1]:>9}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    p.add_argument("--molecules", nargs="+", default=list(MOLECULES))
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    p.add_argument("--platform", default="CPU", help="OpenMM platform for the torchforce/pythonforce paths")
    p.add_argument("--threads", type=int, default=1, help="torch (and OpenMM CPU platform) threads")
    p.add_argument("--steps", type=int, default=200, help="MD steps (or floor repetitions) per path")
    p.add_argument("--runner", action="store_true", help="also time run_simulation's overhead on aspirin")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    set_threads(args.threads)  # openmlff's production setting: these threads, denormals flushed to zero
    if args.platform == "CUDA":
        args.paths = [x for x in args.paths if x != "ase"] + ["torchforce-cudagraphs"]
    print(f"# MD speed, {datetime.datetime.now().isoformat(timespec='minutes')}, {_platform.node()}, "
          f"{processor_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch "
          f"{torch.__version__} ({args.threads} thread(s), denormals flushed to zero in every path, as openmlff runs "
          f"them: openmlff.core.threads.flush_denormals), openmm {openmm.__version__}")
    print(f"# untrained models, default CPU sizes; OpenMM platform {args.platform}; {TIMESTEP_FS} fs Langevin steps at "
          f"{TEMPERATURE_K:g} K; {args.steps} steps per path in {ROUNDS} interleaved rounds, each from the starting "
          "structure; ms/step = best round's wall time per step, cpu ms = best round's process CPU time per step; "
          "ns/day from ms/step; 'vs floor' against the TorchScript floor, for the compiled path against the compiled "
          "floor")
    header = (f"{'model':<8} {'molecule':<13} {'atoms':>5} {'path':<18} {'ms/step':>9} {'cpu ms':>8} {'ns/day':>8} "
              f"{'vs floor':>9} {'cpu vs fl':>9}")
    print(header)
    print("-" * len(header))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for architecture in args.architectures:
            for molecule in args.molecules:
                structure = load_structure(molecule)
                z, pos_angstrom = structure.atomic_numbers, structure.positions_angstrom
                pos_nm = pos_angstrom / 10.0
                try:
                    model = export_untrained(architecture, z, folder / f"{architecture}_{molecule}.pt")
                except Exception as exc:  # an architecture still being written, or one TorchScript cannot compile
                    print(f"# {architecture}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
                    break
                advances, frames = {}, None
                for path in args.paths:
                    if path in ("floor", "compiled-floor"):
                        frames = frames or md_frames(model, z, pos_nm, max(1, args.steps // ROUNDS), args.threads)
                        stepper = floor_stepper if path == "floor" else compiled_floor_stepper
                        advances[path] = stepper(model, frames)
                    elif path == "torchforce":
                        advances[path] = openmm_stepper(model, z, pos_nm, "torchforce", args.platform, args.threads)
                    elif path == "torchforce-frozen":
                        frozen = frozen_copy(model, folder / f"{architecture}_{molecule}_frozen.pt")
                        advances[path] = openmm_stepper(frozen, z, pos_nm, "torchforce", args.platform, args.threads)
                    elif path == "torchforce-cudagraphs":
                        advances[path] = openmm_stepper(model, z, pos_nm, "torchforce", args.platform, args.threads,
                                                        cuda_graphs=True)
                    elif path in ("pythonforce", "compiled"):
                        advances[path] = openmm_stepper(model, z, pos_nm, path, args.platform, args.threads)
                    else:
                        advances[path] = ase_stepper(model, z, pos_angstrom)
                timings = interleaved(advances, args.steps)
                floor = timings.get("floor")
                for path, timing in timings.items():
                    reference = timings.get("compiled-floor") if path == "compiled" else floor
                    print(row(architecture, molecule, len(z), path, timing, reference), flush=True)
                    results.append({"architecture": architecture, "molecule": molecule, "atoms": int(len(z)),
                                    "path": path, "ms_per_step": timing.wall_ms, "cpu_ms_per_step": timing.cpu_ms,
                                    "ns_per_day": timing.ns_per_day})
                del advances
        if args.runner:
            structure = load_structure("aspirin")
            model = export_untrained(args.architectures[0], structure.atomic_numbers, folder / "runner.pt")
            steps = max(args.steps, 800)
            print(f"\n# production runner overhead: {args.architectures[0]}, aspirin, CPU platform, reports (energy, "
                  f"forces, frame, state row) every 100 steps; CPU ms per step in the steady state ({steps} steps, "
                  "median of 100-step stretches, best of 2)")
            per_step = {}
            for _ in range(2):
                for label, interval in (("bare integrator.step(100)", None), ("run_simulation, checks only at reports", 100),
                                        ("run_simulation, checks every 10 steps", 10)):
                    cost = runner_per_step(model, structure, steps, args.threads, interval, folder)
                    per_step[label] = min(per_step.get(label, float("inf")), cost)
            bare = per_step["bare integrator.step(100)"]
            for label, cost in per_step.items():
                print(f"{label:<40} {cost:>8.3f} cpu ms/step ({100 * (cost / bare - 1):+.1f}%)")
            check, report = check_costs(model, structure, args.threads)
            print(f"{'one check (positions, velocities, monitor)':<40} {check:>8.3f} cpu ms: every 10 steps "
                  f"{100 * check / 10 / bare:.2f}% of a step's cost")
            print(f"{'one report (energy, forces, monitor)':<40} {report:>8.3f} cpu ms: every 100 steps "
                  f"{100 * report / 100 / bare:.2f}% of a step's cost")
            results.append({"path": "runner", "cpu_ms_per_step": per_step, "check_cpu_ms": check,
                            "report_cpu_ms": report})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    with result_page("md_speed", "MD speed: TorchForce, PythonForce and ASE against the model's floor"):
        code = main()
    sys.exit(code)
