"""What serving a model from another environment costs (openmlff.reference.served): milliseconds per call and per MD
step, the model in its own environment against the same model answering openmlff over ASE's socket (i-PI).

Two models, each timed both ways in one run, one thread everywhere:
- ASE's Lennard-Jones calculator (microseconds of work): the round trip itself, in-process against served from
  .venv-mace;
- a small MACE model of aspirin (trained here by mace_run_train for 60 epochs on 12 shipped frames; 8 channels,
  max_L 0, float64): timed in .venv-mace by calculator_timing.py, and served to openmlff (metrics' frame-by-frame
  evaluation, and `openmlff simulate` steps: the socket inside every MD step).

    python benchmarks/served_models.py [--calls 300] [--steps 400] [--out results/served_models]

Needs the backend environments (bash protocols/backend_envs.sh mace). Prints a table and writes
docs/benchmarks/served_models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pages import processor, result_page  # benchmarks/pages.py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MACE_PYTHON = ROOT / ".venv-mace" / "bin" / "python"
SHIPPED = ROOT / "openmlff" / "resources" / "datasets" / "rmd17_aspirin_1200.extxyz"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _frames(out: Path) -> Path:
    path = out / "aspirin15.extxyz"
    path.write_text("".join(SHIPPED.read_text().splitlines(keepends=True)[:15 * 23]))
    Path(f"{path}.units.json").write_text(Path(f"{SHIPPED}.units.json").read_text())  # eV and Å, as shipped
    return path


def _mace_model(out: Path, frames: Path) -> Path:
    model = out / "tiny.model"
    if not model.is_file():
        subprocess.run([str(MACE_PYTHON.parent / "mace_run_train"), "--name=tiny", "--seed=1", f"--train_file={frames}",
                        "--valid_fraction=0.2", "--energy_key=energy", "--forces_key=forces", "--E0s=average",
                        "--model=MACE", "--num_channels=8", "--max_L=0", "--r_max=4.0", "--num_interactions=2",
                        "--correlation=2", "--batch_size=4", "--valid_batch_size=4", "--max_num_epochs=60",
                        "--lr=0.02", "--default_dtype=float64", "--device=cpu", "--num_workers=0", "--save_cpu"],
                       cwd=out, env=ONE_THREAD, check=True, capture_output=True)
    return model


def _own_environment_ms(python: Path, target: str, options: dict, frames: Path, calls: int) -> float:
    done = subprocess.run([str(python), str(HERE / "calculator_timing.py"), target, json.dumps(options), str(frames),
                           str(calls)], env=ONE_THREAD, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["ms_per_call"]


def _openmlff_ms(ref, frames: Path, calls: int) -> float:
    """ms per call of openmlff's evaluation of the model (the served environment started by a first call)."""
    from openmlff.data import load_dataset
    from openmlff.potentials import get_potential

    data = load_dataset(frames)
    potential = get_potential(ref)
    rng = np.random.default_rng(0)
    potential.energies_and_forces(data.z, data.R[:1])
    t0 = time.perf_counter()
    for _ in range(calls):
        potential.energies_and_forces(data.z, data.R[:1] + rng.normal(0.0, 0.01, data.R[:1].shape))
    return (time.perf_counter() - t0) / calls * 1e3


def _md_ms_per_step(ref, frames: Path, out: Path, steps: int) -> float:
    from openmlff.data import load_dataset
    from openmlff.md import SimulationConfig, run_simulation

    data = load_dataset(frames)
    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time: a finished one would only be read back
    cfg = SimulationConfig(temperature_K=300.0, timestep_fs=0.5, steps=steps, seed=1, platform="CPU",
                           report_interval_steps=100, checkpoint_interval_steps=steps, torch_threads=1)
    summary = run_simulation(ref, data.z, data.R[0], out, cfg, progress=False)
    return summary.wall_time_s / max(1, summary.steps_completed) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", default=str(ROOT / "results" / "served_models"))
    args = parser.parse_args()
    if not MACE_PYTHON.is_file():
        print(f"{MACE_PYTHON} is missing: bash protocols/backend_envs.sh mace", file=sys.stderr)
        return 2
    import torch

    from openmlff.potentials import ModelRef

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = _frames(out)
    lj = {"sigma": 3.0, "epsilon": 0.01, "rc": 8.0}
    rows = []
    own = _openmlff_ms(ModelRef("ase:ase.calculators.lj:LennardJones", lj, allow_code=True), frames, args.calls)
    served = _openmlff_ms(ModelRef("ase:ase.calculators.lj:LennardJones", {**lj, "python": str(MACE_PYTHON)},
                                   allow_code=True), frames, args.calls)
    rows.append(("Lennard-Jones (ASE)", "openmlff's process", own, "served from .venv-mace", served))
    model = _mace_model(out, frames)
    options = {"model_paths": str(model), "device": "cpu", "default_dtype": "float64"}
    target = "mace.calculators:MACECalculator"
    own = _own_environment_ms(MACE_PYTHON, target, options, frames, args.calls)
    ref = ModelRef("ase:" + target, {**options, "python": str(MACE_PYTHON)}, allow_code=True)
    served = _openmlff_ms(ref, frames, args.calls)
    rows.append(("MACE (8 channels, max_L 0)", ".venv-mace, in process", own, "served to openmlff", served))
    step = _md_ms_per_step(ref, frames, out / "md_mace", args.steps)
    lines = ["# Served models: the cost of the socket (benchmarks/served_models.py)", "",
             f"{processor()}, {os.cpu_count()} cores, one thread per process, "
             f"{time.strftime('%Y-%m-%d')}; {args.calls} energy-and-forces calls of aspirin (21 atoms) each way.", "",
             "| model | where | ms/call | where | ms/call | difference (ms/call) |",
             "|---|---|---|---|---|---|"]
    for name, where_a, a, where_b, b in rows:
        lines.append(f"| {name} | {where_a} | {a:.3f} | {where_b} | {b:.3f} | {b - a:+.3f} |")
    lines += ["", "The Lennard-Jones row times one calculator through openmlff's per-frame path both ways: the "
                  "difference is the socket's round trip. The MACE row compares MACE alone in its environment with "
                  "openmlff's whole path to it: the round trip plus that per-frame path (a reference-method call: "
                  "input checks, a new ASE Atoms each frame).",
              "", f"`openmlff simulate` with the served MACE model ({args.steps} steps, CPU platform, 0.5 fs): "
                  f"{step:.2f} ms per step ({0.5e-6 * 86400e3 / step:.3f} ns/day)."]
    print("\n".join(lines[2:]))  # the page's title and date are pages.py's
    return 0


if __name__ == "__main__":
    with result_page("served_models", "Served models: the cost of the socket", markdown=True):
        code = main()
    sys.exit(code)
