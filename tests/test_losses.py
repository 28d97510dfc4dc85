"""openmlff.training.losses: each metric loss against a hand computation, finite gradients on real frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openmlff.core import elements
from openmlff.core.errors import InputError
from openmlff.training import TrainingConfig
from openmlff.training.losses import CARBON_MASS_DA, LOSSES, LossWeights, TrainingLoss, energy_force_mse

Z = np.array([6, 1, 8, 1])  # C, H, O, H


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    e_ref, e_pred = rng.normal(size=2), rng.normal(size=2)
    f_ref, f_pred = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return (t(e_pred), t(e_ref), t(f_pred.reshape(-1, 3)), t(f_ref.reshape(-1, 3))), (e_pred - e_ref, f_pred - f_ref)


W = LossWeights(energy=0.2, forces=0.8)


def test_mse_is_the_old_energy_force_mse(batch):
    tensors, (de, df) = batch
    expected = 0.2 * np.mean(de ** 2) + 0.8 * np.mean(df ** 2)
    assert float(TrainingLoss("mse", W, Z)(*tensors)) == pytest.approx(expected, rel=1e-12)
    assert float(energy_force_mse(*tensors, W)) == pytest.approx(expected, rel=1e-12)


def test_fnm_divides_each_force_error_by_its_mass_in_units_of_carbon(batch):
    tensors, (de, df) = batch
    scale = CARBON_MASS_DA / elements.masses(Z)
    assert scale[1] == pytest.approx(11.92, abs=0.01) and scale[0] == 1.0  # hydrogen 12x carbon
    expected = 0.2 * np.mean(de ** 2) + 0.8 * np.mean((df * scale[None, :, None]) ** 2)
    assert float(TrainingLoss("fnm", W, Z)(*tensors)) == pytest.approx(expected, rel=1e-12)


def test_element_balanced_weighs_every_element_the_same(batch):
    tensors, (de, df) = batch
    per_atom = (df ** 2).mean(axis=(0, 2))
    per_element = [per_atom[Z == e].mean() for e in (1, 6, 8)]  # H's two atoms count as one element
    expected = 0.2 * np.mean(de ** 2) + 0.8 * np.mean(per_element)
    assert float(TrainingLoss("element_balanced", W, Z)(*tensors)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("top_k", [1, 2])
def test_max_error_adds_the_top_k_atom_errors_of_each_conformation(batch, top_k):
    tensors, (de, df) = batch
    norms = (df ** 2).sum(axis=2)  # (frames, atoms): |dF_i|^2
    worst = np.sort(norms, axis=1)[:, ::-1][:, :top_k].mean()
    expected = 0.2 * np.mean(de ** 2) + 0.8 * np.mean(df ** 2) + 0.3 * worst
    loss = TrainingLoss("max_error", W, Z, {"max_weight": 0.3, "top_k": top_k})
    assert float(loss(*tensors)) == pytest.approx(expected, rel=1e-12)


def test_unknown_losses_and_options_are_refused_naming_the_field():
    with pytest.raises(InputError, match="TrainingConfig.loss must be one of"):
        TrainingConfig(loss="huber")
    with pytest.raises(InputError, match="TrainingConfig.loss_options do not fit.*top_k"):
        TrainingConfig(loss="max_error", loss_options={"top_k": 0})
    with pytest.raises(InputError, match="takes the options none"):
        TrainingLoss("mse", W, Z, {"max_weight": 1.0})
    with pytest.raises(InputError, match="max_weight"):
        TrainingLoss("fnm", W, Z, {"max_weight": 1.0})
    with pytest.raises(InputError, match="blend must be a number in \\[0, 1\\], got 1.5"):
        TrainingLoss("element_balanced", W, Z, {"blend": 1.5})


@pytest.mark.parametrize("name", ["fnm", "element_balanced"])
def test_a_blend_mixes_the_metric_force_term_with_mse(batch, name):
    """blend b: force term b x the metric loss's + (1 - b) x mse's; b = 1 the metric loss, b = 0 mse."""
    tensors, (de, df) = batch
    pure, mse = TrainingLoss(name, W, Z)(*tensors), TrainingLoss("mse", W, Z)(*tensors)
    energy = 0.2 * np.mean(de ** 2)
    half = TrainingLoss(name, W, Z, {"blend": 0.5})(*tensors)
    assert float(half) == pytest.approx(energy + 0.5 * (float(pure) - energy) + 0.5 * (float(mse) - energy), rel=1e-12)
    assert float(TrainingLoss(name, W, Z, {"blend": 0.0})(*tensors)) == pytest.approx(float(mse), rel=1e-12)
    assert float(TrainingLoss(name, W, Z, {"blend": 1})(*tensors)) == pytest.approx(float(pure), rel=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_are_finite_on_real_frames(name, test_data):
    from openmlff.data import load_dataset
    from openmlff.models import build_model, fit_element_energies

    ds = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")
    torch.manual_seed(0)
    model = build_model("et", {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8})
    model.set_energy_statistics(fit_element_energies(ds.z, ds.E), float(np.sqrt(np.mean(ds.F ** 2))))
    n = 4
    z = torch.as_tensor(ds.z).repeat(n)
    pos = torch.as_tensor(ds.R[:n], dtype=torch.float32).reshape(-1, 3)
    batch = torch.arange(n).repeat_interleave(ds.n_atoms)
    energy, forces = model.energy_and_forces(z, pos, batch, n, create_graph=True)
    loss = TrainingLoss(name, W, ds.z)(energy, torch.as_tensor(ds.E[:n]), forces,
                                       torch.as_tensor(ds.F[:n], dtype=torch.float32).reshape(-1, 3))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_training_with_a_metric_loss_and_resuming_a_checkpoint_from_before_losses(test_data, tmp_path):
    """`train --loss max_error --loss-options JSON` trains; a checkpoint written before TrainingConfig had a loss
    resumes as the MSE it was trained with, and a different loss is refused naming the field."""
    from openmlff.data import load_dataset
    from openmlff.training import TrainingError, train
    from openmlff.training.checkpoint import read_checkpoint

    ds = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")
    tiny = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}
    base = dict(hyperparameters=tiny, n_train=20, n_val=5, n_test=5, batch_size=5, torch_threads=1)
    result = train(ds, tmp_path / "max", TrainingConfig(**base, loss="max_error", loss_options={"top_k": 3},
                                                        max_epochs=1), progress=False)
    assert result.epochs == 1 and np.isfinite(result.best_val_force_mae_kcal_per_mol_per_A)
    assert read_checkpoint(result.checkpoint).config["loss_options"] == {"top_k": 3}

    old = train(ds, tmp_path / "old", TrainingConfig(**base, max_epochs=1), progress=False)
    state = dict(read_checkpoint(old.checkpoint).state)
    state["config"] = {k: v for k, v in state["config"].items() if k not in ("loss", "loss_options")}
    torch.save(state, old.checkpoint)
    assert train(ds, tmp_path / "old", TrainingConfig(**base, max_epochs=2), progress=False).epochs == 2
    with pytest.raises(TrainingError, match="loss: recorded \"mse\", now \"fnm\""):
        train(ds, tmp_path / "old", TrainingConfig(**base, max_epochs=3, loss="fnm"), progress=False)
