"""ViSNet-specific checks: the rejection dot product and the configuration.

The physics every architecture must obey is tested for ViSNet (lmax 1, and lmax 2 with the vertex
term) in test_architectures.py.
"""

import pytest
import torch

from openmlff.models import build_model, default_hyperparameters
from openmlff.models.visnet import ViSNet, ViSNetConfig, rejection_dot, spherical_harmonics

torch.set_num_threads(1)


@pytest.mark.parametrize("lmax", [1, 2])
def test_rejection_dot_is_the_dot_product_of_rejected_features(lmax):
    """Per degree: the part of a feature along the bond's harmonics drops out; the rest is a plain dot product."""
    gen = torch.Generator().manual_seed(0)
    unit = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen, dtype=torch.float64), dim=1)
    sh = spherical_harmonics(unit, lmax)
    a, b = torch.randn(2, 50, sh.size(1), 4, generator=gen, dtype=torch.float64)
    expected = torch.zeros(50, 4, dtype=torch.float64)
    start = 0
    for degree in range(1, lmax + 1):
        stop = start + 2 * degree + 1
        d = sh[:, start:stop]
        torch.testing.assert_close((d * d).sum(dim=1), torch.ones(50, dtype=torch.float64))
        a_rej = a[:, start:stop] - (a[:, start:stop] * d.unsqueeze(-1)).sum(1, keepdim=True) * d.unsqueeze(-1)
        b_rej = b[:, start:stop] - (b[:, start:stop] * d.unsqueeze(-1)).sum(1, keepdim=True) * d.unsqueeze(-1)
        expected += (a_rej * b_rej).sum(dim=1)
        start = stop
    torch.testing.assert_close(rejection_dot(a, b, sh, lmax), expected)
    along_bond = sh.unsqueeze(-1) * torch.randn(50, 1, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(rejection_dot(along_bond, b, sh, lmax), torch.zeros(50, 4, dtype=torch.float64))


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
        build_model("visnet", {"hidden": 3})


