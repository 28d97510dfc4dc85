"""ViSNet (Wang et al., "Enhancing geometric representations for molecules with equivariant
vector-scalar interactive message passing", Nature Communications 15, 313, 2024), in plain PyTorch.

Each atom carries scalar features x (hidden) and equivariant features vec (C x hidden), where the
C components are the real spherical harmonics of degree 1 (C = 3, lmax = 1: vectors) or of degrees
1 and 2 (C = 8, lmax = 2). Each edge carries invariant features f_ij. A vector-scalar interactive
message-passing (ViS-MP) layer updates all three:

- node messages: multi-head attention from queries, keys and the edge features, times the cosine
  cutoff; vector messages are the neighbour's features and the bond's spherical harmonics, scaled
  by invariants of the scalar message;
- runtime geometry calculation (RGC), which feeds geometry into the scalars at linear cost:
  * angles: the dot product (U1 vec_i) . (U2 vec_i) of an atom's own features; since vec_i is a
    sum over neighbours of terms along the bond directions d_ij, it expands into
    sum_jk w_j w_k (d_ij . d_ik), i.e. the cosines of the angles j-i-k, without enumerating them;
  * dihedrals: on each edge, the parts of (W_t vec_i) and (W_s vec_j) perpendicular to the bond
    (vector rejection) are dotted, which measures the torsion of i's and j's surroundings about
    the bond i-j; this updates the edge features;
  * improper angles (optional, `vertex=True`): two rejections of the receiving atom's own features.

Conventions as elsewhere in openmlff.models: lengths in Å, edges (i receiver, j sender) from
`neighbors.neighbor_pairs` with r_ij = pos[j] - pos[i]; the network returns one raw scalar per
atom and `EnergyModel` turns it into energies (eV) and forces (eV/Å).

Differences from the authors' code (microsoft/ViSNet; also torch_geometric.nn.models.ViSNet), both deliberate:
- there, vector messages are not multiplied by the cutoff, so once the bias of the message
  projection has been trained away from zero a neighbour entering the cutoff sphere makes the
  energy jump. Here every message, scalar and vector, carries the cosine cutoff, so energy and
  forces are continuous at the cutoff for any weights;
- there, with lmax 2 the vector rejection removes the component along the stacked 8-component
  harmonics, whose norm is sqrt(2), and the dihedral term then reduces exactly to a plain dot
  product. Here the rejection is taken within each degree (see `rejection_dot`); for lmax 1 the
  two agree.
The authors' vector layer norm is left out: its default ("none") is the identity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..core.errors import InputError
from .et import NeighborEmbedding
from .layers import (MAX_Z, CosineCutoff, EquivariantScalarHead, ExpNormalSmearing, aggregate_and_update,
                     aggregate_scalars, xavier_init)
from .neighbors import find_pairs


@dataclass
class ViSNetConfig:
    """ViSNet hyperparameters. Defaults are CPU-sized; `ViSNetConfig.paper()` gives the authors' MD17 sizes."""

    hidden_channels: int = 64
    num_layers: int = 3
    num_heads: int = 8
    num_rbf: int = 32
    lmax: int = 1  # 1: vector features (3 components); 2: also degree-2 harmonics (8 components)
    cutoff_angstrom: float = 5.0
    trainable_rbf: bool = False
    vertex: bool = False  # add the improper-angle term to the edge update (the authors' "vertex" variant)
    neighbor_method: str = "auto"  # all_pairs, cell_list or auto (see models/neighbors.py)

    def __post_init__(self) -> None:
        if self.lmax not in (1, 2):
            raise InputError(f"ViSNetConfig.lmax must be 1 or 2, got {self.lmax}")
        if self.hidden_channels % self.num_heads != 0:
            raise InputError(f"ViSNetConfig.hidden_channels ({self.hidden_channels}) must be divisible "
                             f"by num_heads ({self.num_heads})")
        if self.hidden_channels < 2 or self.num_layers < 1:
            raise InputError(f"ViSNetConfig needs hidden_channels >= 2 and num_layers >= 1, got "
                             f"{self.hidden_channels} and {self.num_layers}")

    @classmethod
    def paper(cls) -> "ViSNetConfig":
        """The authors' MD17 model: 256 channels, 9 ViS-MP layers, 8 heads, 32 ExpNormal RBF (fixed),
        lmax 2, 5 Å cutoff, with the vertex (improper-angle) term, as in the defaults of their
        ViSNetBlock."""
        return cls(hidden_channels=256, num_layers=9, num_heads=8, num_rbf=32, lmax=2,
                   cutoff_angstrom=5.0, trainable_rbf=False, vertex=True)

    def to_dict(self) -> dict:
        return asdict(self)


def spherical_harmonics(unit: Tensor, lmax: int) -> Tensor:
    """Real spherical harmonics of unit vectors (E, 3) -> (E, 3) for lmax 1, (E, 8) for lmax 2.

    Degree 1 is the vector itself; the five of degree 2 are scaled so that they too have norm 1 on
    unit vectors (what `rejection_dot` relies on). Each degree's block rotates by an orthogonal
    matrix, so dot products within a block are invariant.
    """
    x, y, z = unit[:, 0], unit[:, 1], unit[:, 2]
    if lmax == 1:
        return unit
    s3 = math.sqrt(3.0)
    degree2 = torch.stack([s3 * x * z, s3 * x * y, y * y - 0.5 * (x * x + z * z), s3 * y * z,
                           0.5 * s3 * (z * z - x * x)], dim=-1)
    return torch.cat([unit, degree2], dim=-1)


def rejection_dot(a: Tensor, b: Tensor, sh: Tensor, lmax: int) -> Tensor:
    """Dot product of the vector rejections of a and b from the bond, per edge and channel:
    sum_l (a_l - (a_l . d_l) d_l) . (b_l - (b_l . d_l) d_l) = a . b - sum_l (a_l . d_l)(b_l . d_l).

    a, b: (E, C, H) features; sh: (E, C) the bond's spherical harmonics; the rejection is taken in
    each degree's block l (3 components for l = 1, 5 for l = 2), where d_l has unit norm. Expanding
    the product avoids building the rejected tensors.
    """
    out = (a * b).sum(dim=1)
    start = 0
    for degree in range(1, lmax + 1):
        stop = start + 2 * degree + 1
        d = sh[:, start:stop].unsqueeze(-1)
        out = out - (a[:, start:stop] * d).sum(dim=1) * (b[:, start:stop] * d).sum(dim=1)
        start = stop
    return out


class EdgeEmbedding(nn.Module):
    """Initial edge features f_ij = (x_i + x_j) * W rbf(r_ij): symmetric in the two atoms."""

    def __init__(self, num_rbf: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(num_rbf, hidden)
        xavier_init(self.proj)

    def forward(self, x: Tensor, i: Tensor, j: Tensor, rbf: Tensor) -> Tensor:
        return (x[i] + x[j]) * self.proj(rbf)


class ViSMessagePassing(nn.Module):
    """The node part of one ViS-MP layer: returns the updates (dx, dvec) of scalar and vector features."""

    def __init__(self, hidden: int, num_heads: int, cutoff_angstrom: float):
        super().__init__()
        self.hidden = hidden
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.layernorm = nn.LayerNorm(hidden)
        self.act = nn.SiLU()
        self.cutoff = CosineCutoff(cutoff_angstrom)
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.dk_proj = nn.Linear(hidden, hidden)
        self.dv_proj = nn.Linear(hidden, hidden)
        self.s_proj = nn.Linear(hidden, 2 * hidden)
        self.o_proj = nn.Linear(hidden, 3 * hidden)
        self.vec_proj = nn.Linear(hidden, 3 * hidden, bias=False)
        xavier_init(self.q_proj, self.k_proj, self.v_proj, self.dk_proj, self.dv_proj, self.s_proj, self.o_proj,
                self.vec_proj)

    def forward(self, x: Tensor, vec: Tensor, f: Tensor, i: Tensor, j: Tensor, r: Tensor,
                sh: Tensor) -> Tuple[Tensor, Tensor]:
        n, h, dh, hid = x.size(0), self.num_heads, self.head_dim, self.hidden
        x = self.layernorm(x)
        q = self.q_proj(x).view(n, h, dh)
        k = self.k_proj(x).view(n, h, dh)
        v = self.v_proj(x).view(n, h, dh)
        dk = self.act(self.dk_proj(f)).view(-1, h, dh)
        dv = self.act(self.dv_proj(f)).view(-1, h, dh)
        vec1, vec2, vec3 = torch.split(self.vec_proj(vec), hid, dim=-1)
        vec_dot = (vec1 * vec2).sum(dim=1)  # RGC: angles j-i-k through the atom's own vectors

        cut = self.cutoff(r)
        attn = self.act((q[i] * k[j] * dk).sum(dim=-1)) * cut.unsqueeze(1)
        x_msg = (v[j] * dv * attn.unsqueeze(2)).reshape(-1, hid)
        s1, s2 = torch.split(self.act(self.s_proj(x_msg)) * cut.unsqueeze(1), hid, dim=1)
        vec_msg = vec[j] * s1.unsqueeze(1) + s2.unsqueeze(1) * sh.unsqueeze(2)

        o = self.o_proj(aggregate_scalars(x_msg, i, n))
        return aggregate_and_update(vec_msg, i, vec, vec_dot, vec3, o)


class EdgeUpdate(nn.Module):
    """The edge part of a ViS-MP layer: df_ij from the dihedral-like dot product of vector rejections.

    w_ij = Rej_d(W_t vec_i) . Rej_d(W_s vec_j) (d: the bond's spherical harmonics; see
    `rejection_dot`); with `vertex` also t_ij = Rej_d(T_t vec_i) . Rej_d(T_s vec_i), an
    improper-angle-like term of atom i alone.
    """

    def __init__(self, hidden: int, vertex: bool, lmax: int):
        super().__init__()
        self.hidden = hidden
        self.vertex = vertex
        self.lmax = lmax
        self.act = nn.SiLU()
        self.w_trg_proj = nn.Linear(hidden, hidden, bias=False)
        self.w_src_proj = nn.Linear(hidden, hidden, bias=False)
        self.f_proj = nn.Linear(hidden, 2 * hidden if vertex else hidden)
        xavier_init(self.w_trg_proj, self.w_src_proj, self.f_proj)
        if vertex:
            self.t_trg_proj = nn.Linear(hidden, hidden, bias=False)
            self.t_src_proj = nn.Linear(hidden, hidden, bias=False)
            xavier_init(self.t_trg_proj, self.t_src_proj)
        else:  # TorchScript needs the attributes; identity maps that the vertex=False branch never calls
            self.t_trg_proj = nn.Identity()
            self.t_src_proj = nn.Identity()

    def forward(self, vec: Tensor, f: Tensor, i: Tensor, j: Tensor, sh: Tensor) -> Tensor:
        # project per atom, then gather per edge: W(vec)[i] == W(vec[i]) at a fraction of the cost
        w_dot = rejection_dot(self.w_trg_proj(vec)[i], self.w_src_proj(vec)[j], sh, self.lmax)
        gates = self.act(self.f_proj(f))
        if not self.vertex:
            return gates * w_dot
        t_dot = rejection_dot(self.t_trg_proj(vec)[i], self.t_src_proj(vec)[i], sh, self.lmax)
        g1, g2 = torch.split(gates, self.hidden, dim=-1)
        return g1 * w_dot + g2 * t_dot


class ViSMPBlock(nn.Module):
    """A full ViS-MP layer: node updates (dx, dvec) and edge update df, all from the same inputs."""

    def __init__(self, hidden: int, num_heads: int, cutoff_angstrom: float, vertex: bool, lmax: int):
        super().__init__()
        self.nodes = ViSMessagePassing(hidden, num_heads, cutoff_angstrom)
        self.edges = EdgeUpdate(hidden, vertex, lmax)

    def forward(self, x: Tensor, vec: Tensor, f: Tensor, i: Tensor, j: Tensor, r: Tensor,
                sh: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        dx, dvec = self.nodes(x, vec, f, i, j, r, sh)
        return dx, dvec, self.edges(vec, f, i, j, sh)


class ViSNet(nn.Module):
    """ViSNet representation + equivariant scalar head: (z, pos in Å, batch) -> one raw output per atom."""

    def __init__(self, config: ViSNetConfig):
        super().__init__()
        c = config
        self.cutoff_angstrom = float(c.cutoff_angstrom)
        self.neighbor_method = c.neighbor_method
        self.hidden = c.hidden_channels
        self.lmax = c.lmax
        self.num_components = (c.lmax + 1) ** 2 - 1
        self.embedding = nn.Embedding(MAX_Z, c.hidden_channels)
        self.rbf = ExpNormalSmearing(c.cutoff_angstrom, c.num_rbf, c.trainable_rbf)
        self.neighbor_embedding = NeighborEmbedding(c.hidden_channels, c.num_rbf, c.cutoff_angstrom)
        self.edge_embedding = EdgeEmbedding(c.num_rbf, c.hidden_channels)
        # the last layer updates nodes only: edge features after it would feed nothing
        self.blocks = nn.ModuleList([ViSMPBlock(c.hidden_channels, c.num_heads, c.cutoff_angstrom, c.vertex, c.lmax)
                                     for _ in range(c.num_layers - 1)])
        self.last_layer = ViSMessagePassing(c.hidden_channels, c.num_heads, c.cutoff_angstrom)
        self.out_norm = nn.LayerNorm(c.hidden_channels)
        self.head = EquivariantScalarHead(c.hidden_channels)

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None,
                pairs: Optional[Tensor] = None) -> Tensor:
        i, j, rij = find_pairs(pos, batch, self.cutoff_angstrom, self.neighbor_method, box, pairs)
        r = torch.linalg.vector_norm(rij, dim=-1)
        sh = spherical_harmonics(rij / r.unsqueeze(-1), self.lmax)
        rbf = self.rbf(r)
        x = self.neighbor_embedding(z, self.embedding(z), i, j, r, rbf)
        f = self.edge_embedding(x, i, j, rbf)
        vec = torch.zeros(x.size(0), self.num_components, self.hidden, dtype=x.dtype, device=x.device)
        for block in self.blocks:
            dx, dvec, df = block(x, vec, f, i, j, r, sh)
            x = x + dx
            vec = vec + dvec
            f = f + df
        dx, dvec = self.last_layer(x, vec, f, i, j, r, sh)
        x = x + dx
        vec = vec + dvec
        return self.head(self.out_norm(x), vec)
