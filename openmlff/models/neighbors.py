"""Neighbour search: which atom pairs lie within the cutoff, with or without periodic boundaries.

`neighbor_pairs` is the one entry point every architecture calls. method="all_pairs" builds the
N x N distance matrix: fastest for molecules of tens of atoms, quadratic in time and memory.
"cell_list" bins atoms into cells at least one cutoff wide and looks only into the 27 cells
around each atom: linear in the number of atoms at fixed density. "auto" picks by size.
All lengths in Å. Everything here is TorchScript-compatible (models are exported with
torch.jit.script), which is why constants are passed as arguments rather than read as globals.

Both methods return the same pairs in the same order (sorted by receiver, then sender), so a
model gives bitwise the same result with either. To make that hold in every dtype, the pair
selection is done in float64 on detached positions and both methods compute the candidate
vectors with one expression (`_pair_vectors`); only the returned r_ij is in the dtype of `pos`
and carries gradients (to `pos`, and to `box` when it requires them, e.g. for a virial).

Periodic boundaries: `box` holds the box vectors a, b, c as rows (Å), in OpenMM's form (lower
triangular: a = (ax, 0, 0), b = (bx, by, 0), c = (cx, cy, cz)); orthorhombic and triclinic boxes
are handled exactly. With the cutoff at most half the shortest box height, at most one periodic
image of an atom lies within the cutoff of another, so each pair appears once, with its
minimum-image vector. One box serves every molecule of the batch; molecules never pair.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

#: "auto" switches from all pairs to the cell list above this many atoms in a batch.
AUTO_CELL_LIST_ATOMS: int = 256
#: Names accepted by `neighbor_pairs(method=...)`.
NEIGHBOR_METHODS: Tuple[str, str, str] = ("all_pairs", "cell_list", "auto")


def _padded(cutoff_angstrom: float) -> float:
    """The cutoff made 1e-6 (relative) longer: the cell edge, and all_pairs' candidate radius, so that
    float64 rounding in binning can never drop a pair that the exact filter in `_select` keeps."""
    return cutoff_angstrom * (1.0 + 1.0e-6)


def box_heights(box: Tensor) -> Tensor:
    """Distances (3,) between opposite faces of the periodic cell with box vectors `box` as rows (Å)."""
    volume = torch.abs(torch.linalg.det(box))
    faces = torch.stack([torch.linalg.cross(box[1], box[2]), torch.linalg.cross(box[2], box[0]),
                         torch.linalg.cross(box[0], box[1])])
    return volume / torch.linalg.vector_norm(faces, dim=1)


def _box_text(box: Tensor) -> str:
    """The box vectors as text for error messages: [[ax, ay, az], [bx, by, bz], [cx, cy, cz]]."""
    rows = [", ".join([str(float(box[r, k])) for k in range(3)]) for r in range(3)]
    return "[[" + "], [".join(rows) + "]]"


def check_box(box: Tensor, cutoff_angstrom: float) -> Tensor:
    """The box as float64 after checking it: shape (3, 3), lower triangular with a positive diagonal
    (OpenMM's form), and the cutoff at most half the shortest box height. ValueError otherwise."""
    if box.dim() != 2 or box.size(0) != 3 or box.size(1) != 3:
        raise ValueError(f"box must be a (3, 3) tensor of box vectors as rows in Å, got shape {box.shape}")
    b = box.detach().to(torch.float64)
    if bool(b[0, 1] != 0.0) or bool(b[0, 2] != 0.0) or bool(b[1, 2] != 0.0):
        raise ValueError(f"box must be lower triangular as OpenMM gives it (a = (ax, 0, 0), b = (bx, by, 0), "
                         f"c = (cx, cy, cz)); got {_box_text(b)}")
    if bool((torch.diagonal(b) <= 0.0).any()):
        raise ValueError(f"box must have positive ax, by, cz; got {_box_text(b)}")
    shortest = float(box_heights(b).min())
    if cutoff_angstrom > 0.5 * shortest:
        raise ValueError(f"cutoff {cutoff_angstrom} Å exceeds half the shortest box height ({shortest} Å): "
                         f"an atom would see several images of another; use a box at least "
                         f"{2.0 * cutoff_angstrom} Å across in every direction")
    return b


def _displacement(pos_i: Tensor, pos_j: Tensor, images: Optional[Tensor], box: Optional[Tensor]) -> Tensor:
    """r_ij = pos_j - pos_i + images @ box: the vector from atom i to the chosen periodic image of atom j.

    The one expression for pair vectors, used in the float64 selection of both methods and for the
    returned vectors, so that both methods keep and return bitwise the same pairs.
    """
    r = pos_j - pos_i
    if images is not None and box is not None:
        r = r + images.to(box.dtype) @ box
    return r


def _within(pos_i: Tensor, pos_j: Tensor, images: Optional[Tensor], box: Optional[Tensor],
            cutoff_angstrom: float) -> Tensor:
    """Indices of the candidate pairs with |r_ij| < cutoff."""
    r = _displacement(pos_i, pos_j, images, box)
    return (torch.linalg.vector_norm(r, dim=1) < cutoff_angstrom).nonzero().squeeze(1)


def _finish(pos: Tensor, i: Tensor, j: Tensor, images: Optional[Tensor],
            box: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """(i, j, r_ij) with r_ij in pos's dtype, differentiable in pos (and in box)."""
    b: Optional[Tensor] = None
    if box is not None:
        b = box.to(pos.dtype)
    return i, j, _displacement(pos.index_select(0, i), pos.index_select(0, j), images, b)


def all_pairs(pos: Tensor, batch: Tensor, cutoff_angstrom: float,
              box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Edges (i, j) between distinct atoms of the same molecule closer than the cutoff, from all N x N pairs.

    Returns (receiver i, sender j, vector r_ij = pos[j] - pos[i], the minimum image if `box` is
    given) with gradients through pos. Quadratic in time and memory (N^2 x 3 float64 with a box).
    """
    n = pos.size(0)
    with torch.no_grad():
        p = pos.detach().to(torch.float64)
        same_molecule = batch.unsqueeze(0) == batch.unsqueeze(1)
        same_molecule.fill_diagonal_(False)
        images: Optional[Tensor] = None
        b: Optional[Tensor] = None
        if box is None:
            dist = torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")
            candidates = (same_molecule & (dist < _padded(cutoff_angstrom))).nonzero()
        else:
            b = check_box(box, cutoff_angstrom)
            d = p.unsqueeze(0) - p.unsqueeze(1)  # d[i, j] = p[j] - p[i]
            # Minimum image in a lower-triangular box: remove c by z, then b by y, then a by x. Exact for
            # every pair within the cutoff, because the cutoff is at most half of cz, by and ax.
            shifts = torch.zeros(n, n, 3, dtype=torch.float64, device=pos.device)
            for axis in (2, 1, 0):
                k = -torch.round(d[:, :, axis] / b[axis, axis])
                d = d + k.unsqueeze(-1) * b[axis]
                shifts[:, :, axis] = k
            candidates = (same_molecule & (torch.linalg.vector_norm(d, dim=-1) < _padded(cutoff_angstrom))).nonzero()
            images = shifts[candidates[:, 0], candidates[:, 1]].to(torch.long)
        i, j = candidates[:, 0], candidates[:, 1]  # row-major order: sorted by (i, j)
        kept = _within(p.index_select(0, i), p.index_select(0, j), images, b, cutoff_angstrom)
        i, j = i.index_select(0, kept), j.index_select(0, kept)
        if images is not None:
            images = images.index_select(0, kept)
    return _finish(pos, i, j, images, box)


def cell_list(pos: Tensor, batch: Tensor, cutoff_angstrom: float,
              box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """The same pairs as `all_pairs`, in the same order, found in time and memory linear in the number of atoms.

    Atoms are binned into cells at least one cutoff wide (the molecule index is part of the cell
    key, so molecules never meet) and sorted by cell key. Each atom looks into its own cell and the
    13 neighbour cells of a half shell (the other 13 of the 27 are covered by symmetry: a pair found
    from i's half shell is the pair found from j's other half); the atoms of each cell are a range
    of the sorted keys, found with searchsorted and expanded with repeat_interleave. Candidates
    are filtered by distance, mirrored to (j, i), and sorted by (i, j).
    Without a box, cells are cubes anchored at each molecule's lowest corner. With a box, cells
    are slabs in fractional coordinates (as many along each box vector as fit one cutoff between
    their faces), wrapped periodically, and each candidate carries its integer image shift.
    """
    n = pos.size(0)
    device = pos.device
    with torch.no_grad():
        p = pos.detach().to(torch.float64)
        n_molecules = int(batch.max()) + 1 if n > 0 else 1
        edge = _padded(cutoff_angstrom)
        b: Optional[Tensor] = None
        wrap_count = torch.zeros(n, 3, dtype=torch.long, device=device)  # box vectors taken off to wrap each atom in
        if box is None:
            origin = torch.full((n_molecules, 3), float("inf"), dtype=torch.float64, device=device).scatter_reduce(
                0, batch.unsqueeze(1).expand(-1, 3), p, "amin", include_self=True)
            # +1 leaves an empty layer of cells on each side: neighbour keys never run into another row or molecule.
            cell = torch.floor((p - origin.index_select(0, batch)) / edge).to(torch.long) + 1
            dims = cell.max(dim=0).values + 2 if n > 0 else torch.ones(3, dtype=torch.long, device=device)
        else:
            b = check_box(box, cutoff_angstrom)
            frac = p @ torch.linalg.inv(b)
            wrap_count = torch.floor(frac).to(torch.long)
            frac = frac - wrap_count.to(torch.float64)
            dims = torch.clamp(torch.floor(box_heights(b) / edge), min=1.0).to(torch.long)
            cell = torch.minimum(torch.floor(frac * dims.to(torch.float64)).to(torch.long), dims - 1)
        dx, dy, dz = int(dims[0]), int(dims[1]), int(dims[2])
        if float(n_molecules) * dx * dy * dz > 4.0e18:
            raise ValueError(f"cell list: {n_molecules} molecules spanning {dx} x {dy} x {dz} cells of "
                             f"{cutoff_angstrom} Å overflow the 64-bit cell key; use method='all_pairs'")
        sorted_key, order = torch.sort(((batch * dx + cell[:, 0]) * dy + cell[:, 1]) * dz + cell[:, 2])
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(n, device=device))

        # Own cell (offset 0, 0, 0) and the 13 lexicographically later offsets: (n, 14, 3) cell coordinates.
        steps = torch.tensor([-1, 0, 1], dtype=torch.long, device=device)
        offsets = torch.cartesian_prod(steps, steps, steps)[13:]
        around = cell.unsqueeze(1) + offsets.unsqueeze(0)
        image_of_cell = torch.zeros_like(around)
        if box is not None:
            image_of_cell = torch.div(around, dims, rounding_mode="floor")
            around = around - image_of_cell * dims
        neighbour_key = ((batch.unsqueeze(1) * dx + around[:, :, 0]) * dy + around[:, :, 1]) * dz + around[:, :, 2]
        first = torch.searchsorted(sorted_key, neighbour_key)
        end = torch.searchsorted(sorted_key, neighbour_key, right=True)
        first[:, 0] = rank + 1  # in its own cell an atom pairs only with the atoms after it
        first, end = first.reshape(-1), end.reshape(-1)
        counts = end - first

        # Expand each (atom, cell) slot into one candidate per atom of the cell: j by its place in sorted order.
        total = int(counts.sum())
        slot_start = torch.cumsum(counts, 0) - counts
        i = torch.repeat_interleave(torch.arange(n, device=device).repeat_interleave(14), counts, output_size=total)
        j_sorted = torch.arange(total, device=device) + torch.repeat_interleave(first - slot_start, counts,
                                                                               output_size=total)
        images: Optional[Tensor] = None
        if box is not None:
            # j's wrapped copy lies image_of_cell boxes away in the neighbour cell; the atoms themselves were
            # given wrap_count boxes away from their wrapped copies.
            images = (torch.repeat_interleave(image_of_cell.reshape(-1, 3), counts, dim=0, output_size=total)
                      - wrap_count.index_select(0, order).index_select(0, j_sorted) + wrap_count.index_select(0, i))
        kept = _within(p.index_select(0, i), p.index_select(0, order).index_select(0, j_sorted), images, b,
                       cutoff_angstrom)
        i, j = i.index_select(0, kept), order.index_select(0, j_sorted.index_select(0, kept))
        if images is not None:
            images = images.index_select(0, kept)
            not_self = (i != j).nonzero().squeeze(1)  # an atom's own image is never within half a box height
            i, j, images = i.index_select(0, not_self), j.index_select(0, not_self), images.index_select(0, not_self)
            images = torch.cat([images, -images])
        i, j = torch.cat([i, j]), torch.cat([j, i])
        by_pair = torch.argsort(i * n + j)
        i, j = i.index_select(0, by_pair), j.index_select(0, by_pair)
        if images is not None:
            images = images.index_select(0, by_pair)
    return _finish(pos, i, j, images, box)


def neighbor_pairs(pos: Tensor, batch: Tensor, cutoff_angstrom: float, method: str = "auto",
                   box: Optional[Tensor] = None, auto_cell_list_atoms: int = 256) -> Tuple[Tensor, Tensor, Tensor]:
    """(i, j, r_ij) for all pairs of distinct atoms of one molecule within the cutoff (Å).

    i receives, j sends, r_ij = pos[j] - pos[i] (minimum image with a box) carries gradients; pairs
    are sorted by (i, j) and identical for every method.
    method: "all_pairs", "cell_list" or "auto" (cell list above `auto_cell_list_atoms` atoms, default
    AUTO_CELL_LIST_ATOMS; TorchScript cannot read module globals, hence the argument).
    box: periodic box vectors (3, 3) in Å, rows a, b, c in OpenMM's lower-triangular form, or None.
    """
    if method == "all_pairs" or (method == "auto" and pos.size(0) <= auto_cell_list_atoms):
        return all_pairs(pos, batch, cutoff_angstrom, box)
    if method == "cell_list" or method == "auto":
        return cell_list(pos, batch, cutoff_angstrom, box)
    raise ValueError(f"unknown neighbour method '{method}'; expected one of 'all_pairs', 'cell_list', 'auto'")
