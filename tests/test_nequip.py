"""NequIP-specific checks: envelope, any atomic number, zero-initialised output, irreps and configuration.

The physics every architecture must obey is tested for NequIP in test_architectures.py.
"""

import numpy as np
import pytest
import torch

from openmlff.models import build_model, default_hyperparameters
from openmlff.models.nequip import NequIP, NequIPConfig, PolynomialCutoff, hidden_irreps
from model_helpers import SMALL, ef, trained_like_potential  # tests/ is on sys.path (pytest rootdir insertion)

torch.set_num_threads(1)
TINY = SMALL["nequip"][1]


@pytest.fixture(scope="module")
def aspirin(test_data):
    from openmlff.data import load_dataset

    return load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")


def small_nequip(dtype=torch.float64):
    return trained_like_potential("nequip", dtype)


def test_polynomial_envelope_is_one_at_zero_and_flat_at_the_cutoff():
    env = PolynomialCutoff(5.0, p=6)
    r = torch.tensor([0.0, 5.0 - 2e-3, 5.0 - 1e-3, 5.0, 6.0], dtype=torch.float64)
    u = env(r)
    assert u[0].item() == pytest.approx(1.0) and u[3].item() == 0.0 and u[4].item() == 0.0
    # value, slope and curvature vanish at the cutoff: u ~ (r_c - r)^3, so halving the distance divides u by 8
    assert u[1].item() / u[2].item() == pytest.approx(8.0, rel=1e-2)
    assert 0.0 < u[2].item() < 1e-8


def test_any_atomic_number_and_isolated_atoms():
    pot = small_nequip()
    z = np.array([1, 54, 99])  # H, Xe, Es: the embedding tables cover Z = 1..99
    pos = np.array([[0.0, 0, 0], [1.5, 0.3, 0], [30.0, 0, 0]])  # Es far from the others
    e, f = ef(pot, z, pos)
    assert np.isfinite(e) and np.isfinite(f).all()
    np.testing.assert_allclose(f[2], 0.0, atol=1e-12)  # nothing within the cutoff: no force
    assert ef(pot, np.array([1, 53, 99]), pos)[0] != pytest.approx(e)  # the element matters


def test_fresh_model_predicts_zero_but_learns_through_every_layer(aspirin):
    torch.manual_seed(0)
    pot = build_model("nequip", TINY).double()
    z = torch.as_tensor(aspirin.z)
    pos = torch.as_tensor(aspirin.R[0])
    e, f = pot.energy_and_forces(z, pos, torch.zeros(len(z), dtype=torch.long), 1, create_graph=True)
    assert f.abs().max().item() == 0.0  # zero-initialised output layer
    target = torch.as_tensor(aspirin.F[0])
    (f - target).pow(2).sum().backward()
    assert pot.network.head.weight.grad.abs().max() > 0  # so the first step moves it
    # one step later every layer receives gradient
    with torch.no_grad():
        pot.network.head.weight.add_(0.1)
    pot.zero_grad()
    _, f = pot.energy_and_forces(z, pos, torch.zeros(len(z), dtype=torch.long), 1, create_graph=True)
    (f - target).pow(2).sum().backward()
    for name, p in pot.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_features_irreps_and_config():
    assert str(hidden_irreps(8, 1, parity=False)) == "8x0e+8x1o"
    assert str(hidden_irreps(8, 2, parity=True)) == "8x0e+8x0o+8x1o+8x1e+8x2e+8x2o"
    net = NequIP(NequIPConfig(**TINY))
    # the first layer starts from scalars, so only irreps reachable through Y(l<=2) exist; the last keeps scalars
    assert str(net.layers[0].irreps_out) == "4x0e+4x1o+4x2e"
    assert str(net.layers[-1].irreps_out) == "4x0e"
    hp = default_hyperparameters("nequip", "paper")
    assert (hp["l_max"], hp["num_features"], hp["parity"], hp["num_layers"], hp["cutoff_angstrom"]) == (3, 64, True, 5, 4.0)
    assert NequIPConfig(**default_hyperparameters("nequip")) == NequIPConfig()
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        build_model("nequip", {"lmax": 2})


