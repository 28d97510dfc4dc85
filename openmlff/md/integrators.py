"""The integrators an MD run can use: Langevin middle (NVT), Nosé–Hoover chain (NVT) and velocity Verlet (NVE).

All three keep their whole state in OpenMM's checkpoint (Context.createCheckpoint): positions,
velocities, step count, the Langevin random-number state and the Nosé–Hoover chain's positions
and velocities, so a resumed run continues exactly (tested on the Reference and CPU platforms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import InputError
from ..core.units import FS_IN_PS

if TYPE_CHECKING:
    import openmm


@dataclass(frozen=True)
class IntegratorKind:
    """One integrator: its OpenMM class, ensemble and description (all three recorded in run.json)."""

    openmm_class: str
    ensemble: str
    description: str


#: Integrator names accepted by SimulationConfig.integrator.
INTEGRATORS = {
    "langevin_middle": IntegratorKind(
        "LangevinMiddleIntegrator", "NVT",
        "Langevin dynamics, BAOAB-type 'middle' splitting; coupling = friction (1/ps)"),
    "nose_hoover": IntegratorKind(
        "NoseHooverIntegrator", "NVT",
        "velocity Verlet with a Nosé–Hoover chain thermostat (chain of 3); coupling = collision frequency (1/ps)"),
    "verlet": IntegratorKind(
        "VerletIntegrator", "NVE",
        "leapfrog Verlet, constant energy; the temperature only sets the initial velocities"),
}


def make_integrator(name: str, temperature_K: float, coupling_per_ps: float, timestep_fs: float,
                    seed: int) -> openmm.Integrator:
    """The OpenMM integrator `name` (see INTEGRATORS). seed: OpenMM's random seed (Langevin noise; must not be 0,
    which OpenMM reads as 'pick one at random'). coupling_per_ps: the Langevin friction or the Nosé–Hoover
    collision frequency; unused by Verlet."""
    if name not in INTEGRATORS:
        raise InputError(f"unknown integrator {name!r}; expected one of {list(INTEGRATORS)}")
    import openmm  # here, so that INTEGRATORS is read without OpenMM (md/config.py)
    from openmm import unit

    dt = timestep_fs * FS_IN_PS * unit.picoseconds
    temperature = temperature_K * unit.kelvin
    if name == "langevin_middle":
        integrator = openmm.LangevinMiddleIntegrator(temperature, coupling_per_ps / unit.picosecond, dt)
        integrator.setRandomNumberSeed(int(seed))
        return integrator
    if name == "nose_hoover":
        return openmm.NoseHooverIntegrator(temperature, coupling_per_ps / unit.picosecond, dt)
    return openmm.VerletIntegrator(dt)
