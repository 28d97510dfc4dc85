"""Helpers shared by the model tests: small potentials with trained-like weights, energy/forces, rotations."""

from __future__ import annotations

import numpy as np
import torch

from openmlff.models import build_model, fit_element_energies

#: Small sizes per architecture variant: fast, but every code path (l=2, vertex terms, parity) is exercised.
SMALL = {
    "et": ("et", {"hidden_channels": 16, "num_layers": 2, "num_heads": 4, "num_rbf": 12}),
    "et-scalar-head": ("et", {"hidden_channels": 16, "num_layers": 2, "num_heads": 4, "num_rbf": 12,
                              "output_head": "scalar"}),
    "visnet-l1": ("visnet", {"hidden_channels": 16, "num_layers": 3, "num_heads": 4, "num_rbf": 12}),
    "visnet-l2-vertex": ("visnet", {"hidden_channels": 16, "num_layers": 3, "num_heads": 4, "num_rbf": 12,
                                    "lmax": 2, "vertex": True}),
    "nequip": ("nequip", {"num_features": 4, "l_max": 2, "parity": True, "num_layers": 2, "num_bessel": 4,
                          "radial_mlp_layers": 1, "radial_mlp_width": 8}),
}
#: Tiny sizes for training tests.
TINY = {
    "et": {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8},
    "visnet": {"hidden_channels": 16, "num_layers": 2, "num_heads": 2, "num_rbf": 8},
    "nequip": {"num_features": 4, "l_max": 1, "num_layers": 2, "num_bessel": 4, "radial_mlp_layers": 1,
               "radial_mlp_width": 8},
}


def trained_like_potential(variant: str, dtype=torch.float64, seed: int = 0, **overrides):
    """A small EnergyModel whose biases and output layer are random, as after training.

    Fresh models have zero biases (and NequIP a zero output layer); some defects, such as a message
    that does not vanish at the cutoff, only show once they are not zero.
    """
    architecture, hp = SMALL[variant]
    torch.manual_seed(seed)
    pot = build_model(architecture, {**hp, **overrides})
    with torch.no_grad():
        for name, p in pot.named_parameters():
            if name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
        head_weight = getattr(getattr(pot.network, "head", None), "weight", None)
        if head_weight is not None and float(head_weight.abs().max()) == 0.0:  # NequIP's zero-initialised output
            torch.nn.init.normal_(head_weight)
    z = np.array([1, 6, 7, 8])
    pot.set_energy_statistics(fit_element_energies(np.tile(z, (3, 1)), np.array([-10.0, -10.0, -10.0])), 0.7)
    return pot.to(dtype).eval()


def ef(pot, z, pos):
    """Energy (eV) and forces (eV/Å, float64 numpy) of one molecule."""
    z = torch.as_tensor(np.asarray(z), dtype=torch.long)
    dtype = next(pot.parameters()).dtype
    e, f = pot.energy_and_forces(z, torch.as_tensor(np.asarray(pos), dtype=dtype), torch.zeros(len(z), dtype=torch.long), 1)
    return e.item(), f.detach().double().numpy()


def random_rotation(rng) -> np.ndarray:
    """A uniformly random proper rotation matrix (det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q
