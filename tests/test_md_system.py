"""openmlff.potentials.exported: model metadata, the System, and one model giving the same energies and forces
in TorchForce, PythonForce and plain torch (docs/architecture.md, "Exported model contract")."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from openmlff.core import elements
from openmlff.core._compat import import_openmmtorch
from openmlff.md import (
    ModelFileError, build_system, read_model_metadata, select_platform, torchforce_properties,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_models import write_toy_model  # noqa: E402


@pytest.fixture(scope="module")
def toy_model_float32(aspirin, tmp_path_factory):
    return write_toy_model(tmp_path_factory.mktemp("models") / "toy32.pt", aspirin.atomic_numbers,
                           aspirin.positions_angstrom, dtype="float32")


@pytest.fixture(scope="module")
def displaced_positions_nm(aspirin):
    """Aspirin moved off the toy model's minimum so that every force term is non-zero."""
    rng = np.random.default_rng(7)
    return (aspirin.positions_angstrom + rng.normal(scale=0.05, size=(21, 3))) / 10.0


def torch_energy_and_forces(model_path, positions_nm) -> tuple[float, np.ndarray]:
    """Plain torch: load the TorchScript file, energy in kJ/mol, forces = -dE/dx in kJ/mol/nm."""
    model = torch.jit.load(str(model_path))
    x = torch.tensor(positions_nm, dtype=torch.float64, requires_grad=True)
    energy = model(x)
    energy.backward()
    return float(energy.detach()), -x.grad.numpy()


def openmm_energy_and_forces(system: openmm.System, positions_nm, platform_name: str) -> tuple[float, np.ndarray]:
    platform, properties = select_platform(platform_name)
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), platform, properties)
    context.setPositions(positions_nm)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def test_metadata_is_read_from_the_model_file(toy_model, aspirin):
    metadata = read_model_metadata(toy_model)
    assert metadata["atomic_numbers"] == aspirin.atomic_numbers.tolist()
    assert metadata["dtype"] == "float64"
    assert metadata["architecture"] == "toy_springs"
    assert metadata["cutoff_angstrom"] == 6.0


def test_model_file_without_metadata_or_not_torchscript_is_refused_by_name(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(bare))
    with pytest.raises(ModelFileError, match=r"bare\.pt.*no 'openmlff\.json'"):
        read_model_metadata(bare)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(ModelFileError, match=r"junk\.pt.*not a TorchScript"):
        read_model_metadata(junk)
    incomplete = tmp_path / "incomplete.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(incomplete), _extra_files={"openmlff.json": '{"dtype": "float32"}'})
    with pytest.raises(ModelFileError, match=r"incomplete\.pt.*lacks the keys \['atomic_numbers', 'architecture', 'cutoff_angstrom'\]"):
        read_model_metadata(incomplete)


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_system_has_element_masses_and_the_model_as_its_only_force(toy_model, aspirin, backend):
    system = build_system(aspirin.atomic_numbers, toy_model, backend=backend)
    masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())]
    np.testing.assert_array_equal(masses, elements.masses(aspirin.atomic_numbers))
    assert system.getNumForces() == 1
    force = system.getForce(0)
    assert not force.usesPeriodicBoundaryConditions()
    if backend == "torchforce":
        torch_force = import_openmmtorch().TorchForce.cast(force)
        assert not torch_force.getOutputsForces()
        assert Path(torch_force.getFile()) == toy_model
    else:
        assert isinstance(force, openmm.PythonForce)


def test_model_for_other_atoms_is_refused_naming_the_model_file(toy_model, aspirin):
    swapped = aspirin.atomic_numbers.copy()
    swapped[[0, 7]] = swapped[[7, 0]]
    with pytest.raises(ModelFileError, match=rf"{toy_model.name}.*first difference at atom 0: model Z=6, structure Z=8"):
        build_system(swapped, toy_model)
    with pytest.raises(ModelFileError, match="the model has 21 atoms, structure 3"):
        build_system([8, 1, 1], toy_model)


def test_unknown_backend_is_refused(toy_model, aspirin):
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        build_system(aspirin.atomic_numbers, toy_model, backend="jax")


def test_torchforce_pythonforce_and_torch_agree_in_double_precision(toy_model, aspirin, displaced_positions_nm):
    e_torch, f_torch = torch_energy_and_forces(toy_model, displaced_positions_nm)
    assert e_torch > 10.0 and np.abs(f_torch).max() > 100.0  # really off the minimum
    results = {
        "TorchForce/Reference": openmm_energy_and_forces(build_system(aspirin.atomic_numbers, toy_model), displaced_positions_nm, "Reference"),
        "TorchForce/CPU": openmm_energy_and_forces(build_system(aspirin.atomic_numbers, toy_model), displaced_positions_nm, "CPU"),
        "PythonForce/Reference": openmm_energy_and_forces(
            build_system(aspirin.atomic_numbers, toy_model, backend="pythonforce"), displaced_positions_nm, "Reference"),
    }
    for name, (energy, forces) in results.items():
        assert energy == pytest.approx(e_torch, rel=1e-10), name
        np.testing.assert_allclose(forces, f_torch, rtol=1e-8, atol=1e-6, err_msg=name)


def test_float32_model_takes_float64_positions_and_agrees_to_single_precision(toy_model, toy_model_float32, aspirin, displaced_positions_nm):
    e64, f64 = torch_energy_and_forces(toy_model, displaced_positions_nm)
    e32, f32 = torch_energy_and_forces(toy_model_float32, displaced_positions_nm)
    energy, forces = openmm_energy_and_forces(build_system(aspirin.atomic_numbers, toy_model_float32), displaced_positions_nm, "Reference")
    assert energy == pytest.approx(e32, rel=1e-6)
    np.testing.assert_allclose(forces, f32, rtol=1e-5, atol=1e-2)
    assert e32 == pytest.approx(e64, rel=1e-4)
    np.testing.assert_allclose(f32, f64, rtol=1e-3, atol=1.0)


def test_cuda_graph_properties_are_set_on_the_torchforce_and_run_on_cpu(toy_model, aspirin, displaced_positions_nm):
    properties = torchforce_properties(cuda_graphs=True, cuda_graph_warmup_steps=4)
    assert properties == {"useCUDAGraphs": "true", "CUDAGraphWarmupSteps": "4"}
    system = build_system(aspirin.atomic_numbers, toy_model, torch_properties=properties)
    force = import_openmmtorch().TorchForce.cast(system.getForce(0))
    assert dict(force.getProperties()) == properties
    # the properties only act on CUDA; on CPU the force computes as without them
    plain = openmm_energy_and_forces(build_system(aspirin.atomic_numbers, toy_model), displaced_positions_nm, "CPU")
    with_graphs = openmm_energy_and_forces(system, displaced_positions_nm, "CPU")
    assert with_graphs[0] == plain[0]
    np.testing.assert_array_equal(with_graphs[1], plain[1])


def test_torchforce_properties_are_checked(toy_model, aspirin):
    assert torchforce_properties() == {"useCUDAGraphs": "false", "CUDAGraphWarmupSteps": "10"}
    with pytest.raises(ValueError, match="cuda_graph_warmup_steps must be a positive integer"):
        torchforce_properties(True, 0)
    with pytest.raises(ValueError, match="need the 'torchforce' backend"):
        build_system(aspirin.atomic_numbers, toy_model, backend="pythonforce", torch_properties=torchforce_properties(True))
    with pytest.raises(Exception, match="Unknown property 'useCudaGraphs'"):
        build_system(aspirin.atomic_numbers, toy_model, torch_properties={"useCudaGraphs": "true"})
