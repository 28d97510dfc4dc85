"""MD speed of an exported model in OpenMM against the floor: one bare forward + backward pass.

Prints a table (ms per step, ns/day, overhead over the floor) for TorchForce and PythonForce on
the chosen OpenMM platform, for each torch thread count asked for. Without --model it exports an
untrained ET of the default CPU size for aspirin (speed does not depend on the weights).

    python benchmarks/md_speed.py [--model results/quickstart_aspirin/model.pt] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit

from openmlff.export import export_potential, load_exported
from openmlff.md.system import build_system
from openmlff.structures import load_structure


def bare_forward_backward_ms(module, positions_nm: np.ndarray, repeats: int) -> float:
    """Median time of energy + gradient of the TorchScript module on one frame (float64 input, as TorchForce gives)."""
    times = []
    for k in range(repeats + 10):
        pos = torch.tensor(positions_nm, dtype=torch.float64, requires_grad=True)
        t0 = time.perf_counter()
        energy = module(pos)
        energy.backward()
        if k >= 10:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def md_ms_per_step(model_path: Path, z, positions_nm, backend: str, platform_name: str, steps: int) -> float:
    system = build_system(z, model_path, backend=backend)
    integrator = openmm.LangevinMiddleIntegrator(500 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform_name))
    context.setPositions(positions_nm)
    context.setVelocitiesToTemperature(500 * unit.kelvin, 1)
    integrator.step(20)
    t0 = time.perf_counter()
    integrator.step(steps)
    context.getState(getEnergy=True)
    return 1000 * (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="exported model (default: untrained ET, CPU preset, for aspirin)")
    p.add_argument("--structure", default="aspirin", help="built-in structure or file (default aspirin)")
    p.add_argument("--platform", default="CPU")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args(argv)

    structure = load_structure(args.structure)
    z, pos_nm = structure.atomic_numbers, structure.positions_angstrom / 10.0
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(args.model) if args.model else None
        if model_path is None:
            from openmlff.models import build_potential

            torch.manual_seed(0)
            model_path = export_potential(build_potential("et").eval(), z, Path(tmp) / "et_untrained.pt")
        module, meta = load_exported(model_path)
        print(f"# MD speed, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} default torch threads, torch {torch.__version__}, openmm {openmm.__version__}")
        print(f"# model {meta['architecture']} {meta['hyperparameters']} ({meta['parameters']} parameters, {meta['dtype']}); "
              f"{structure.name}, {len(z)} atoms; platform {args.platform}; 0.5 fs Langevin steps")
        header = f"{'threads':>7} {'path':<28} {'ms/step':>9} {'ns/day':>8} {'vs floor':>9}"
        print(header)
        print("-" * len(header))
        for threads in args.threads:
            torch.set_num_threads(threads)
            floor = bare_forward_backward_ms(module, pos_nm, args.repeats)
            print(f"{threads:>7} {'bare forward+backward':<28} {floor:>9.3f} {_ns_per_day(floor):>8.2f} {'floor':>9}")
            for backend in ("torchforce", "pythonforce"):
                ms = md_ms_per_step(model_path, z, pos_nm, backend, args.platform, args.steps)
                print(f"{threads:>7} {'OpenMM ' + backend:<28} {ms:>9.3f} {_ns_per_day(ms):>8.2f} {100 * (ms / floor - 1):>+8.1f}%")
    return 0


def _ns_per_day(ms_per_step: float, timestep_fs: float = 0.5) -> float:
    return timestep_fs * 1e-6 * (86400e3 / ms_per_step)


if __name__ == "__main__":
    raise SystemExit(main())
