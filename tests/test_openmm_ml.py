"""The openmm-ml plugin (openmlff/integrations/openmm_ml.py): MLPotential('openmlff') found through the entry point, createSystem
and createMixedSystem with TorchForce and PythonForce, energies and forces matched to openmlff's own System."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

openmmml = pytest.importorskip("openmmml")

from openmlff.md import ModelFileError, build_system  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from untrained_model import write_untrained_et  # noqa: E402


@pytest.fixture(scope="module")
def et_model(test_data, tmp_path_factory):
    from openmlff.data import load_dataset

    dataset = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")
    return write_untrained_et(tmp_path_factory.mktemp("openmm_ml") / "et.pt", dataset)


def _state(system, positions_nm):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions_nm)
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), state.getForces(asNumpy=True)._value


def _water_then_aspirin(aspirin, n_waters: int = 2):
    """A Topology of n_waters waters (first) and aspirin (after them), positions in nm; the waters 3 nm away."""
    topology = app.Topology()
    chain = topology.addChain()
    positions = []
    angle = np.radians(104.52)
    water = np.array([[0.0, 0.0, 0.0], [0.09572, 0.0, 0.0], [0.09572 * np.cos(angle), 0.09572 * np.sin(angle), 0.0]])
    for k in range(n_waters):
        residue = topology.addResidue("HOH", chain)
        o = topology.addAtom("O", app.element.oxygen, residue)
        h1 = topology.addAtom("H1", app.element.hydrogen, residue)
        h2 = topology.addAtom("H2", app.element.hydrogen, residue)
        topology.addBond(o, h1)
        topology.addBond(o, h2)
        positions.append(water + np.array([3.0 + 0.5 * k, 0.0, 0.0]))
    residue = topology.addResidue("AIN", chain)
    for atom in aspirin.topology.atoms():
        topology.addAtom(atom.name, atom.element, residue)
    positions.append(aspirin.positions_angstrom / 10.0)
    return topology, np.concatenate(positions)


def _mm_system(topology, n_waters: int):
    """A classical System: water O-H springs at their rest lengths, aspirin springs on its first bonds, and a
    NonbondedForce in which only aspirin's atoms carry charges (so the waters feel nothing from the ML atoms but
    what the embedding leaves)."""
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    bonds = openmm.HarmonicBondForce()
    for k in range(n_waters):
        bonds.addBond(3 * k, 3 * k + 1, 0.09572, 4e5)
        bonds.addBond(3 * k, 3 * k + 2, 0.09572, 4e5)
    first = 3 * n_waters
    bonds.addBond(first, first + 1, 0.14, 3e5)  # inside the ML region: the embedding must remove it
    system.addForce(bonds)
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for atom in topology.atoms():
        charge = 0.0 if atom.residue.name == "HOH" else (0.2 if atom.index % 2 else -0.2)
        nonbonded.addParticle(charge, 0.3, 0.0)
    system.addForce(nonbonded)
    return system


def test_create_system_matches_openmlffs_own_system(aspirin, et_model):
    from openmmml import MLPotential

    potential = MLPotential("openmlff", modelPath=str(et_model))
    positions = aspirin.positions_angstrom / 10.0
    own = _state(build_system(aspirin.atomic_numbers, et_model), positions)
    torchforce = _state(potential.createSystem(aspirin.topology), positions)
    assert torchforce[0] == own[0] and np.array_equal(torchforce[1], own[1])  # the same file in the same TorchForce
    pythonforce = _state(potential.createSystem(aspirin.topology, backend="pythonforce"), positions)
    assert pythonforce[0] == pytest.approx(own[0], abs=1e-6)
    np.testing.assert_allclose(pythonforce[1], own[1], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_mixed_system_puts_the_model_on_the_ml_atoms(aspirin, et_model, backend):
    """Waters first, aspirin after them: the model sees the aspirin atoms (a subset at an offset); the mechanical
    embedding removes the MM terms inside aspirin and keeps the waters' own springs."""
    from openmmml import MLPotential

    topology, positions = _water_then_aspirin(aspirin)
    ml_atoms = list(range(6, 6 + aspirin.n_atoms))
    mixed = MLPotential("openmlff", modelPath=str(et_model)).createMixedSystem(
        topology, _mm_system(topology, 2), ml_atoms, backend=backend)
    energy, forces = _state(mixed, positions)
    own_energy, own_forces = _state(build_system(aspirin.atomic_numbers, et_model), positions[6:])
    assert energy == pytest.approx(own_energy, rel=1e-9)  # waters at rest, uncharged: the model's energy alone
    np.testing.assert_allclose(forces[6:], own_forces, rtol=1e-5, atol=1e-3)
    assert np.abs(forces[:6]).max() < 1e-4  # the waters' springs at rest
    stretched = positions.copy()
    stretched[1, 0] += 0.01  # a water spring is still MM: 0.5 k dx^2
    assert _state(mixed, stretched)[0] - energy == pytest.approx(0.5 * 4e5 * 0.01**2, rel=1e-3)


def test_wrong_atoms_are_refused_naming_the_model(aspirin, et_model):
    from openmmml import MLPotential

    topology, _ = _water_then_aspirin(aspirin)
    with pytest.raises(ModelFileError, match=str(et_model.name)):
        MLPotential("openmlff", modelPath=str(et_model)).createMixedSystem(topology, _mm_system(topology, 2),
                                                                             list(range(0, aspirin.n_atoms)))
    with pytest.raises(Exception, match="modelPath"):
        MLPotential("openmlff")


def test_the_readme_script_runs_the_peptide_in_water(tmp_path):
    """The README's "own OpenMM script" (smaller box, an untrained tiny ET of Ac-Ala3-NHMe, 20 steps): a periodic
    mixed System whose ML force is the model's on the peptide alone, and a few stable steps."""
    import torch
    from openmm import LangevinMiddleIntegrator
    from openmmml import MLPotential

    from openmlff.model_file.writer import export_model
    from openmlff.models import build_model
    from openmlff.structures import load_structure
    from untrained_model import TINY_ET

    peptide = load_structure("ac-ala3-nhme")
    torch.manual_seed(0)
    model = export_model(build_model("et", TINY_ET).eval(), peptide.atomic_numbers, tmp_path / "ala3.pt")
    modeller = app.Modeller(peptide.topology, peptide.positions_angstrom * unit.angstrom)
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    modeller.addSolvent(forcefield, padding=0.5 * unit.nanometer)
    mm_system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME, constraints=app.HBonds,
                                        nonbondedCutoff=0.7 * unit.nanometer)  # the small box's half
    ml_atoms = list(range(peptide.n_atoms))
    system = MLPotential("openmlff", modelPath=str(model)).createMixedSystem(modeller.topology, mm_system, ml_atoms)
    assert modeller.topology.getNumAtoms() > 150 and system.usesPeriodicBoundaryConditions()
    ml_force = next(f for f in system.getForces() if f.getName().startswith("openmlff model"))
    ml_force.setForceGroup(31)
    simulation = app.Simulation(modeller.topology, system, LangevinMiddleIntegrator(300, 1, 0.0005),
                                openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(modeller.positions)
    state = simulation.context.getState(getEnergy=True, getForces=True, groups={31})
    alone = _state(build_system(peptide.atomic_numbers, model), peptide.positions_angstrom / 10.0)
    assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(alone[0], rel=1e-9)
    ml_forces = state.getForces(asNumpy=True)._value
    np.testing.assert_allclose(ml_forces[:peptide.n_atoms], alone[1], rtol=1e-4, atol=1e-2)
    assert np.abs(ml_forces[peptide.n_atoms:]).max() == 0
    simulation.step(20)
    assert np.isfinite(simulation.context.getState(getEnergy=True).getPotentialEnergy()._value)
