"""ET physics and the export contract: invariance, equivariance, smooth cutoff, eager = TorchScript = TorchForce."""

import numpy as np
import openmm
import pytest
import torch

from openmlff._compat import import_openmmtorch
from openmlff.export import energies_and_forces, export_potential, load_exported, read_model_metadata
from openmlff.models import build_potential, default_hyperparameters, fit_element_energies
from openmlff.units import EV_IN_KJ_PER_MOL

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def aspirin(shared_data):
    from openmlff.data import load_dataset

    return load_dataset(shared_data / "datasets" / "rmd17_aspirin_100.npz")


def small_et(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    pot = build_potential("et", {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "num_rbf": 16})
    z = np.array([1, 6, 7, 8])
    pot.set_energy_statistics(fit_element_energies(np.tile(z, (3, 1)), np.array([-10.0, -10.0, -10.0])), 0.7)
    return pot.to(dtype).eval()


def ef(pot, z, pos):
    z = torch.as_tensor(z, dtype=torch.long)
    dtype = next(pot.parameters()).dtype
    e, f = pot.energy_and_forces(z, torch.as_tensor(pos, dtype=dtype), torch.zeros(len(z), dtype=torch.long), 1)
    return e.item(), f.detach().double().numpy()


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_energy_invariant_and_forces_equivariant(aspirin):
    pot = small_et()
    rng = np.random.default_rng(1)
    pos = aspirin.R[0]
    e0, f0 = ef(pot, aspirin.z, pos)
    for _ in range(3):
        q = random_rotation(rng)
        shift = rng.normal(size=3) * 5
        e1, f1 = ef(pot, aspirin.z, pos @ q.T + shift)
        assert abs(e1 - e0) < 1e-9
        np.testing.assert_allclose(f1, f0 @ q.T, atol=1e-9)
    # a different conformation gives a different energy (the test above could not pass trivially)
    assert abs(ef(pot, aspirin.z, aspirin.R[1])[0] - e0) > 1e-6


def test_permutation_of_like_atoms(aspirin):
    pot = small_et()
    z = aspirin.z
    hydrogens = np.flatnonzero(z == 1)
    perm = np.arange(len(z))
    perm[hydrogens] = hydrogens[::-1]
    e0, f0 = ef(pot, z, aspirin.R[0])
    e1, f1 = ef(pot, z[perm], aspirin.R[0][perm])
    assert abs(e1 - e0) < 1e-9
    np.testing.assert_allclose(f1, f0[perm], atol=1e-9)


def test_forces_are_negative_gradient_of_energy(aspirin):
    pot = small_et()
    pos = aspirin.R[0].copy()
    _, f = ef(pot, aspirin.z, pos)
    h = 1e-5
    for atom, axis in [(0, 0), (12, 1), (20, 2)]:
        plus, minus = pos.copy(), pos.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(ef(pot, aspirin.z, plus)[0] - ef(pot, aspirin.z, minus)[0]) / (2 * h)
        assert abs(numeric - f[atom, axis]) < 1e-6 * max(1.0, abs(numeric))


def test_energy_continuous_when_neighbour_crosses_cutoff():
    pot = small_et()
    cutoff = pot.cutoff_angstrom
    z = np.array([6, 8])
    energies = [ef(pot, z, np.array([[0.0, 0, 0], [d, 0, 0]]))[0] for d in (cutoff - 1e-6, cutoff + 1e-6)]
    assert abs(energies[0] - energies[1]) < 1e-8
    far = ef(pot, z, np.array([[0.0, 0, 0], [cutoff + 2.0, 0, 0]]))[0]
    near = ef(pot, z, np.array([[0.0, 0, 0], [1.2, 0, 0]]))[0]
    assert abs(far - energies[1]) < 1e-8  # beyond the cutoff the atoms do not interact
    assert abs(near - far) > 1e-4  # within it they do


def test_batched_energies_equal_single_frames(aspirin):
    pot = small_et()
    n = 3
    z = torch.as_tensor(aspirin.z).repeat(n)
    batch = torch.arange(n).repeat_interleave(aspirin.n_atoms)
    e, f = pot.energy_and_forces(z, torch.as_tensor(aspirin.R[:n].reshape(-1, 3)), batch, n)
    for k in range(n):
        ek, fk = ef(pot, aspirin.z, aspirin.R[k])
        assert abs(e[k].item() - ek) < 1e-9
        np.testing.assert_allclose(f.detach().numpy().reshape(n, -1, 3)[k], fk, atol=1e-9)


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


def test_paper_preset_has_paper_sizes():
    hp = default_hyperparameters("et", "paper")
    assert (hp["hidden_channels"], hp["num_layers"], hp["num_heads"], hp["num_rbf"], hp["cutoff_angstrom"]) == (256, 6, 8, 32, 5.0)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        build_potential("et", {"hidden": 3})
    with pytest.raises(ValueError, match="unknown architecture"):
        build_potential("schnet")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eager_torchscript_torchforce_agree(tmp_path, aspirin, dtype):
    pot = small_et(dtype)
    path = export_potential(pot, aspirin.z, tmp_path / "model.pt", {"note": "test"})
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
