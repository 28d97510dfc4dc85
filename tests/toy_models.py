"""Toy exported models for MD tests: real TorchScript files that obey the export contract (docs/architecture.md).

`forward(positions)` takes (n_atoms, 3) positions in nm of any float dtype, casts them to the
model's dtype and returns the energy in kJ/mol: harmonic springs on the bonds (covalent radii) and
on the 1-3 pairs (which hold the angles) at their lengths in the given structure, plus a soft
r^-6 repulsion between all other pairs, switched off smoothly at the cutoff. Stiff enough that
aspirin keeps every bond within a few hundredths of an Å at 300-500 K.

With `stretch_bond=(i, j)` the model is made to blow up: that bond's rest length is stretched by
`stretch_angstrom` and the 1-3 springs through it are removed, so the atoms fly apart to the new
length within a few tens of fs and the stability monitor must name that bond.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from openmlff.core import elements

BOND_K_KJ_PER_MOL_NM2 = 2.0e5
ANGLE_PAIR_K_KJ_PER_MOL_NM2 = 5.0e4
REPULSION_EPSILON_KJ_PER_MOL = 0.5
REPULSION_SIGMA_NM = 0.25
CUTOFF_NM = 0.6


class ToySpringPotential(torch.nn.Module):
    """E = sum_springs k/2 (r - r0)^2 + sum_pairs eps (sigma/r)^6 * (cos(pi r/rc) + 1)/2 [r < rc], kJ/mol and nm."""

    def __init__(self, spring_index, spring_r0_nm, spring_k, pair_index, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("spring_i", torch.as_tensor(spring_index[:, 0], dtype=torch.long))
        self.register_buffer("spring_j", torch.as_tensor(spring_index[:, 1], dtype=torch.long))
        self.register_buffer("spring_r0", torch.as_tensor(spring_r0_nm, dtype=dtype))
        self.register_buffer("spring_k", torch.as_tensor(spring_k, dtype=dtype))
        self.register_buffer("pair_i", torch.as_tensor(pair_index[:, 0], dtype=torch.long))
        self.register_buffer("pair_j", torch.as_tensor(pair_index[:, 1], dtype=torch.long))
        self.epsilon = REPULSION_EPSILON_KJ_PER_MOL
        self.sigma = REPULSION_SIGMA_NM
        self.cutoff = CUTOFF_NM

    def forward(self, positions: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The box is accepted as the export contract has it and not used: every pair is within one molecule,
        whose atoms' paths OpenMM keeps continuous."""
        x = positions.to(self.spring_r0.dtype)
        r = torch.linalg.norm(x[self.spring_j] - x[self.spring_i], dim=1)
        energy = 0.5 * torch.sum(self.spring_k * (r - self.spring_r0) ** 2)
        rp = torch.linalg.norm(x[self.pair_j] - x[self.pair_i], dim=1)
        switch = torch.where(rp < self.cutoff, 0.5 * (torch.cos(torch.pi * rp / self.cutoff) + 1.0), torch.zeros_like(rp))
        energy = energy + torch.sum(self.epsilon * (self.sigma / rp) ** 6 * switch)
        return energy

    @torch.jit.export
    def energies(self, positions: torch.Tensor) -> torch.Tensor:
        """The energies (n_frames,) of a batch (n_frames, n_atoms, 3), as an openmlff export has them."""
        x = positions.to(self.spring_r0.dtype)
        r = torch.linalg.norm(x[:, self.spring_j] - x[:, self.spring_i], dim=2)
        energy = 0.5 * torch.sum(self.spring_k * (r - self.spring_r0) ** 2, dim=1)
        rp = torch.linalg.norm(x[:, self.pair_j] - x[:, self.pair_i], dim=2)
        switch = torch.where(rp < self.cutoff, 0.5 * (torch.cos(torch.pi * rp / self.cutoff) + 1.0), torch.zeros_like(rp))
        return energy + torch.sum(self.epsilon * (self.sigma / rp) ** 6 * switch, dim=1)


def _angle_pairs(bonds: np.ndarray, n_atoms: int) -> dict[tuple[int, int], tuple[int, int]]:
    """1-3 pairs (a, c) of the bond graph, each with one bond (a, b) or (b, c) it passes through."""
    neighbours: list[set[int]] = [set() for _ in range(n_atoms)]
    for i, j in bonds:
        neighbours[i].add(int(j))
        neighbours[j].add(int(i))
    bonded = {tuple(sorted((int(i), int(j)))) for i, j in bonds}
    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for b in range(n_atoms):
        for a in neighbours[b]:
            for c in neighbours[b]:
                if a < c and (a, c) not in bonded:
                    pairs.setdefault((a, c), []).extend([tuple(sorted((a, b))), tuple(sorted((b, c)))])
    return pairs


def write_toy_model(path, atomic_numbers, positions_angstrom, dtype: str = "float64",
                    stretch_bond: tuple[int, int] | None = None, stretch_angstrom: float = 1.0) -> Path:
    """Write a toy TorchScript model for this molecule (with its openmlff.json metadata) and return the path."""
    zs = np.asarray(atomic_numbers, dtype=np.int64)
    pos_nm = np.asarray(positions_angstrom, dtype=np.float64) / 10.0
    n = len(zs)
    bonds = elements.find_bonds(zs, pos_nm * 10.0)
    angle_pairs = _angle_pairs(bonds, n)
    stretched = None if stretch_bond is None else tuple(sorted(int(a) for a in stretch_bond))
    if stretched is not None and stretched not in {tuple(b) for b in bonds.tolist()}:
        raise ValueError(f"stretch_bond {stretch_bond} is not a bond of this structure")

    springs, k = [], []
    for i, j in bonds.tolist():
        springs.append((i, j))
        k.append(BOND_K_KJ_PER_MOL_NM2)
    for pair, through in angle_pairs.items():
        if stretched is not None and stretched in through:
            continue  # nothing holds the stretched bond back
        springs.append(pair)
        k.append(ANGLE_PAIR_K_KJ_PER_MOL_NM2)
    springs_arr = np.asarray(springs, dtype=np.int64).reshape(-1, 2)
    r0 = np.linalg.norm(pos_nm[springs_arr[:, 1]] - pos_nm[springs_arr[:, 0]], axis=1)
    if stretched is not None:
        r0[springs.index(stretched)] += stretch_angstrom / 10.0

    excluded = {tuple(b) for b in bonds.tolist()} | set(angle_pairs)
    pair_index = np.asarray([(i, j) for i in range(n) for j in range(i + 1, n) if (i, j) not in excluded],
                            dtype=np.int64).reshape(-1, 2)
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    module = torch.jit.script(ToySpringPotential(springs_arr, r0, np.asarray(k), pair_index, torch_dtype))
    metadata = {
        "atomic_numbers": zs.tolist(),
        "dtype": dtype,
        "architecture": "toy_springs" if stretched is None else "toy_springs_blowup",
        "cutoff_angstrom": CUTOFF_NM * 10.0,
        "hyperparameters": {"stretch_bond": None if stretched is None else list(stretched),
                            "stretch_angstrom": stretch_angstrom if stretched is not None else 0.0},
        "units": {"positions": "nm", "energy": "kJ/mol"},
    }
    path = Path(path)
    torch.jit.save(module, str(path), _extra_files={"openmlff.json": json.dumps(metadata)})
    return path
