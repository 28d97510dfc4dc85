"""The equivariant transformer (ET) of TorchMD-Net (Thölke and De Fabritiis, ICLR 2022), in plain PyTorch.

Each atom carries scalar features x (hidden) and vector features vec (3 x hidden). Layers of
equivariant multi-head attention exchange both along edges: attention weights come from
queries, keys and a distance filter; vectors are rotated copies of neighbour vectors and of the
unit bond vector, so the energy is invariant and forces equivariant by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from ..core.errors import InputError
from .layers import (MAX_Z, CosineCutoff, EquivariantScalarHead, ExpNormalSmearing, aggregate_and_update,
                     aggregate_scalars)
from .neighbors import find_pairs


@dataclass
class ETConfig:
    """ET hyperparameters. Defaults are CPU-sized; `ETConfig.paper()` gives the sizes of the paper's MD17 runs."""

    hidden_channels: int = 64
    num_layers: int = 3
    num_heads: int = 8
    num_rbf: int = 32
    cutoff_angstrom: float = 5.0
    trainable_rbf: bool = True
    neighbor_method: str = "auto"  # all_pairs, cell_list or auto (see models/neighbors.py)
    #: "gated": TorchMD-Net's head, a gated equivariant block that reads the vector features too (they carry
    #: what the last layer learnt about directions); "scalar": an MLP on the scalar features alone (before 0.1.1).
    output_head: str = "gated"

    #: hyperparameters added later, with the value that rebuilds a model saved without them
    ADDED: ClassVar[dict] = {"output_head": "scalar"}
    OUTPUT_HEADS: ClassVar[tuple] = ("gated", "scalar")

    def __post_init__(self) -> None:
        if self.output_head not in self.OUTPUT_HEADS:
            raise InputError(f"output_head must be one of {list(self.OUTPUT_HEADS)}, got {self.output_head!r}")

    @classmethod
    def paper(cls) -> "ETConfig":
        """Sizes used for MD17 in Thölke and De Fabritiis (2022): 256 channels, 6 layers, 8 heads, 32 RBF, 5 Å."""
        return cls(hidden_channels=256, num_layers=6, num_heads=8, num_rbf=32, cutoff_angstrom=5.0)

    def to_dict(self) -> dict:
        return asdict(self)


class NeighborEmbedding(nn.Module):
    """x_i <- W [x_i, sum_j filter(r_ij) emb(z_j)]: starts each atom off knowing its surroundings."""

    def __init__(self, hidden: int, num_rbf: int, cutoff_angstrom: float):
        super().__init__()
        self.embedding = nn.Embedding(MAX_Z, hidden)
        self.distance_proj = nn.Linear(num_rbf, hidden)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.cutoff = CosineCutoff(cutoff_angstrom)

    def forward(self, z: Tensor, x: Tensor, i: Tensor, j: Tensor, r: Tensor, rbf: Tensor) -> Tensor:
        w = self.distance_proj(rbf) * self.cutoff(r).unsqueeze(-1)
        neighbours = torch.zeros_like(x).index_add_(0, i, w * self.embedding(z)[j])
        return self.combine(torch.cat([x, neighbours], dim=1))


class EquivariantAttention(nn.Module):
    """One ET interaction layer: returns the updates (dx, dvec) for scalar and vector features."""

    def __init__(self, hidden: int, num_rbf: int, num_heads: int, cutoff_angstrom: float):
        super().__init__()
        if hidden % num_heads != 0:
            raise InputError(f"hidden_channels ({hidden}) must be divisible by num_heads ({num_heads})")
        self.hidden = hidden
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.layernorm = nn.LayerNorm(hidden)
        self.act = nn.SiLU()
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, 3 * hidden)
        self.o_proj = nn.Linear(hidden, 3 * hidden)
        self.vec_proj = nn.Linear(hidden, 3 * hidden, bias=False)
        self.dk_proj = nn.Linear(num_rbf, hidden)
        self.dv_proj = nn.Linear(num_rbf, 3 * hidden)
        self.cutoff = CosineCutoff(cutoff_angstrom)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.dk_proj, self.dv_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.xavier_uniform_(self.vec_proj.weight)

    def forward(self, x: Tensor, vec: Tensor, i: Tensor, j: Tensor, r: Tensor, rbf: Tensor, unit: Tensor):
        n = x.size(0)
        h, dh, hid = self.num_heads, self.head_dim, self.hidden
        x = self.layernorm(x)
        q = self.q_proj(x).view(n, h, dh)
        k = self.k_proj(x).view(n, h, dh)
        v = self.v_proj(x).view(n, h, 3 * dh)
        vec1, vec2, vec3 = torch.split(self.vec_proj(vec), hid, dim=-1)
        vec_dot = (vec1 * vec2).sum(dim=1)

        dk = self.act(self.dk_proj(rbf)).view(-1, h, dh)
        dv = self.act(self.dv_proj(rbf)).view(-1, h, 3 * dh)
        smooth = self.cutoff(r)
        attn = self.act((q[i] * k[j] * dk).sum(dim=-1)) * smooth.unsqueeze(1)
        x_msg, v1, v2 = torch.split(v[j] * dv, dh, dim=2)
        x_msg = (x_msg * attn.unsqueeze(2)).reshape(-1, hid)
        # Unlike TorchMD-Net, the vector message also carries the cutoff: with trained (non-zero)
        # biases in dv_proj it would otherwise jump when a neighbour crosses the cutoff.
        vec_msg = (vec[j] * v1.reshape(-1, 1, hid) + v2.reshape(-1, 1, hid) * unit.unsqueeze(2)) * smooth.view(-1, 1, 1)

        o = self.o_proj(aggregate_scalars(x_msg, i, n))
        return aggregate_and_update(vec_msg, i, vec, vec_dot, vec3, o)


class EquivariantTransformer(nn.Module):
    """ET representation + output head: (z, pos in Å, batch) -> one raw output per atom (before scaling)."""

    __constants__ = ["gated"]

    def __init__(self, config: ETConfig):
        super().__init__()
        c = config
        self.cutoff_angstrom = float(c.cutoff_angstrom)
        self.neighbor_method = c.neighbor_method
        self.hidden = c.hidden_channels
        self.embedding = nn.Embedding(MAX_Z, c.hidden_channels)
        self.rbf = ExpNormalSmearing(c.cutoff_angstrom, c.num_rbf, c.trainable_rbf)
        self.neighbor_embedding = NeighborEmbedding(c.hidden_channels, c.num_rbf, c.cutoff_angstrom)
        self.layers = nn.ModuleList(
            [EquivariantAttention(c.hidden_channels, c.num_rbf, c.num_heads, c.cutoff_angstrom) for _ in range(c.num_layers)])
        self.out_norm = nn.LayerNorm(c.hidden_channels)
        self.gated = c.output_head == "gated"
        if self.gated:
            self.head = EquivariantScalarHead(c.hidden_channels)
        else:
            self.head = nn.Sequential(
                nn.Linear(c.hidden_channels, c.hidden_channels // 2), nn.SiLU(), nn.Linear(c.hidden_channels // 2, 1))

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None,
                pairs: Optional[Tensor] = None) -> Tensor:
        i, j, rij = find_pairs(pos, batch, self.cutoff_angstrom, self.neighbor_method, box, pairs)
        r = torch.linalg.vector_norm(rij, dim=-1)
        unit = rij / r.unsqueeze(-1)
        rbf = self.rbf(r)
        x = self.embedding(z)
        x = self.neighbor_embedding(z, x, i, j, r, rbf)
        vec = torch.zeros(x.size(0), 3, self.hidden, dtype=x.dtype, device=x.device)
        for layer in self.layers:
            dx, dvec = layer(x, vec, i, j, r, rbf, unit)
            x = x + dx
            vec = vec + dvec
        if self.gated:
            return self.head(self.out_norm(x), vec)
        return self.head(self.out_norm(x)).squeeze(-1)
