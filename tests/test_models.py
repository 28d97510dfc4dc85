"""ET configuration, per-element reference energies, and the export contract: metadata, eager = TorchScript = TorchForce.

The physics every architecture must obey is tested in test_architectures.py.
"""

import numpy as np
import openmm
import pytest
import torch

from openmlff.core._compat import import_openmmtorch
from openmlff.model_file.writer import energies_and_forces, export_model, load_exported, read_model_metadata
from openmlff.models import build_model, default_hyperparameters, fit_element_energies
from openmlff.core.units import EV_IN_KJ_PER_MOL
from model_helpers import ef, trained_like_potential  # tests/ is on sys.path (pytest rootdir insertion)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def aspirin(test_data):
    from openmlff.data import load_dataset

    return load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")


def test_fit_element_energies_recovers_known_references():
    true = {1: -13.6, 6: -1028.0, 8: -2041.0}
    # molecules of four atoms with different compositions: the fit is exact
    zs = np.array([[1, 1, 6, 8], [1, 6, 6, 8], [1, 6, 8, 8], [6, 6, 6, 1], [8, 8, 1, 1]])
    energies = np.array([sum(true[int(a)] for a in z) for z in zs])
    fitted = fit_element_energies(zs, energies)
    np.testing.assert_allclose(fitted[[1, 6, 8]], [true[1], true[6], true[8]], rtol=1e-9)
    # one molecule: the references add up to its mean energy
    one = fit_element_energies(zs[0], np.array([-3100.0, -3102.0]))
    assert abs(one[zs[0]].sum() - (-3101.0)) < 1e-9


def test_saved_hyperparameters_without_a_later_field_rebuild_the_model_they_were_saved_with():
    """ET's output_head came after the first checkpoints: one stored without it is the scalar-head model."""
    hp = default_hyperparameters("et")
    assert hp["output_head"] == "gated"
    before = {k: v for k, v in hp.items() if k != "output_head"}
    old_model = build_model("et", {**before, "output_head": "scalar"})
    rebuilt = build_model("et", before, saved=True)
    rebuilt.load_state_dict(old_model.state_dict())  # strict: the same parameters
    assert isinstance(rebuilt.network.head, torch.nn.Sequential)
    assert not isinstance(build_model("et", before).network.head, torch.nn.Sequential)  # new models: gated
    with pytest.raises(Exception, match="output_head must be one of"):
        build_model("et", {"output_head": "mlp"})


def test_paper_preset_has_paper_sizes():
    hp = default_hyperparameters("et", "paper")
    assert (hp["hidden_channels"], hp["num_layers"], hp["num_heads"], hp["num_rbf"], hp["cutoff_angstrom"]) == (256, 6, 8, 32, 5.0)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        build_model("et", {"hidden": 3})
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("schnet")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_export_metadata_and_single_frame_forward(tmp_path, aspirin, dtype):
    pot = trained_like_potential("et", dtype)
    path = export_model(pot, aspirin.z, tmp_path / "model.pt", {"note": "test"})
    module, meta = load_exported(path)
    assert meta["atomic_numbers"] == aspirin.z.tolist()
    assert meta["units"] == {"positions": "nm", "energy": "kJ/mol", "forces": "kJ/mol/nm"}
    assert meta["dtype"] == str(dtype).replace("torch.", "") and meta["note"] == "test"
    assert read_model_metadata(path)["architecture"] == "et"

    tol = 1e-7 if dtype == torch.float64 else 2e-3
    frames = aspirin.R[:3]
    e_script, f_script = energies_and_forces(module, frames / 10.0)  # kJ/mol, kJ/mol/nm
    openmmtorch = import_openmmtorch()
    system = openmm.System()
    for _ in aspirin.z:
        system.addParticle(1.0)
    system.addForce(openmmtorch.TorchForce(str(path)))
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    for k, pos in enumerate(frames):
        e_eager, f_eager = ef(pot, aspirin.z, pos)
        # eager model in eV and eV/Å -> kJ/mol and kJ/mol/nm
        assert abs(e_script[k] - e_eager * EV_IN_KJ_PER_MOL) < tol * 100
        np.testing.assert_allclose(f_script[k], f_eager * EV_IN_KJ_PER_MOL * 10, atol=tol * 1e3, rtol=tol)
        single = module(torch.as_tensor(pos / 10.0))
        assert abs(single.item() - e_script[k]) < tol
        context.setPositions(pos / 10.0)
        state = context.getState(getEnergy=True, getForces=True)
        e_mm = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
        f_mm = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
        assert abs(e_mm - e_script[k]) < tol * 100
        np.testing.assert_allclose(f_mm, f_script[k], atol=tol * 1e3, rtol=tol)


def test_load_exported_rejects_other_files(tmp_path):
    bad = tmp_path / "not_a_model.pt"
    bad.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not_a_model.pt"):
        load_exported(bad)
    plain = tmp_path / "plain.pt"
    torch.jit.script(torch.nn.Linear(3, 1)).save(str(plain))
    with pytest.raises(ValueError, match="openmlff.json"):
        load_exported(plain)
    with pytest.raises(ValueError, match="missing.pt: no such model file"):
        load_exported(tmp_path / "missing.pt")


def test_periodic_export_runs_in_torchforce_with_a_box(tmp_path):
    """A periodic export takes OpenMM's box: a water pair split across the box face interacts as if whole."""
    pot = trained_like_potential("et", torch.float64)
    z = np.array([8, 1, 1, 8, 1, 1])
    box_angstrom = np.diag([12.0, 11.0, 13.0])
    waters = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0],
                       [2.8, 0.3, 0.1], [3.5, 0.9, 0.0], [3.1, -0.6, 0.0]]) + [10.6, 5.0, 6.0]
    wrapped = waters - np.floor(waters / np.diag(box_angstrom)) * np.diag(box_angstrom)
    assert not np.allclose(wrapped, waters)  # the second water really sits across the face
    path = export_model(pot, z, tmp_path / "periodic.pt", periodic=True)
    assert load_exported(path)[1]["periodic"] is True
    box_t = torch.as_tensor(box_angstrom)
    e_eager = pot(torch.as_tensor(z), torch.as_tensor(waters), torch.zeros(6, dtype=torch.long), 1, box_t)[0].item()

    system = openmm.System()
    for _ in z:
        system.addParticle(1.0)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) * 0.1 for row in box_angstrom))
    force = import_openmmtorch().TorchForce(str(path))
    force.setUsesPeriodicBoundaryConditions(True)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(wrapped / 10.0)
    e_mm = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert abs(e_mm - e_eager * EV_IN_KJ_PER_MOL) < 1e-6
    # without the box, the two halves would be far apart: a different energy
    e_open = pot(torch.as_tensor(z), torch.as_tensor(wrapped), torch.zeros(6, dtype=torch.long), 1)[0].item()
    assert abs(e_open - e_eager) > 1e-4
