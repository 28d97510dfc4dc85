"""Replica throughput: N copies of a molecule in one OpenMM Context against separate Contexts, in replica-steps/s.

For each architecture and molecule (built-in aspirin, 21 atoms; chignolin, 166) an untrained model of the default
CPU size is exported (speed does not depend on the weights) and stepped with 0.5 fs Langevin steps at 500 K:

  separate   one lone Context (openmlff.md.build_system), as a campaign runs a run today: one run per worker,
             --threads threads each; replica-steps/s = 1000 / ms per step. A machine with C cores runs
             C / threads such workers, and so C / threads times this; a batch worker the same multiple of its
             own row, so the ratio per worker is the ratio per machine
  batch N    N copies in one Context (write_replica_module + build_replica_system: one batched model call per
             step), N = 1, 2, 4, ..., 64; replica-steps/s = N * 1000 / ms per step
  (CUDA)     with --platform CUDA, every TorchForce row also with TorchForce's CUDA graphs (useCUDAGraphs)
  compiled   every row again with the compiled backend (PythonForce of the model compiled by Inductor; the batch
             compiles the batched model); 'x separate' is always against one lone TorchForce Context

Every copy starts from the built-in structure with velocities of its own seed. The rows of one model and molecule
are timed in interleaved rounds (md_speed.interleaved: every row sees the same load), each round starting again
from the start; per row the best round. A round of batch N takes max(2, --steps / N) steps, so a 64-copy
chignolin row stays affordable on a CPU.

With --runner, the production path on aspirin ET: openmlff.md.run_replicas with 8 copies against 8 separate
openmlff.md.run_simulation runs one after the other (same steps, seeds and reports, monitor limits no untrained
model reaches), wall seconds each including their set-up.

    python benchmarks/replicas.py [--architectures et] [--molecules aspirin] [--replicas 1 8] [--threads 1]
                                  [--steps 64] [--platform CUDA] [--runner] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from md_speed import TEMPERATURE_K, TIMESTEP_FS, export_untrained, interleaved  # noqa: E402

from openmlff.md import (SimulationConfig, build_replica_system, build_system, run_replicas,  # noqa: E402
                         run_simulation, torchforce_properties, write_replica_module)
from openmlff.models import ARCHITECTURES  # noqa: E402
from openmlff.structures import load_structure  # noqa: E402
from openmlff.core.versions import processor_name  # noqa: E402

from pages import result_page  # noqa: E402  (benchmarks/pages.py)

MOLECULES = ("aspirin", "chignolin")
REPLICAS = (1, 2, 4, 8, 16, 32, 64)
ROUNDS = 3


def stepper(system: openmm.System, positions_nm: np.ndarray, copies: int, platform_name: str, threads: int,
            steps_per_round: int, warmup_steps: int = 4):
    """advance(n) stepping `system` (`copies` copies of positions_nm) `steps_per_round` steps whatever n is asked;
    reset() puts every copy back at the start with the same Maxwell-Boltzmann draw (seed 1)."""
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * unit.kelvin, 1 / unit.picosecond,
                                                 TIMESTEP_FS * 1e-3 * unit.picoseconds)
    integrator.setRandomNumberSeed(1)
    platform = openmm.Platform.getPlatformByName(platform_name)
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads)} if platform_name == "CPU" else {})
    start = np.tile(positions_nm, (copies, 1))

    def reset() -> None:
        context.setPositions(start)
        context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, 1)

    def advance(_n: int) -> None:
        integrator.step(steps_per_round)
        context.getState(getEnergy=False)  # wait for a GPU to finish

    reset()
    integrator.step(warmup_steps)  # TorchScript profiling runs, CUDA graph capture
    advance.reset, advance.context, advance.steps = reset, context, steps_per_round
    return advance


def throughput_rows(architecture: str, molecule: str, counts, threads: int, steps: int, platform_name: str,
                    folder: Path, backends=("torchforce",)) -> list[dict]:
    structure = load_structure(molecule)
    z, pos_nm = structure.atomic_numbers, structure.positions_angstrom / 10.0
    model = export_untrained(architecture, z, folder / f"{architecture}_{molecule}.pt")
    module = write_replica_module(model, len(z), folder / f"{architecture}_{molecule}_replicas.pt")
    variants = [(b, None) for b in backends] if platform_name == "CPU" else \
        [(b, g) for b in backends for g in ((False, True) if b == "torchforce" else (None,))]
    warmup = 4 if platform_name == "CPU" else 14  # TorchScript's profiling runs; on CUDA also the graph capture
    advances, meta = {}, {}
    for backend, graphs in variants:
        properties = None if graphs is None else torchforce_properties(graphs)
        tag = ("" if backend == "torchforce" else f" {backend}") + ("" if graphs is None else (" graphs" if graphs else
                                                                                                " plain"))
        name = "separate" + tag
        advances[name] = stepper(build_system(z, model, backend=backend, torch_properties=properties), pos_nm, 1,
                                 platform_name, threads, steps, warmup)
        meta[name] = ("separate", 1, graphs, backend)
        for n in counts:
            name = f"batch {n}{tag}"
            system = build_replica_system(z, module, n, backend=backend, torch_properties=properties, model_path=model)
            advances[name] = stepper(system, pos_nm, n, platform_name, threads, max(2, steps // n), warmup)
            meta[name] = ("batch", n, graphs, backend)
    timings = interleaved(advances, ROUNDS, rounds=ROUNDS)  # each advance takes its own steps per round
    rows = []
    for name, timing in timings.items():
        per_step = timing.wall_ms / advances[name].steps  # interleaved divides by the 1 step per round it asked
        cpu_per_step = timing.cpu_ms / advances[name].steps
        kind, n, graphs, backend = meta[name]
        rows.append({"architecture": architecture, "molecule": molecule, "atoms": len(z), "path": name, "kind": kind,
                     "replicas": n, "cuda_graphs": graphs, "backend": backend, "ms_per_step": per_step,
                     "cpu_ms_per_step": cpu_per_step, "replica_steps_per_s": n * 1000.0 / per_step})
    for row in rows:  # against one lone TorchForce Context (graphs as this row where it has them): today's path
        base = next(r for r in rows if r["kind"] == "separate" and r["backend"] == "torchforce"
                    and r["cuda_graphs"] == (row["cuda_graphs"] if row["backend"] == "torchforce" else variants[0][1]))
        row["vs_separate"] = row["replica_steps_per_s"] / base["replica_steps_per_s"]
    return rows


def runner_rows(threads: int, steps: int, copies: int, folder: Path) -> list[dict]:
    """Wall seconds of run_replicas with `copies` copies against `copies` run_simulation runs (aspirin, ET)."""
    structure = load_structure("aspirin")
    z = structure.atomic_numbers
    model = export_untrained("et", z, folder / "runner_et.pt")
    config = SimulationConfig(temperature_K=TEMPERATURE_K, timestep_fs=TIMESTEP_FS, steps=steps, seed=1, platform="CPU",
                              report_interval_steps=100, monitor_interval_steps=10, checkpoint_interval_steps=steps,
                              torch_threads=threads, bond_deviation_limit_angstrom=1e3,
                              min_nonbonded_distance_angstrom=1e-6, temperature_limit_K=1e9)
    starts = np.repeat(structure.positions_angstrom[None], copies, axis=0)
    t0 = time.perf_counter()
    for k in range(copies):
        summary = run_simulation(model, z, starts[k], folder / f"lone_{k}", SimulationConfig(**{**config.__dict__,
                                 "seed": 1 + k}), topology=structure.topology, progress=False)
        if summary.steps_completed != steps:
            raise RuntimeError(f"lone run {k} stopped at step {summary.steps_completed}: {summary.collapse_message}")
    lone_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summaries = run_replicas(model, z, starts, folder / "batch", config, topology=structure.topology, progress=False)
    batch_s = time.perf_counter() - t0
    if any(s.steps_completed != steps for s in summaries):
        raise RuntimeError("a replica stopped early: " + "; ".join(str(s.collapse_message) for s in summaries))
    return [{"path": f"{copies} x run_simulation", "wall_s": lone_s, "replica_steps_per_s": copies * steps / lone_s},
            {"path": f"run_replicas {copies}", "wall_s": batch_s, "replica_steps_per_s": copies * steps / batch_s,
             "vs_separate": lone_s / batch_s}]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    p.add_argument("--molecules", nargs="+", default=list(MOLECULES))
    p.add_argument("--replicas", nargs="+", type=int, default=list(REPLICAS))
    p.add_argument("--platform", default="CPU", choices=("CPU", "CUDA"))
    p.add_argument("--threads", type=int, default=1, help="torch (and OpenMM CPU platform) threads per Context")
    p.add_argument("--steps", type=int, default=64, help="steps per round of a lone Context (batch N: steps / N, >= 2)")
    p.add_argument("--backends", nargs="+", default=["torchforce", "compiled"], choices=("torchforce", "compiled"),
                   help="how OpenMM calls the model: TorchForce, or PythonForce of the Inductor-compiled model")
    p.add_argument("--runner", action="store_true", help="also time run_replicas against run_simulation runs")
    p.add_argument("--runner-steps", type=int, default=1000)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"# replica throughput, {datetime.datetime.now().isoformat(timespec='minutes')}, {processor_name()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__} "
          f"({args.threads} thread(s) per Context), openmm {openmm.__version__}, platform {args.platform}")
    print(f"# untrained models, default CPU sizes; {TIMESTEP_FS} fs Langevin steps at {TEMPERATURE_K:g} K; "
          f"{ROUNDS} interleaved rounds from the start, best round; a round is {args.steps} steps of a lone Context "
          "and max(2, steps / N) of a batch of N; replica-steps/s = N * 1000 / (ms per step); x separate = the "
          "ratio to one lone TorchForce Context on the same threads (per worker, and so per machine)")
    header = (f"{'model':<8} {'molecule':<10} {'atoms':>5} {'path':<18} {'ms/step':>10} {'cpu ms':>10} "
              f"{'replica-steps/s':>16} {'x separate':>10}")
    print(header)
    print("-" * len(header))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for architecture in args.architectures:
            for molecule in args.molecules:
                try:
                    found = throughput_rows(architecture, molecule, args.replicas, args.threads, args.steps,
                                            args.platform, folder, args.backends)
                except torch.cuda.OutOfMemoryError as exc:
                    print(f"# {architecture} {molecule}: out of GPU memory ({str(exc).splitlines()[0][:100]})")
                    continue
                for r in found:
                    print(f"{architecture:<8} {molecule:<10} {r['atoms']:>5} {r['path']:<18} {r['ms_per_step']:>10.3f} "
                          f"{r['cpu_ms_per_step']:>10.3f} {r['replica_steps_per_s']:>16.1f} {r['vs_separate']:>9.2f}x",
                          flush=True)
                rows += found
        if args.runner:
            print(f"# production path, aspirin ET: {args.runner_steps} steps per copy, reports every 100 steps, "
                  "checks every 10; wall seconds including set-up")
            for r in runner_rows(args.threads, args.runner_steps, 8, folder):
                ratio = f"{r['vs_separate']:.2f}x" if "vs_separate" in r else "1.00x"
                print(f"{'et':<8} {'aspirin':<10} {21:>5} {r['path']:<18} {r['wall_s']:>9.1f}s {'':>10} "
                      f"{r['replica_steps_per_s']:>16.1f} {ratio:>10}", flush=True)
                rows.append({"architecture": "et", "molecule": "aspirin", **r})
    if args.json:
        Path(args.json).write_text(json.dumps({"processor": processor_name(), "threads": args.threads,
                                               "platform": args.platform, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    with result_page("replicas", "Replica throughput: N copies in one Context against separate Contexts"):
        code = main()
    sys.exit(code)
