"""Building blocks shared by the architectures: cutoff and radial basis (neighbour search: neighbors.py).

All lengths in Å. Every block is TorchScript-compatible so an exported model carries no Python.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor, nn

#: Rows of every table indexed by atomic number (element embeddings, per-element reference energies):
#: Z = 0..99, room above elements.MAX_ATOMIC_NUMBER. A model's state and a checkpoint's arrays have this size.
MAX_Z = 100


class CosineCutoff(nn.Module):
    """Smooth cutoff f(r) = (cos(pi r / r_c) + 1) / 2 for r < r_c, else 0 (value and slope vanish at r_c)."""

    def __init__(self, cutoff_angstrom: float):
        super().__init__()
        self.cutoff = float(cutoff_angstrom)

    def forward(self, r: Tensor) -> Tensor:
        inside = (r < self.cutoff).to(r.dtype)
        return 0.5 * (torch.cos(r * (math.pi / self.cutoff)) + 1.0) * inside


class ExpNormalSmearing(nn.Module):
    """TorchMD-Net's radial basis: exp(-beta_k (exp(-alpha r) - mu_k)^2) times the cosine cutoff.

    alpha = 5 / r_c spreads the centres mu_k evenly in exp(-alpha r), which puts more functions at
    short range where the energy varies fastest (Unke and Meuwly, PhysNet, 2019).
    """

    def __init__(self, cutoff_angstrom: float, num_rbf: int, trainable: bool = True):
        super().__init__()
        self.alpha = 5.0 / cutoff_angstrom
        self.cutoff = CosineCutoff(cutoff_angstrom)
        start = math.exp(-cutoff_angstrom * self.alpha)
        means = torch.linspace(start, 1.0, num_rbf)
        betas = torch.full((num_rbf,), (2.0 / num_rbf * (1.0 - start)) ** -2)
        if trainable:
            self.means = nn.Parameter(means)
            self.betas = nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def forward(self, r: Tensor) -> Tensor:
        r = r.unsqueeze(-1)
        return self.cutoff(r) * torch.exp(-self.betas * (torch.exp(-self.alpha * r) - self.means) ** 2)


def aggregate_and_update(vec_msg: Tensor, receivers: Tensor, vec: Tensor, vec_dot: Tensor, vec3: Tensor,
                         o: Tensor) -> Tuple[Tensor, Tensor]:
    """The node update shared by ET and ViSNet: sum vector messages per receiver, mix scalars and vectors.

    With o = (o1, o2, o3) = W_o sum_j x_msg (each model applies its own W_o to `aggregate_scalars`):
    dx = vec_dot * o2 + o3 and dvec = vec3 * o1 + sum_j vec_msg.
    """
    hid = vec.size(-1)
    vec_agg = torch.zeros_like(vec).index_add_(0, receivers, vec_msg)
    o1, o2, o3 = torch.split(o, hid, dim=1)
    return vec_dot * o2 + o3, vec3 * o1.unsqueeze(1) + vec_agg


def aggregate_scalars(x_msg: Tensor, receivers: Tensor, n_atoms: int) -> Tensor:
    """Sum of scalar messages (E, hidden) per receiving atom -> (n_atoms, hidden)."""
    return torch.zeros(n_atoms, x_msg.size(1), dtype=x_msg.dtype, device=x_msg.device).index_add_(0, receivers, x_msg)


def safe_norm(vec: Tensor, eps: float = 1.0e-8) -> Tensor:
    """Norm over the component axis (N, C, H) -> (N, H), with `eps` under the square root so its
    gradient stays finite (also the second one, which force training needs) where a feature is zero:
    on an isolated atom, or where contributions cancel by symmetry."""
    return torch.sqrt((vec * vec).sum(dim=1) + eps)


def xavier_init(*layers: nn.Linear) -> None:
    for lin in layers:
        nn.init.xavier_uniform_(lin.weight)
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)


class GatedEquivariantBlock(nn.Module):
    """PaiNN's gated equivariant block: scalars mix with vector norms; vectors are rescaled by learned gates."""

    def __init__(self, hidden_in: int, hidden_out: int):
        super().__init__()
        self.hidden_out = hidden_out
        self.vec1_proj = nn.Linear(hidden_in, hidden_in, bias=False)
        self.vec2_proj = nn.Linear(hidden_in, hidden_out, bias=False)
        self.update = nn.Sequential(nn.Linear(2 * hidden_in, hidden_in), nn.SiLU(), nn.Linear(hidden_in, 2 * hidden_out))
        self.act = nn.SiLU()
        xavier_init(self.vec1_proj, self.vec2_proj, self.update[0], self.update[2])

    def forward(self, x: Tensor, vec: Tensor) -> Tuple[Tensor, Tensor]:
        h = torch.cat([x, safe_norm(self.vec1_proj(vec))], dim=-1)
        x, gate = torch.split(self.update(h), self.hidden_out, dim=-1)
        return self.act(x), gate.unsqueeze(1) * self.vec2_proj(vec)


class EquivariantScalarHead(nn.Module):
    """Output head: a gated equivariant block, then one invariant scalar per atom from scalars and vector norms.

    The authors' head is two gated blocks whose last vector output is thrown away; computing only
    the scalar of the second block gives the same function without unused parameters.
    """

    def __init__(self, hidden: int):
        super().__init__()
        half = hidden // 2
        self.block = GatedEquivariantBlock(hidden, half)
        self.vec_proj = nn.Linear(half, half, bias=False)
        self.readout = nn.Sequential(nn.Linear(2 * half, half), nn.SiLU(), nn.Linear(half, 1))
        xavier_init(self.vec_proj, self.readout[0], self.readout[2])

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        x, vec = self.block(x, vec)
        return self.readout(torch.cat([x, safe_norm(self.vec_proj(vec))], dim=-1)).squeeze(-1)
