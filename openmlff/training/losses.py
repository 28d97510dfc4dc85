"""Training losses on energies (eV) and forces (eV/Å).

The default is TorchMD-Net's weighted sum of mean squared errors, force-dominant:
L = w_E * mean_m (E_m - E_m^ref)^2 + w_F * mean_{m,i,a} (F_mia - F_mia^ref)^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LossWeights:
    """Weights of the energy and force terms (TorchMD-Net's MD17 defaults: 0.05 and 0.95)."""

    energy: float = 0.05
    forces: float = 0.95


def energy_force_mse(energy_pred: Tensor, energy_ref: Tensor, forces_pred: Tensor, forces_ref: Tensor,
                     weights: LossWeights) -> Tensor:
    """w_E * MSE(E) + w_F * MSE(F), in eV^2 and (eV/Å)^2."""
    loss_e = torch.mean((energy_pred - energy_ref) ** 2)
    loss_f = torch.mean((forces_pred - forces_ref) ** 2)
    return weights.energy * loss_e + weights.forces * loss_f
