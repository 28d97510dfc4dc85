"""Training losses on energies (eV) and forces (eV/Å), selectable by name (TrainingConfig.loss).

The force terms mirror the force metrics of openmlff.metrics.force_metrics (docs/architecture.md
"Force metrics"), written again here in torch because training sits below metrics in the layers.
With dE_m = E_m - E_m^ref, dF_ia = F_ia - F_ia^ref, m_i the mass of atom i (Da):

  mse               w_E mean_m dE_m^2 + w_F mean_{i,a} dF_ia^2          (TorchMD-Net's default)
  fnm               w_E mean_m dE_m^2 + w_F mean_{i,a} (dF_ia m_C / m_i)^2
                    the force error over mass (FNM), in units of carbon's: a hydrogen's error counts
                    m_C / m_H = 11.9x a carbon's (142x in the square), an oxygen's 0.75x
  element_balanced  w_E mean_m dE_m^2 + w_F mean_e [mean_{i in e, a} dF_ia^2]
                    every element's mean squared error weighs the same, however many atoms it has
  max_error         mse + w_max mean_m [mean of the top_k largest |dF_i|^2 of conformation m]
                    the per-conformation maximum error (top_k = 1: the maximum itself)

Options (TrainingConfig.loss_options, `--loss-options JSON`): max_error takes `max_weight` (default
0.1) and `top_k` (default 1); fnm and element_balanced take `blend` b (default 1), whose force term
is b x their own + (1 - b) x mse's (a pure FNM loss starves the heavy atoms: docs/study.md); mse takes
none. The energy and force weights are TrainingConfig.energy_weight and force_weight for every loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..core import elements
from ..core.config import named_options
from ..core.errors import InputError

#: Carbon's mass in Da: the FNM loss's force errors are scaled by m_C / m_i, so carbon's are unchanged.
CARBON_MASS_DA = float(elements.masses([6])[0])
LOSSES = ("mse", "fnm", "element_balanced", "max_error")
_OPTIONS = {"mse": {}, "fnm": {"blend": 1.0}, "element_balanced": {"blend": 1.0},
            "max_error": {"max_weight": 0.1, "top_k": 1}}


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


def check_loss(name: str, options: dict) -> dict:
    """The loss's options with their defaults; InputError naming an unknown loss or option."""
    resolved = named_options("loss", name, options, _OPTIONS)
    if name == "max_error":
        if not resolved["max_weight"] >= 0:
            raise InputError(f"loss option max_weight must be >= 0, got {resolved['max_weight']}")
        if not (isinstance(resolved["top_k"], int) and resolved["top_k"] >= 1):
            raise InputError(f"loss option top_k must be a positive integer, got {resolved['top_k']!r}")
    if "blend" in resolved and not (isinstance(resolved["blend"], (int, float)) and 0 <= resolved["blend"] <= 1):
        raise InputError(f"loss option blend must be a number in [0, 1], got {resolved['blend']!r}")
    return resolved


@dataclass
class TrainingLoss:
    """The loss of one training run for molecules of atomic numbers `z` (one molecule's atoms, in order)."""

    name: str
    weights: LossWeights
    z: np.ndarray
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.options = check_loss(self.name, self.options)
        zs = np.asarray(self.z, dtype=np.int64).reshape(-1)
        self._mass_scale = torch.as_tensor(CARBON_MASS_DA / elements.masses(zs))  # m_C / m_i per atom
        self._element_index = torch.as_tensor(np.unique(zs, return_inverse=True)[1])  # atom -> element slot
        self._n_elements = int(np.unique(zs).size)

    def __call__(self, energy_pred: Tensor, energy_ref: Tensor, forces_pred: Tensor, forces_ref: Tensor) -> Tensor:
        """The loss of a batch: energies (n_molecules,), forces (n_molecules * n_atoms, 3) in eV and eV/Å."""
        n_atoms = self._mass_scale.numel()
        d_f = (forces_pred - forces_ref).reshape(-1, n_atoms, 3)
        loss_e = torch.mean((energy_pred - energy_ref.to(energy_pred.dtype)) ** 2)
        w = self.weights
        if self.name in ("fnm", "element_balanced"):
            blend = float(self.options["blend"])
            term = self._fnm(d_f) if self.name == "fnm" else self._element_balanced(d_f)
            if blend < 1:
                term = blend * term + (1 - blend) * torch.mean(d_f ** 2)
            return w.energy * loss_e + w.forces * term
        loss = energy_force_mse(energy_pred, energy_ref, forces_pred, forces_ref, w)
        if self.name == "max_error":
            k = min(int(self.options["top_k"]), n_atoms)
            worst = torch.topk((d_f ** 2).sum(dim=2), k, dim=1).values  # (n_molecules, k): |dF_i|^2
            loss = loss + float(self.options["max_weight"]) * worst.mean()
        return loss

    def _fnm(self, d_f: Tensor) -> Tensor:
        return torch.mean((d_f * self._mass_scale.to(d_f)[None, :, None]) ** 2)

    def _element_balanced(self, d_f: Tensor) -> Tensor:
        per_atom = (d_f ** 2).mean(dim=(0, 2))  # (n_atoms,): mean over frames and components
        per_element = torch.zeros(self._n_elements, dtype=per_atom.dtype, device=per_atom.device)
        per_element = per_element.index_add(0, self._element_index.to(per_atom.device), per_atom)
        counts = torch.bincount(self._element_index, minlength=self._n_elements).to(per_atom)
        return torch.mean(per_element / counts)
