"""Neighbour search: which atom pairs lie within the cutoff, with or without periodic boundaries.

`neighbor_pairs` is the one entry point every architecture calls. method="all_pairs" builds the
N x N distance matrix: fastest for molecules of tens of atoms, quadratic in time and memory.
"cell_list" bins atoms into cells at least one cutoff wide and looks only into the 27 cells
around each atom: linear in the number of atoms at fixed density. "auto" picks by size.
All lengths in Å. Everything here is TorchScript-compatible (models are exported with
torch.jit.script), which is why constants are passed as arguments rather than read as globals.

Both methods return the same pairs in the same order (sorted by receiver, then sender), so a
model gives bitwise the same result with either. To make that hold in every dtype, pairs are
selected in float64 on detached positions (wrapped into the box if there is one), both methods
computing the distance that decides with the same expression; the returned r_ij is then computed
from the given positions in the dtype of `pos` and carries gradients (to `pos`, and to `box`
when it requires them, e.g. for a virial). In float32 a returned |r_ij| may exceed the cutoff by
rounding; the cutoff functions of the models are zero there.

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
    float64 rounding in binning can never drop a pair that the exact distance filter keeps."""
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


def _lattice(images: Tensor, box: Tensor) -> Tensor:
    """images @ box, written out (n_a a + n_b b + n_c c) so that it gives bitwise the same rows whatever
    the number of rows (a matrix product may change its summation order with the size)."""
    n = images.to(box.dtype)
    return n[:, 0:1] * box[0] + n[:, 1:2] * box[1] + n[:, 2:3] * box[2]


def _wrap(p: Tensor, box: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Positions moved into the periodic cell: (wrapped positions, fractional coordinates in [0, 1],
    integer box vectors taken off each atom)."""
    frac = p @ torch.linalg.inv(box)
    taken_off = torch.floor(frac)
    return p - _lattice(taken_off, box), frac - taken_off, taken_off.to(torch.long)


def _within(r: Tensor, cutoff_angstrom: float) -> Tensor:
    """Indices of the rows of r (n, 3) with |r| < cutoff."""
    return (torch.linalg.vector_norm(r, dim=1) < cutoff_angstrom).nonzero().squeeze(1)


def _pair_vectors(pos: Tensor, i: Tensor, j: Tensor, images: Optional[Tensor],
                  box: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """(i, j, r_ij = pos[j] - pos[i] + images @ box) in pos's dtype, differentiable in pos (and in box)."""
    r = pos.index_select(0, j) - pos.index_select(0, i)
    if images is not None and box is not None:
        r = r + _lattice(images, box.to(pos.dtype))
    return i, j, r


def all_pairs(pos: Tensor, batch: Tensor, cutoff_angstrom: float,
              box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Edges (i, j) between distinct atoms of the same molecule closer than the cutoff, from all N x N pairs.

    Returns (receiver i, sender j, vector r_ij = pos[j] - pos[i], the minimum image if `box` is
    given) with gradients through pos. Quadratic in time and memory (N^2 x 3 float64 with a box).
    """
    n = pos.size(0)
    with torch.no_grad():
        p = pos.detach().to(torch.float64)
        allowed = batch.unsqueeze(0) == batch.unsqueeze(1)
        allowed.fill_diagonal_(False)
        images: Optional[Tensor] = None
        if box is None:
            dist = torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")
            candidates = (allowed & (dist < _padded(cutoff_angstrom))).nonzero()  # row-major: sorted by (i, j)
            i, j = candidates[:, 0], candidates[:, 1]
            kept = _within(p.index_select(0, j) - p.index_select(0, i), cutoff_angstrom)
            i, j = i.index_select(0, kept), j.index_select(0, kept)
        else:
            b = check_box(box, cutoff_angstrom)
            wrapped, frac, taken_off = _wrap(p, b)
            # A pair within the cutoff (at most half of every box height) is less than half a box away along
            # each box vector: rounding the fractional difference finds its image, in any box shape.
            shift = -torch.round(frac.unsqueeze(0) - frac.unsqueeze(1)).reshape(-1, 3)  # [i, j]: j's image
            r = (wrapped.unsqueeze(0) - wrapped.unsqueeze(1)).reshape(-1, 3) + _lattice(shift, b)
            kept = (allowed.reshape(-1) & (torch.linalg.vector_norm(r, dim=1) < cutoff_angstrom)).nonzero().squeeze(1)
            i, j = torch.div(kept, n, rounding_mode="floor"), torch.remainder(kept, n)
            images = (shift.index_select(0, kept).to(torch.long) - taken_off.index_select(0, j)
                      + taken_off.index_select(0, i))
    return _pair_vectors(pos, i, j, images, box)


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
        b = torch.zeros(3, 3, dtype=torch.float64, device=device)
        taken_off = torch.zeros(n, 3, dtype=torch.long, device=device)
        if box is None:
            origin = torch.full((n_molecules, 3), float("inf"), dtype=torch.float64, device=device).scatter_reduce(
                0, batch.unsqueeze(1).expand(-1, 3), p, "amin", include_self=True)
            # +1 leaves an empty layer of cells on each side: neighbour keys never run into another row or molecule.
            cell = torch.floor((p - origin.index_select(0, batch)) / edge).to(torch.long) + 1
            dims = cell.max(dim=0).values + 2 if n > 0 else torch.ones(3, dtype=torch.long, device=device)
            wrapped = p
        else:
            b = check_box(box, cutoff_angstrom)
            wrapped, frac, taken_off = _wrap(p, b)
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
        cell_image = torch.zeros_like(around)  # which periodic copy of the wrapped cell the neighbour cell is
        if box is not None:
            cell_image = torch.div(around, dims, rounding_mode="floor")
            around = around - cell_image * dims
        neighbour_key = ((batch.unsqueeze(1) * dx + around[:, :, 0]) * dy + around[:, :, 1]) * dz + around[:, :, 2]
        first = torch.searchsorted(sorted_key, neighbour_key)
        end = torch.searchsorted(sorted_key, neighbour_key, right=True)
        first[:, 0] = rank + 1  # in its own cell an atom pairs only with the atoms after it
        first, end, cell_image = first.reshape(-1), end.reshape(-1), cell_image.reshape(-1, 3)
        counts = end - first

        # One candidate per (atom, cell) slot and atom of the cell; j by its place in sorted order.
        total = int(counts.sum())
        slot = torch.repeat_interleave(torch.arange(n * 14, device=device), counts, output_size=total)
        i = torch.div(slot, 14, rounding_mode="floor")
        slot_start = torch.cumsum(counts, 0) - counts
        j_sorted = torch.arange(total, device=device) + (first - slot_start).index_select(0, slot)
        r = wrapped.index_select(0, order).index_select(0, j_sorted) - wrapped.index_select(0, i)
        if box is not None:
            r = r + _lattice(cell_image, b).index_select(0, slot)
        kept = _within(r, cutoff_angstrom)
        i, j = i.index_select(0, kept), order.index_select(0, j_sorted.index_select(0, kept))
        images: Optional[Tensor] = None
        if box is not None:
            found = (cell_image.index_select(0, slot.index_select(0, kept)) - taken_off.index_select(0, j)
                     + taken_off.index_select(0, i))
            others = (i != j).nonzero().squeeze(1)  # an atom's own images are never within half a box height
            i, j = i.index_select(0, others), j.index_select(0, others)
            images = torch.cat([found.index_select(0, others), -found.index_select(0, others)])
        i, j = torch.cat([i, j]), torch.cat([j, i])
        by_pair = torch.argsort(i * n + j)
        i, j = i.index_select(0, by_pair), j.index_select(0, by_pair)
        if images is not None:
            images = images.index_select(0, by_pair)
    return _pair_vectors(pos, i, j, images, box)


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


def find_pairs(pos: Tensor, batch: Tensor, cutoff_angstrom: float, method: str = "auto", box: Optional[Tensor] = None,
               pairs: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """neighbor_pairs, or the pairs (2, n_pairs) found before by neighbor_pairs with r_ij taken from `pos`.

    Training finds the pairs outside its compiled step: a traced graph cannot hold the search's data-dependent
    shapes, and torch.func.grad (the forces inside the loss) must be traced whole. Given pairs take no box.
    """
    if pairs is None:
        return neighbor_pairs(pos, batch, cutoff_angstrom, method, box)
    if box is not None:
        raise ValueError("pairs found beforehand cannot be combined with a periodic box")
    return _pair_vectors(pos, pairs[0], pairs[1], None, None)
