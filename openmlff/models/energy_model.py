"""EnergyModel: an architecture's per-atom outputs turned into energies (eV) and forces (eV/Å).

E = sum_i (scale * y_i + e_ref[z_i]): y_i is the network's raw per-atom output, `scale` (eV) puts
it on the size of the forces, and e_ref holds per-element reference energies fitted to the
training energies, so the network only learns the small conformational part. Forces are the
negative gradient of E with respect to positions, which makes them conservative.
The network may run in float32; the sum is formed in float64 because total energies of molecules
are large (aspirin: -17 600 eV, where float32 resolves only 2 meV).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..core import units
from .layers import MAX_Z


class EnergyModel(nn.Module):
    """(z, positions in Å, molecule index per atom) -> energy per molecule in eV."""

    def __init__(self, network: nn.Module, architecture: str, hyperparameters: dict):
        super().__init__()
        self.network = network
        self.architecture = architecture
        self.hyperparameters = dict(hyperparameters)
        self.register_buffer("element_energy_ev", torch.zeros(MAX_Z, dtype=torch.float64))
        self.register_buffer("scale_ev", torch.ones((), dtype=torch.float64))

    @property
    def cutoff_angstrom(self) -> float:
        return float(self.network.cutoff_angstrom)

    def set_energy_statistics(self, element_energy_ev: np.ndarray, scale_ev: float) -> None:
        """Per-element reference energies (indexed by Z) and the output scale, both in eV."""
        self.element_energy_ev.copy_(torch.as_tensor(element_energy_ev, dtype=torch.float64))
        self.scale_ev.fill_(float(scale_ev))

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor, n_molecules: int, box: Optional[Tensor] = None,
                pairs: Optional[Tensor] = None) -> Tensor:
        """Energies (n_molecules,) in eV; `box`: periodic box vectors (3, 3) in Å as rows, or None; `pairs`: the
        neighbour pairs (2, n_pairs) found beforehand (neighbors.find_pairs), or None to search."""
        y = self.network(z, pos, batch, box, pairs)
        atomic = (self.scale_ev.to(y.dtype) * y).to(torch.float64) + self.element_energy_ev[z]
        return torch.zeros(n_molecules, dtype=torch.float64, device=y.device).index_add_(0, batch, atomic)

    def energy_and_forces(self, z: Tensor, pos: Tensor, batch: Tensor, n_molecules: int,
                          create_graph: bool = False, box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Energies (n_molecules,) in eV (float64) and forces (n_atoms, 3) in eV/Å = -dE/dpos (dtype of pos)."""
        pos = pos.detach().requires_grad_(True)
        energy = self.forward(z, pos, batch, n_molecules, box)
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
        return energy, -grad

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class ExportedPotential(nn.Module):
    """An EnergyModel for one molecule: positions in nm -> energy in kJ/mol (float64 scalar)."""

    def __init__(self, potential: EnergyModel, atomic_numbers):
        super().__init__()
        self.potential = potential
        dtype = next(potential.parameters()).dtype
        self.register_buffer("atomic_numbers", torch.as_tensor(np.asarray(atomic_numbers), dtype=torch.long))
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype))
        self.n_atoms = int(len(atomic_numbers))
        self.nm_to_angstrom = units.NM_IN_ANGSTROM
        self.ev_to_kj_per_mol = units.EV_IN_KJ_PER_MOL

    def forward(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        pos = positions.to(self.dtype_probe.dtype) * self.nm_to_angstrom
        batch = torch.zeros(self.n_atoms, dtype=torch.long, device=pos.device)
        return self.potential(self.atomic_numbers, pos, batch, 1, self._box_angstrom(box_vectors))[0] * self.ev_to_kj_per_mol

    @torch.jit.export
    def energies(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        """Energies (n_frames,) in kJ/mol of a batch of positions (n_frames, n_atoms, 3) in nm (one box for all)."""
        n_frames = positions.size(0)
        pos = positions.to(self.dtype_probe.dtype).reshape(-1, 3) * self.nm_to_angstrom
        z = self.atomic_numbers.repeat(n_frames)
        batch = torch.arange(n_frames, device=pos.device).repeat_interleave(self.n_atoms)
        return self.potential(z, pos, batch, n_frames, self._box_angstrom(box_vectors)) * self.ev_to_kj_per_mol

    def _box_angstrom(self, box_vectors: Optional[Tensor]) -> Optional[Tensor]:
        if box_vectors is None:
            return None
        return box_vectors.to(self.dtype_probe.dtype) * self.nm_to_angstrom


def fit_element_energies(z: np.ndarray, energies_ev: np.ndarray) -> np.ndarray:
    """Least-squares per-element energies e_Z with E ≈ sum_i e_{z_i}; returns an array indexed by Z (eV).

    For a dataset of one molecule all frames share one composition, so the minimum-norm solution
    spreads the mean energy over the elements in proportion to their counts; with several
    compositions this is the usual atom-reference fit.
    """
    z = np.asarray(z)
    if z.ndim == 1:
        z = np.broadcast_to(z, (len(energies_ev), z.size))
    elements_present = np.unique(z)
    counts = np.stack([(z == e).sum(axis=1) for e in elements_present], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(counts, np.asarray(energies_ev, dtype=np.float64), rcond=None)
    out = np.zeros(MAX_Z, dtype=np.float64)
    out[elements_present] = coef
    return out
