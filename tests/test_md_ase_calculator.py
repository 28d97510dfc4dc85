"""openmlff.integrations.ase_calculator: the exported model in ASE gives TorchForce's energies and forces in eV and eV/Å,
and drives ASE's Langevin dynamics."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
from ase import Atoms, units
from ase.md.langevin import Langevin
from openmm import unit

from openmlff.md import ExportedModelCalculator, ModelFileError, build_system, select_platform
from openmlff.core.units import EV_IN_KJ_PER_MOL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_models import write_toy_model  # noqa: E402


def test_energies_and_forces_equal_torchforce_in_ase_units(toy_model, aspirin):
    positions = aspirin.positions_angstrom + np.random.default_rng(1).normal(scale=0.05, size=(21, 3))
    atoms = Atoms(numbers=aspirin.atomic_numbers, positions=positions)
    atoms.calc = ExportedModelCalculator(toy_model)
    energy_ev, forces_ev_per_angstrom = atoms.get_potential_energy(), atoms.get_forces()

    platform, properties = select_platform("Reference")
    context = openmm.Context(build_system(aspirin.atomic_numbers, toy_model), openmm.VerletIntegrator(0.001),
                             platform, properties)
    context.setPositions(positions / 10.0)
    state = context.getState(getEnergy=True, getForces=True)
    energy_kj = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces_kj_nm = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert energy_kj > 10.0  # off the minimum
    assert energy_ev == pytest.approx(energy_kj / EV_IN_KJ_PER_MOL, rel=1e-12)
    np.testing.assert_allclose(forces_ev_per_angstrom, forces_kj_nm / EV_IN_KJ_PER_MOL / 10.0, rtol=1e-10, atol=1e-12)


def test_forces_are_minus_the_gradient_of_the_energy_in_ase_units(toy_model, aspirin):
    atoms = Atoms(numbers=aspirin.atomic_numbers, positions=aspirin.positions_angstrom + 0.03)
    atoms.positions[5, 0] += 0.05
    atoms.calc = ExportedModelCalculator(toy_model)
    force = atoms.get_forces()[5, 0]
    h = 1e-5
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[5, 0] += sign * h
        moved.calc = ExportedModelCalculator(toy_model)
        energies.append(moved.get_potential_energy())
    assert force == pytest.approx(-(energies[0] - energies[1]) / (2 * h), rel=1e-5)


def test_ase_langevin_dynamics_runs_with_the_calculator(toy_model, aspirin):
    atoms = Atoms(numbers=aspirin.atomic_numbers, positions=aspirin.positions_angstrom)
    atoms.calc = ExportedModelCalculator(toy_model)
    dynamics = Langevin(atoms, 0.5 * units.fs, temperature_K=500, friction=0.01 / units.fs, fixcm=False,
                        rng=np.random.default_rng(0))
    dynamics.run(50)
    assert np.abs(atoms.positions - aspirin.positions_angstrom).max() > 1e-3
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_potential_energy() > 0.0


def test_atoms_of_another_molecule_are_refused_naming_the_model(toy_model):
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.calc = ExportedModelCalculator(toy_model)
    with pytest.raises(ModelFileError, match=toy_model.name):
        atoms.get_potential_energy()
