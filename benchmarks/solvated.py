"""MD speed in water: the model alone in vacuum, the model on the molecule with amber14 + TIP3P-FB around it
(mixed ML/MM, openmlff.md.environment), and amber14 + TIP3P-FB alone in the same box, side by side.

For each architecture and molecule (Ac-Ala3-NHMe 42 atoms, chignolin 166 atoms) an untrained model of the
default CPU size is exported (speed does not depend on the weights) and the Systems that `openmlff simulate`
builds (vacuum; `--solvate PADDING`; `--model amber14 --solvate PADDING`) are stepped in bare OpenMM Contexts
(CPU platform, 1 thread, 0.5 fs Langevin at 300 K, NVT; --pressure adds the Monte Carlo barostat), in
interleaved rounds (benchmarks/md_speed.py `interleaved`): ms per step (best round's wall time), ns/day.
An untrained model's forces move atoms fast, so each round restarts from the relaxed start.

    python benchmarks/solvated.py [--architectures et] [--molecules ac-ala3-nhme chignolin] [--padding-nm 1.0]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import openmm
import torch
from openmm import unit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from md_speed import export_untrained, interleaved  # noqa: E402

from openmlff.md import SimulationConfig, build_system  # noqa: E402
from openmlff.md.environment import build_environment_system, prepare_environment  # noqa: E402
from openmlff.models import ARCHITECTURES  # noqa: E402
from openmlff.potentials import get_potential  # noqa: E402
from openmlff.structures import load_structure  # noqa: E402
from openmlff.core.threads import set_threads  # noqa: E402
from openmlff.core.versions import processor_name  # noqa: E402

from pages import result_page  # noqa: E402  (benchmarks/pages.py)

TIMESTEP_FS = 0.5
TEMPERATURE_K = 300.0


def stepper(system: openmm.System, positions_nm, seed: int = 1):
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * unit.kelvin, 1 / unit.picosecond,
                                                 TIMESTEP_FS * 1e-3 * unit.picoseconds)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1", "DeterministicForces": "true"})
    box = system.getDefaultPeriodicBoxVectors()

    def reset() -> None:
        context.setPeriodicBoxVectors(*box)
        context.setPositions(positions_nm)
        context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, seed)

    def advance(n: int) -> None:
        integrator.step(n)

    reset()
    integrator.step(5)  # TorchScript's profiling calls
    advance.reset, advance.context = reset, context
    return advance


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architectures", nargs="+", default=["et"], choices=list(ARCHITECTURES))
    p.add_argument("--molecules", nargs="+", default=["ac-ala3-nhme", "chignolin"])
    p.add_argument("--padding-nm", type=float, default=1.0)
    p.add_argument("--pressure", type=float, default=None, help="bar: NPT with a Monte Carlo barostat")
    p.add_argument("--steps", type=int, default=50, help="steps per path over the rounds")
    args = p.parse_args(argv)
    set_threads(1)
    print(f"# solvated MD speed: {datetime.datetime.now().isoformat(timespec='minutes')}, {processor_name()}, torch "
          f"{torch.__version__} (1 thread, denormals flushed), OpenMM {openmm.__version__} CPU platform 1 thread, "
          f"{TIMESTEP_FS} fs Langevin at {TEMPERATURE_K:g} K, padding {args.padding_nm} nm TIP3P-FB, PME cutoff 1.0 nm,"
          f" {'NPT ' + str(args.pressure) + ' bar' if args.pressure else 'NVT'}; untrained models of the CPU size")
    print(f"{'model':<7} {'molecule':<13} {'path':<8} {'atoms':>6} {'ms/step':>9} {'ns/day':>8} {'vs vacuum':>9}")
    config = SimulationConfig(solvate_padding_nm=args.padding_nm, pressure_bar=args.pressure,
                              temperature_K=TEMPERATURE_K)
    with tempfile.TemporaryDirectory() as tmp:
        for molecule in args.molecules:
            structure = load_structure(molecule)
            environment = prepare_environment(structure, config)
            positions_nm = environment.positions_angstrom / 10.0
            amber = build_environment_system(get_potential("amber14"), environment, config)
            for architecture in args.architectures:
                model = export_untrained(architecture, structure.atomic_numbers, Path(tmp) / f"{architecture}.pt")
                paths = {"vacuum": stepper(build_system(structure.atomic_numbers, model),
                                           environment.positions_angstrom[environment.ml_atoms] / 10.0),
                         "mixed": stepper(build_environment_system(get_potential(model), environment, config),
                                          positions_nm),
                         "amber14": stepper(amber, positions_nm)}
                atoms = {"vacuum": structure.n_atoms, "mixed": len(environment.atomic_numbers),
                         "amber14": len(environment.atomic_numbers)}
                timings = interleaved(paths, args.steps)
                for name, timing in timings.items():
                    ratio = timing.wall_ms / timings["vacuum"].wall_ms
                    print(f"{architecture:<7} {molecule:<13} {name:<8} {atoms[name]:>6} {timing.wall_ms:>9.2f} "
                          f"{TIMESTEP_FS * 86.4 / timing.wall_ms:>8.3f} {ratio:>8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    with result_page("solvated", "MD speed in water (mixed ML/MM) against vacuum"):
        code = main()
    sys.exit(code)
