"""ViSNet physics and the export contract: invariance, equivariance, smooth cutoff, batching,
eager = TorchScript = TorchForce, and that it learns.

Most tests run on a model whose biases have been set to random values (as after training): a
freshly built model has zero biases, and some defects (a message that does not vanish at the
cutoff) only show once the biases are not zero.
"""

import csv

import numpy as np
import openmm
import pytest
import torch

from openmlff._compat import import_openmmtorch
from openmlff.export import energies_and_forces, export_potential, load_exported
from openmlff.models import build_potential, default_hyperparameters, fit_element_energies
from openmlff.models.visnet import ViSNet, ViSNetConfig
from openmlff.training import TrainingConfig, train
from openmlff.units import EV_IN_KJ_PER_MOL

torch.set_num_threads(1)
SMALL = {"hidden_channels": 16, "num_layers": 3, "num_heads": 4, "num_rbf": 12}
TINY = {"hidden_channels": 16, "num_layers": 2, "num_heads": 2, "num_rbf": 8}


@pytest.fixture(scope="module")
def aspirin(shared_data):
    from openmlff.data import load_dataset

    return load_dataset(shared_data / "datasets" / "rmd17_aspirin_100.npz")


def small_visnet(dtype=torch.float64, seed=0, **overrides):
    """A small ViSNet Potential with random biases (as after training) and energy statistics set."""
    torch.manual_seed(seed)
    pot = build_potential("visnet", {**SMALL, **overrides})
    with torch.no_grad():
        for name, p in pot.named_parameters():
            if name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
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


@pytest.mark.parametrize("lmax, vertex", [(1, False), (2, True)])
def test_energy_invariant_and_forces_equivariant(aspirin, lmax, vertex):
    pot = small_visnet(lmax=lmax, vertex=vertex)
    rng = np.random.default_rng(1)
    pos = aspirin.R[0]
    e0, f0 = ef(pot, aspirin.z, pos)
    for _ in range(3):
        q = random_rotation(rng)
        shift = rng.normal(size=3) * 5
        e1, f1 = ef(pot, aspirin.z, pos @ q.T + shift)
        assert abs(e1 - e0) < 1e-9
        np.testing.assert_allclose(f1, f0 @ q.T, atol=1e-9)
    # a different conformation gives a different energy, and forces are not all zero
    assert abs(ef(pot, aspirin.z, aspirin.R[1])[0] - e0) > 1e-6
    assert np.abs(f0).max() > 1e-3


def test_permutation_of_like_atoms(aspirin):
    pot = small_visnet()
    z = aspirin.z
    perm = np.arange(len(z))
    for element in (1, 6, 8):
        same = np.flatnonzero(z == element)
        perm[same] = np.roll(same, 1)
    e0, f0 = ef(pot, z, aspirin.R[0])
    e1, f1 = ef(pot, z[perm], aspirin.R[0][perm])
    assert abs(e1 - e0) < 1e-9
    np.testing.assert_allclose(f1, f0[perm], atol=1e-9)


@pytest.mark.parametrize("lmax", [1, 2])
def test_forces_are_negative_gradient_of_energy(aspirin, lmax):
    pot = small_visnet(lmax=lmax, vertex=lmax == 2)
    pos = aspirin.R[0].copy()
    _, f = ef(pot, aspirin.z, pos)
    h = 1e-5
    for atom, axis in [(0, 0), (12, 1), (20, 2)]:
        plus, minus = pos.copy(), pos.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(ef(pot, aspirin.z, plus)[0] - ef(pot, aspirin.z, minus)[0]) / (2 * h)
        assert abs(numeric - f[atom, axis]) < 1e-6 * max(1.0, abs(numeric))


@pytest.mark.parametrize("lmax", [1, 2])
def test_energy_and_forces_continuous_when_neighbour_crosses_cutoff(lmax):
    pot = small_visnet(lmax=lmax, vertex=lmax == 2)
    cutoff = pot.cutoff_angstrom
    z = np.array([6, 8, 1])
    pair = np.array([[0.0, 0, 0], [1.2, 0.3, 0]])

    def with_h_at(d):
        return ef(pot, z, np.vstack([pair, [[-d, 0.1, 0.0]]]))

    (e_in, f_in), (e_out, f_out) = with_h_at(cutoff - 1e-6), with_h_at(cutoff + 1e-6)
    assert abs(e_in - e_out) < 1e-9
    np.testing.assert_allclose(f_in, f_out, atol=1e-4)
    # beyond the cutoff the hydrogen does not interact: the energy is that of the pair plus a lone H
    e_pair = ef(pot, z[:2], pair)[0]
    e_h = ef(pot, z[2:], np.zeros((1, 3)))[0]
    assert abs(e_out - (e_pair + e_h)) < 1e-9
    np.testing.assert_allclose(f_out[2], 0.0, atol=1e-12)
    assert abs(with_h_at(1.5)[0] - e_out) > 1e-4  # within the cutoff it does


def test_batched_energies_equal_single_frames(aspirin):
    """A batch of two aspirin frames and a small molecule placed inside one of them: no edges across molecules."""
    pot = small_visnet()
    small_z, small_pos = np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    molecules = [(aspirin.z, aspirin.R[0]), (small_z, small_pos + aspirin.R[0][3]), (aspirin.z, aspirin.R[1])]
    z = torch.as_tensor(np.concatenate([m[0] for m in molecules]))
    pos = torch.as_tensor(np.concatenate([m[1] for m in molecules]))
    batch = torch.cat([torch.full((len(m[0]),), k) for k, m in enumerate(molecules)])
    e, f = pot.energy_and_forces(z, pos, batch, len(molecules))
    start = 0
    for k, (zk, posk) in enumerate(molecules):
        ek, fk = ef(pot, zk, posk)
        assert abs(e[k].item() - ek) < 1e-9
        np.testing.assert_allclose(f.detach().numpy()[start:start + len(zk)], fk, atol=1e-9)
        start += len(zk)


def test_float32_agrees_with_float64(aspirin):
    e64, f64 = ef(small_visnet(torch.float64), aspirin.z, aspirin.R[0])
    e32, f32 = ef(small_visnet(torch.float32), aspirin.z, aspirin.R[0])
    assert abs(e32 - e64) < 1e-5 * max(1.0, abs(e64))
    np.testing.assert_allclose(f32, f64, atol=1e-4 * np.abs(f64).max())


def test_config_presets_and_errors():
    hp = default_hyperparameters("visnet", "paper")
    assert (hp["hidden_channels"], hp["num_layers"], hp["num_heads"], hp["num_rbf"], hp["lmax"],
            hp["cutoff_angstrom"]) == (256, 9, 8, 32, 2, 5.0)
    cpu = default_hyperparameters("visnet")
    assert cpu["lmax"] == 1 and cpu["neighbor_method"] == "auto"
    assert ViSNet(ViSNetConfig(cutoff_angstrom=4.0)).cutoff_angstrom == 4.0
    with pytest.raises(ValueError, match="lmax must be 1 or 2"):
        ViSNetConfig(lmax=3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ViSNetConfig(hidden_channels=30, num_heads=8)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        build_potential("visnet", {"hidden": 3})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eager_torchscript_torchforce_agree(tmp_path, aspirin, dtype):
    pot = small_visnet(dtype, lmax=2, vertex=True)
    path = export_potential(pot, aspirin.z, tmp_path / "model.pt")
    module, meta = load_exported(path)
    assert meta["architecture"] == "visnet" and meta["hyperparameters"]["lmax"] == 2
    assert meta["dtype"] == str(dtype).replace("torch.", "")

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
        assert abs(e_script[k] - e_eager * EV_IN_KJ_PER_MOL) < tol * 100
        np.testing.assert_allclose(f_script[k], f_eager * EV_IN_KJ_PER_MOL * 10, atol=tol * 1e3, rtol=tol)
        context.setPositions(pos / 10.0)
        state = context.getState(getEnergy=True, getForces=True)
        e_mm = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
        f_mm = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
        assert abs(e_mm - e_script[k]) < tol * 100
        np.testing.assert_allclose(f_mm, f_script[k], atol=tol * 1e3, rtol=tol)


def test_training_reduces_validation_force_error(tmp_path, aspirin):
    config = TrainingConfig(architecture="visnet", hyperparameters=TINY, n_train=20, n_val=5, n_test=5,
                            batch_size=5, warmup_steps=4, learning_rate=1e-2, ema_decay=0.5, max_epochs=15,
                            torch_threads=1)
    result = train(aspirin, tmp_path, config, progress=False)
    with open(tmp_path / "training_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 15
    first = float(rows[0]["val_force_mae_kcal_per_mol_per_A"])
    assert result.best_val_force_mae_kcal_per_mol_per_A < 0.75 * first, (first, result)
