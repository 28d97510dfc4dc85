"""NequIP (Batzner et al., Nature Communications 13, 2453, 2022): E(3)-equivariant message passing on geometric tensors.

Each atom carries features that are irreducible representations of O(3) (irreps: scalars 0e/0o,
vectors 1o/1e, ... up to l_max). An interaction layer
  1. mixes an atom's channels (equivariant linear),
  2. sends every neighbour j's features to atom i through a tensor product with the spherical
     harmonics Y(r_ij / |r_ij|), weighted per edge by a radial MLP of a Bessel basis times the
     polynomial envelope (p=6), which vanishes smoothly at the cutoff,
  3. sums the messages (divided by sqrt of the average neighbour count), mixes them linearly,
     adds an element-dependent self-connection, applies a gated nonlinearity (scalars through
     SiLU/tanh, l>0 irreps scaled by SiLU gates), and adds the result to its input (resnet) when
     the irreps match.
The last layer keeps only scalars; a linear layer turns them into one raw output per atom.

The irreps algebra (spherical harmonics, Clebsch-Gordan tensor products, equivariant linear maps)
comes from e3nn, whose modules script with plain `torch.jit.script`; the gate, radial MLP and
radial basis are written here in plain torch so the whole network scripts without e3nn's tracing.

Three choices differ from the reference code so that the model learns at openmlff's default
training settings (Adam, learning rate 1e-3 with warm-up, EMA of weights), measured on rMD17 aspirin:
- weights are stored at PyTorch's usual 1/sqrt(fan-in) scale instead of e3nn's N(0, 1) with the
  1/sqrt(fan-in) applied in the forward pass. The function is the same, but Adam moves every weight
  by about the learning rate whatever its scale, so N(0, 1) weights learn sqrt(fan-in) times slower
  (NequIP compensates with learning rates of 5e-3 to 1e-2);
- the radial basis is scaled so that at initialisation messages are comparable to the
  self-connection (see BesselBasis);
- the output layer starts at zero, so a fresh model predicts zero forces instead of large random
  ones that the EMA of weights would carry for hundreds of steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional

import numpy as np
import contextlib

import torch
from torch import Tensor, nn

try:
    from e3nn import o3
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the NequIP architecture needs the package e3nn (pip install e3nn==0.6.0)") from exc

from ..core.errors import InputError
from .layers import MAX_Z
from .neighbors import find_pairs


@contextlib.contextmanager
def eager_e3nn():
    """e3nn's modules built inside are plain Python (jit_mode "eager", e3nn's default under torch >= 2.10), whatever
    a library loaded before set (loading a nequip model sets "script", whose ScriptFunctions cannot be deep-copied
    for the EMA); the setting is restored after."""
    import e3nn

    saved = e3nn.get_optimization_defaults()["jit_mode"]
    e3nn.set_optimization_defaults(jit_mode="eager")
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(jit_mode=saved)


@dataclass
class NequIPConfig:
    """NequIP hyperparameters. Defaults are CPU-sized; `NequIPConfig.paper()` gives the paper's rMD17 sizes.

    Hidden features are `num_features` copies of every irrep up to `l_max`, with both parities
    when `parity` is true (32x0e+32x0o+32x1o+32x1e for l_max=1), else only the parity (-1)^l of
    the spherical harmonics (32x0e+32x1o). `avg_num_neighbors` is the constant by whose square root
    the summed messages are divided; set it near the mean number of neighbours within the cutoff
    in the data (rMD17 aspirin: 14.4 at 5 Å, 10.5 at 4 Å).
    """

    num_features: int = 32
    l_max: int = 1
    parity: bool = False
    num_layers: int = 3
    num_bessel: int = 8
    trainable_bessel: bool = True
    polynomial_p: int = 6
    radial_mlp_layers: int = 2
    radial_mlp_width: int = 64
    avg_num_neighbors: float = 14.0
    resnet: bool = True
    cutoff_angstrom: float = 5.0
    neighbor_method: str = "auto"  # all_pairs, cell_list or auto (see models/neighbors.py)

    @classmethod
    def paper(cls) -> "NequIPConfig":
        """The rMD17/MD17 model of Batzner et al. (2022): l_max 3, 64 features of both parities, 5 layers,
        radial MLP of 2 hidden layers of 64, 8 trainable Bessel functions, p=6, r_max 4 Å."""
        return cls(num_features=64, l_max=3, parity=True, num_layers=5, num_bessel=8, trainable_bessel=True,
                   polynomial_p=6, radial_mlp_layers=2, radial_mlp_width=64, avg_num_neighbors=10.5,
                   cutoff_angstrom=4.0)

    def to_dict(self) -> dict:
        return asdict(self)


def second_moment_normalizer(fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """c with E[(c fn(x))^2] = 1 for x ~ N(0, 1) (Gauss-Hermite quadrature): keeps activations at unit scale, as e3nn does."""
    x, w = np.polynomial.hermite_e.hermegauss(100)
    return float(1.0 / math.sqrt(np.sum(w * fn(x) ** 2) / math.sqrt(2.0 * math.pi)))


SILU_NORM = second_moment_normalizer(lambda x: x / (1.0 + np.exp(-x)))
TANH_NORM = second_moment_normalizer(np.tanh)


#: Factor on the dimensionless Bessel basis. Chosen so that at initialisation the summed messages are
#: of the order of the self-connection (about 0.4 and 0.6 on aspirin); on rMD17 aspirin 0.3 learned
#: fastest of 0.15, 0.3, 0.6 and 1.0 (force MAE after 200 steps: 3.9, 3.7, 4.2, and much worse at 1.0,
#: where features grow layer by layer through the multiplicative gates).
RADIAL_BASIS_SCALE = 0.3


class BesselBasis(nn.Module):
    """b_n(r) = s sin(n pi r / r_c) / (r / r_c), n = 1..num_basis, s = RADIAL_BASIS_SCALE: DimeNet's Bessel basis.

    DimeNet and NequIP scale sin(n pi r / r_c) / r by 2 / r_c (b_n about 0.1 for r_c = 5 Å), which
    makes the radial MLP's outputs, the tensor-product weights, a tenth of their intended unit
    scale: messages then start ten times weaker than the self-connection and forces are learned
    slowly. The frequencies n pi may be trained.
    """

    def __init__(self, cutoff_angstrom: float, num_basis: int, trainable: bool = True):
        super().__init__()
        self.cutoff = float(cutoff_angstrom)
        self.scale = RADIAL_BASIS_SCALE
        frequencies = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi
        if trainable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)

    def forward(self, r: Tensor) -> Tensor:
        x = (r / self.cutoff).unsqueeze(-1)
        return self.scale * torch.sin(self.frequencies * x) / x


class PolynomialCutoff(nn.Module):
    """Envelope u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = r / r_c, zero beyond r_c.

    Its value, slope and curvature vanish at r_c, so energies and forces are continuous as an atom
    crosses the cutoff (Klicpera et al., DimeNet, 2020).
    """

    def __init__(self, cutoff_angstrom: float, p: int = 6):
        super().__init__()
        if p < 2:
            raise InputError(f"polynomial_p must be at least 2, got {p}")
        self.cutoff = float(cutoff_angstrom)
        self.p = float(p)

    def forward(self, r: Tensor) -> Tensor:
        x = r / self.cutoff
        p = self.p
        out = (1.0 - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(x, p) + p * (p + 2.0) * torch.pow(x, p + 1.0)
               - p * (p + 1.0) / 2.0 * torch.pow(x, p + 2.0))
        return out * (x < 1.0).to(r.dtype)


class RadialMLP(nn.Module):
    """Edge radial features -> tensor-product weights: bias-free linear layers with normalised SiLU.

    No biases, so zero input (an edge at the cutoff) gives zero weights: messages fade out smoothly.
    Weights start N(0, 1 / fan-in), so every layer's outputs keep unit scale.
    """

    def __init__(self, num_in: int, width: int, num_hidden_layers: int, num_out: int):
        super().__init__()
        sizes = [num_in] + [width] * num_hidden_layers + [num_out]
        self.hidden = nn.ModuleList([_bias_free_linear(a, b) for a, b in zip(sizes[:-2], sizes[1:-1])])
        self.out = _bias_free_linear(sizes[-2], sizes[-1])
        self.act_norm = SILU_NORM

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = torch.nn.functional.silu(layer(x)) * self.act_norm
        return self.out(x)


def _bias_free_linear(num_in: int, num_out: int) -> nn.Linear:
    layer = nn.Linear(num_in, num_out, bias=False)
    nn.init.normal_(layer.weight, std=1.0 / math.sqrt(num_in))
    return layer


class Gate(nn.Module):
    """Gated nonlinearity on irreps laid out as [scalars | gates | gated].

    Even scalars go through SiLU, odd ones through tanh (odd, so parity is kept); each gated irrep
    (l > 0) is multiplied by SiLU of its own even scalar gate. Output layout: [scalars | gated].
    """

    def __init__(self, irreps_scalars: o3.Irreps, irreps_gated: o3.Irreps):
        super().__init__()
        self.irreps_in = (irreps_scalars + o3.Irreps([(mul, "0e") for mul, _ in irreps_gated]) + irreps_gated)
        self.irreps_out = irreps_scalars + irreps_gated
        self.n_scalars = irreps_scalars.dim
        self.n_gates = irreps_gated.num_irreps
        odd = torch.cat([torch.full((mul,), ir.p < 0, dtype=torch.bool) for mul, ir in irreps_scalars]) \
            if len(irreps_scalars) else torch.zeros(0, dtype=torch.bool)
        self.register_buffer("odd_scalar", odd, persistent=False)
        # for each component of the gated irreps, the index of the gate that scales it
        index, offset = [], 0
        for mul, ir in irreps_gated:
            index.append(torch.arange(offset, offset + mul).repeat_interleave(ir.dim))
            offset += mul
        self.register_buffer("gate_index", torch.cat(index) if index else torch.zeros(0, dtype=torch.long),
                             persistent=False)
        self.silu_norm = SILU_NORM
        self.tanh_norm = TANH_NORM

    def forward(self, x: Tensor) -> Tensor:
        s = x[:, :self.n_scalars]
        scalars = torch.where(self.odd_scalar, torch.tanh(s) * self.tanh_norm,
                              torch.nn.functional.silu(s) * self.silu_norm)
        if self.n_gates == 0:
            return scalars
        gates = torch.nn.functional.silu(x[:, self.n_scalars:self.n_scalars + self.n_gates]) * self.silu_norm
        gated = x[:, self.n_scalars + self.n_gates:] * gates[:, self.gate_index]
        return torch.cat([scalars, gated], dim=1)


def _fan_in_gains(linear: o3.Linear) -> Tensor:
    """sqrt(fan-in) of every weight of an e3nn Linear, in the order of its flattened weights.

    e3nn multiplies each path's N(0, 1) weights by 1/sqrt(fan-in); storing weights divided by these
    gains and multiplying them back in gives the same function with weights at the usual scale.
    """
    gains = [torch.full((math.prod(ins.path_shape),), 1.0 / ins.path_weight) for ins in linear.instructions]
    return torch.cat(gains) if gains else torch.zeros(0)


class EquivariantLinear(nn.Module):
    """e3nn's equivariant linear map (no biases), with its weights stored at PyTorch's 1/sqrt(fan-in) scale."""

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps):
        super().__init__()
        self.linear = o3.Linear(irreps_in, irreps_out, internal_weights=False, shared_weights=True)
        gains = _fan_in_gains(self.linear)
        self.register_buffer("gains", gains, persistent=False)
        self.weight = nn.Parameter(torch.randn(self.linear.weight_numel) / gains)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x, self.weight * self.gains)


class ElementLinear(nn.Module):
    """Equivariant linear map whose weights depend on the atom's element: NequIP's self-connection.

    Equivalent to e3nn's FullyConnectedTensorProduct(features, one-hot of the element, out), with a
    weight table indexed by atomic number (1..99) instead of a one-hot over a fixed species list.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps):
        super().__init__()
        self.linear = o3.Linear(irreps_in, irreps_out, internal_weights=False, shared_weights=False)
        gains = _fan_in_gains(self.linear)
        self.register_buffer("gains", gains, persistent=False)
        self.weights = nn.Embedding(MAX_Z, self.linear.weight_numel)
        with torch.no_grad():
            self.weights.weight.div_(gains)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.linear(x, self.weights(z) * self.gains)


class InteractionBlock(nn.Module):
    """NequIP convolution: linear -> tensor product with Y(r_ij) weighted by R(|r_ij|) -> neighbour sum -> linear, + self-connection."""

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, irreps_sh: o3.Irreps, num_basis: int,
                 radial_layers: int, radial_width: int, avg_num_neighbors: float):
        super().__init__()
        self.linear_in = EquivariantLinear(irreps_in, irreps_in)
        mid, instructions = [], []
        for i_in, (mul, ir_in) in enumerate(irreps_in):
            for i_sh, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in irreps_out:
                        instructions.append((i_in, i_sh, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid, perm, _ = o3.Irreps(mid).sort()
        instructions = [(a, b, perm[c], mode, train) for a, b, c, mode, train in instructions]
        self.tp = o3.TensorProduct(irreps_in, irreps_sh, irreps_mid, instructions,
                                   internal_weights=False, shared_weights=False)
        self.radial = RadialMLP(num_basis, radial_width, radial_layers, self.tp.weight_numel)
        self.linear_out = EquivariantLinear(irreps_mid.simplify(), irreps_out)
        self.self_connection = ElementLinear(irreps_in, irreps_out)
        self.message_norm = 1.0 / math.sqrt(float(avg_num_neighbors))

    def forward(self, x: Tensor, z: Tensor, i: Tensor, j: Tensor, sh: Tensor, edge_radial: Tensor) -> Tensor:
        messages = self.tp(self.linear_in(x)[j], sh, self.radial(edge_radial))
        summed = torch.zeros(x.size(0), messages.size(1), dtype=x.dtype, device=x.device).index_add_(0, i, messages)
        return self.linear_out(summed * self.message_norm) + self.self_connection(x, z)


class ConvLayer(nn.Module):
    """Interaction block + gate, with a resnet update when the output irreps equal the input irreps."""

    def __init__(self, irreps_in: o3.Irreps, irreps_target: o3.Irreps, irreps_sh: o3.Irreps, config: NequIPConfig):
        super().__init__()
        reachable = [(mul, ir) for mul, ir in irreps_target if _path_exists(irreps_in, irreps_sh, ir)]
        irreps_scalars = o3.Irreps([(mul, ir) for mul, ir in reachable if ir.l == 0])
        irreps_gated = o3.Irreps([(mul, ir) for mul, ir in reachable if ir.l > 0])
        if not _path_exists(irreps_in, irreps_sh, o3.Irrep("0e")):
            raise InputError(f"no even scalar path from {irreps_in} x {irreps_sh}: gates need one")
        self.gate = Gate(irreps_scalars, irreps_gated)
        self.conv = InteractionBlock(irreps_in, self.gate.irreps_in, irreps_sh, config.num_bessel,
                                     config.radial_mlp_layers, config.radial_mlp_width, config.avg_num_neighbors)
        self.irreps_out = self.gate.irreps_out
        self.resnet = bool(config.resnet and self.irreps_out == irreps_in)

    def forward(self, x: Tensor, z: Tensor, i: Tensor, j: Tensor, sh: Tensor, edge_radial: Tensor) -> Tensor:
        out = self.gate(self.conv(x, z, i, j, sh, edge_radial))
        if self.resnet:
            out = x + out
        return out


def _path_exists(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, ir_out) -> bool:
    ir_out = o3.Irrep(ir_out)
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps_in for _, ir2 in irreps_sh)


def hidden_irreps(num_features: int, l_max: int, parity: bool) -> o3.Irreps:
    """num_features x every irrep up to l_max: both parities, or only (-1)^l (the spherical harmonics' parity)."""
    irreps = []
    for l in range(l_max + 1):
        natural = 1 if l % 2 == 0 else -1
        for p in ((natural, -natural) if parity else (natural,)):
            irreps.append((num_features, (l, p)))
    return o3.Irreps(irreps)


class NequIP(nn.Module):
    """NequIP representation + linear scalar head: (z, pos in Å, batch) -> one raw output per atom (before scaling)."""

    def __init__(self, config: NequIPConfig):
        super().__init__()
        with eager_e3nn():  # another library (nequip) may have set e3nn to script: keep this model plain
            c = config
            if c.num_layers < 1:
                raise InputError(f"num_layers must be at least 1, got {c.num_layers}")
            if c.l_max < 0:
                raise InputError(f"l_max must be at least 0, got {c.l_max}")
            self.cutoff_angstrom = float(c.cutoff_angstrom)
            self.neighbor_method = c.neighbor_method
            self.embedding = nn.Embedding(MAX_Z, c.num_features)  # = linear map of the one-hot element, N(0, 1)
            irreps_sh = o3.Irreps.spherical_harmonics(c.l_max)
            self.spherical_harmonics = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
            self.bessel = BesselBasis(c.cutoff_angstrom, c.num_bessel, c.trainable_bessel)
            self.envelope = PolynomialCutoff(c.cutoff_angstrom, c.polynomial_p)
            hidden = hidden_irreps(c.num_features, c.l_max, c.parity)
            scalars_only = o3.Irreps([(c.num_features, (0, 1))])
            irreps = o3.Irreps([(c.num_features, (0, 1))])
            layers: List[ConvLayer] = []
            for k in range(c.num_layers):
                layer = ConvLayer(irreps, scalars_only if k == c.num_layers - 1 else hidden, irreps_sh, c)
                layers.append(layer)
                irreps = layer.irreps_out
            self.layers = nn.ModuleList(layers)
            self.head = EquivariantLinear(irreps, o3.Irreps("0e"))
            with torch.no_grad():
                self.head.weight.zero_()  # a fresh model predicts zero: see the module docstring

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None,
                pairs: Optional[Tensor] = None) -> Tensor:
        i, j, rij = find_pairs(pos, batch, self.cutoff_angstrom, self.neighbor_method, box, pairs)
        r = torch.linalg.vector_norm(rij, dim=-1)
        sh = self.spherical_harmonics(rij)
        edge_radial = self.bessel(r) * self.envelope(r).unsqueeze(-1)
        x = self.embedding(z)
        for layer in self.layers:
            x = layer(x, z, i, j, sh, edge_radial)
        return self.head(x).squeeze(-1)
