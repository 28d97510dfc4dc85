"""MD step time of a TorchScript energy module in OpenMM, and its bare forward + backward: one yardstick
for openmlff's models and the peers' (benchmarks/peers.py), importable from either virtual environment
(it needs only torch, openmm and openmmtorch).

The module takes positions (n_atoms, 3) in nm and returns the energy in kJ/mol, as openmm-torch
expects. MD: the module as the System's only force (TorchForce, CPU platform), LangevinMiddleIntegrator
at 300 K, friction 1/ps, 0.5 fs; the best of `rounds` rounds of `steps` steps. Floor: forward +
torch.autograd.grad(energy, positions) of the same module from Python, denormals flushed as openmlff runs
models (benchmarks/denormals.py), best of `rounds` rounds.
"""

from __future__ import annotations

import time

import numpy as np


def md_ms_per_step(module_path: str, atomic_numbers, positions_angstrom, steps: int = 200, rounds: int = 3,
                   threads: int = 1, outputs_forces: bool = False) -> float:
    """Wall ms per 0.5 fs Langevin step with the module in openmmtorch.TorchForce on OpenMM's CPU platform
    (`outputs_forces`: the module returns (energy, forces in kJ/mol/nm) instead of the energy alone)."""
    import openmm
    import openmmtorch
    from openmm import app

    system = openmm.System()
    for z in atomic_numbers:
        system.addParticle(app.Element.getByAtomicNumber(int(z)).mass)
    force = openmmtorch.TorchForce(str(module_path))
    force.setOutputsForces(outputs_forces)
    system.addForce(force)
    return system_md_ms_per_step(system, positions_angstrom, steps=steps, rounds=rounds, threads=threads)


def system_md_ms_per_step(system, positions_angstrom, steps: int = 200, rounds: int = 3, threads: int = 1) -> float:
    """Wall ms per 0.5 fs Langevin step of any OpenMM System on the CPU platform: best of `rounds` rounds."""
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads)})
    start = np.asarray(positions_angstrom, dtype=np.float64) * 0.1
    best = float("inf")
    for _ in range(rounds):
        context.setPositions(start)
        context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
        integrator.step(5)  # warm-up: the first calls of a TorchScript module are slow
        t0 = time.perf_counter()
        integrator.step(steps)
        context.getState(getEnergy=True)
        best = min(best, (time.perf_counter() - t0) / steps * 1e3)
    return best


def best_ms(call, calls: int = 100, rounds: int = 3) -> float:
    """Wall ms of one `call()`, best of `rounds` rounds of `calls` calls after 5 warm-up calls, denormals flushed
    as openmlff runs models (benchmarks/denormals.py)."""
    import torch

    torch.set_flush_denormal(True)
    for _ in range(5):
        call()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - t0) / calls * 1e3)
    return best


def floor_ms(module_path: str, positions_angstrom, calls: int = 100, rounds: int = 3) -> float:
    """Wall ms of one forward + autograd.grad of the module at the start geometry (float64 nm, as TorchForce)."""
    import torch

    module = torch.jit.load(str(module_path))
    pos = torch.tensor(np.asarray(positions_angstrom, dtype=np.float64) * 0.1, requires_grad=True)
    return best_ms(lambda: torch.autograd.grad(module(pos), pos), calls, rounds)
