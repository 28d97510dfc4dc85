"""Neighbour search: all_pairs and cell_list find the pairs of a brute-force reference, with and without a box."""

import itertools

import numpy as np
import pytest
import torch

from openmlff.models import build_model
from openmlff.models.neighbors import AUTO_CELL_LIST_ATOMS, all_pairs, box_heights, cell_list, neighbor_pairs

torch.set_num_threads(1)

CUTOFF = 5.0


# ---------------------------------------------------------------- references and helpers

def reference_pairs(pos, batch, cutoff, box=None):
    """Brute force in numpy: {(i, j): r_ij} over every pair and, with a box, over the positions wrapped into
    the cell and every image within two boxes."""
    pos = np.asarray(pos, dtype=np.float64)
    batch = np.asarray(batch)
    shifts = [np.zeros(3)]
    if box is not None:
        box = np.asarray(box, dtype=np.float64)
        pos = reduce_into_box(pos, box)
        shifts = [np.array(n) @ box for n in itertools.product(range(-2, 3), repeat=3)]
    out = {}
    for shift in shifts:
        r = pos[None, :, :] - pos[:, None, :] + shift  # r[i, j] = pos[j] + shift - pos[i]
        close = (np.linalg.norm(r, axis=-1) < cutoff) & (batch[:, None] == batch[None, :])
        np.fill_diagonal(close, False)
        for i, j in zip(*np.nonzero(close)):
            assert (i, j) not in out, "two images within the cutoff: the test's box is too small"
            out[(int(i), int(j))] = r[i, j]
    return out


def as_dict(result):
    i, j, r = result
    return {(int(a), int(b)): v for a, b, v in zip(i.tolist(), j.tolist(), r.detach().numpy())}


def assert_matches_reference(result, reference, cutoff=CUTOFF):
    """Same pairs and vectors as the reference; pairs within 1e-9 Å of the cutoff may go either way (rounding
    of the norm differs between numpy and torch), but every pair returned is inside the cutoff."""
    found = as_dict(result)
    assert len(found) == len(result[0]), "a pair appears twice"
    borderline = {key for key, r in reference.items() if abs(np.linalg.norm(r) - cutoff) < 1e-9}
    assert set(found) - borderline == set(reference) - borderline
    assert set(found) <= set(reference)
    for key, r in found.items():
        np.testing.assert_allclose(r, reference[key], atol=1e-9)
    if len(result[2]):
        assert float(torch.linalg.vector_norm(result[2], dim=1).max()) < cutoff


def assert_identical(a, b):
    """Same pairs, same order, bitwise the same vectors."""
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[2], b[2])


def both_methods(pos, batch, box=None, cutoff=CUTOFF):
    pos = torch.as_tensor(pos, dtype=torch.float64)
    batch = torch.as_tensor(batch, dtype=torch.long)
    box = None if box is None else torch.as_tensor(box, dtype=torch.float64)
    a = all_pairs(pos, batch, cutoff, box)
    c = cell_list(pos, batch, cutoff, box)
    assert_identical(a, c)
    return a


def random_cloud(rng, n, density=0.1, low=-7.0):
    """n atoms uniformly in a cube at about water's atom density (0.1 per Å^3), partly at negative coordinates."""
    side = (n / density) ** (1 / 3)
    return rng.uniform(low, low + side, size=(n, 3))


def reduce_into_box(pos, box):
    """Positions wrapped into the periodic cell (fractional coordinates in [0, 1))."""
    frac = pos @ np.linalg.inv(box)
    return (frac - np.floor(frac)) @ box


ORTHORHOMBIC = np.diag([23.0, 19.0, 27.0])
TRICLINIC = np.array([[24.0, 0.0, 0.0], [7.0, 21.0, 0.0], [-6.5, 8.0, 20.0]])  # OpenMM reduced form


@pytest.fixture(scope="module")
def chignolin():
    from openmlff.structures import load_structure

    s = load_structure("chignolin")
    assert s.n_atoms == 166
    return s.atomic_numbers, s.positions_angstrom


@pytest.fixture(scope="module")
def aspirin():
    from openmlff.structures import load_structure

    s = load_structure("aspirin")
    return s.atomic_numbers, s.positions_angstrom


# ---------------------------------------------------------------- non-periodic

@pytest.mark.parametrize("n, seed", [(2, 0), (60, 1), (300, 2), (500, 3)])
def test_random_clouds_match_brute_force(n, seed):
    pos = random_cloud(np.random.default_rng(seed), n)
    batch = np.zeros(n, dtype=int)
    assert_matches_reference(both_methods(pos, batch), reference_pairs(pos, batch, CUTOFF))


def test_real_molecules_match_brute_force(aspirin, chignolin, test_data):
    import openmm.app

    pdb = openmm.app.PDBFile(str(test_data / "structures" / "cln025_capped.pdb"))
    capped = np.array(pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.angstrom))
    for pos in (aspirin[1], chignolin[1], capped):
        batch = np.zeros(len(pos), dtype=int)
        result = both_methods(pos, batch)
        assert len(result[0]) > 4 * len(pos)
        assert_matches_reference(result, reference_pairs(pos, batch, CUTOFF))


def test_batched_molecules_never_pair(aspirin, chignolin):
    """Molecules stacked on top of each other: each finds exactly its own pairs."""
    rng = np.random.default_rng(4)
    parts = [aspirin[1], chignolin[1], aspirin[1] + rng.normal(scale=0.1, size=aspirin[1].shape), chignolin[1] - 20.0]
    pos = np.concatenate(parts)
    batch = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
    i, j, _ = result = both_methods(pos, batch)
    assert torch.equal(torch.as_tensor(batch)[i], torch.as_tensor(batch)[j])
    assert_matches_reference(result, reference_pairs(pos, batch, CUTOFF))
    start = 0
    for p in parts:  # each molecule alone gives the same pairs, shifted by its first index
        alone = both_methods(p, np.zeros(len(p), dtype=int))
        mine = (i >= start) & (i < start + len(p))
        assert torch.equal(i[mine] - start, alone[0]) and torch.equal(j[mine] - start, alone[1])
        start += len(p)


@pytest.mark.parametrize("spacing", [CUTOFF / 2, CUTOFF / 2 * (1 + 1e-6), CUTOFF / 3, CUTOFF])
@pytest.mark.parametrize("corner", [-5.0, 0.0])
def test_atoms_on_cell_boundaries_and_at_the_cutoff(spacing, corner):
    """Grids starting at a corner (negative, or 0): atoms on the faces of the cells (the cell edge is the
    cutoff times 1 + 1e-6), and pairs at exactly the cutoff, which are left out (|r| < cutoff, strictly)."""
    axis = corner + np.arange(7) * spacing
    pos = np.array(list(itertools.product(axis, axis, axis)))
    batch = np.zeros(len(pos), dtype=int)
    result = both_methods(pos, batch)
    assert_matches_reference(result, reference_pairs(pos, batch, CUTOFF))
    if spacing in (CUTOFF / 2, CUTOFF):
        distances = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        assert (distances == CUTOFF).any()  # the grid has pairs at exactly the cutoff
    assert (len(result[0]) == 0) == (spacing == CUTOFF)


def test_single_atom_and_empty_input():
    for n in (0, 1):
        pos = torch.zeros(n, 3, dtype=torch.float64)
        for method in ("all_pairs", "cell_list"):
            i, j, r = neighbor_pairs(pos, torch.zeros(n, dtype=torch.long), CUTOFF, method)
            assert i.numel() == 0 and j.numel() == 0 and r.shape == (0, 3)


def test_float32_positions_give_the_same_pairs(chignolin):
    pos = torch.tensor(chignolin[1], dtype=torch.float32)
    batch = torch.zeros(len(pos), dtype=torch.long)
    a, c = all_pairs(pos, batch, CUTOFF), cell_list(pos, batch, CUTOFF)
    assert_identical(a, c)
    assert a[2].dtype == torch.float32


def test_vectors_carry_gradients(chignolin):
    pos = torch.tensor(chignolin[1], dtype=torch.float64, requires_grad=True)
    batch = torch.zeros(len(pos), dtype=torch.long)
    grads = []
    for method in ("all_pairs", "cell_list"):
        i, j, r = neighbor_pairs(pos, batch, CUTOFF, method)
        (grad,) = torch.autograd.grad((r ** 2).sum(), pos)
        expected = torch.zeros_like(pos).index_add_(0, j, 2 * r.detach()).index_add_(0, i, -2 * r.detach())
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-10)
        grads.append(grad)
    assert torch.equal(grads[0], grads[1])


# ---------------------------------------------------------------- periodic

@pytest.mark.parametrize("box", [ORTHORHOMBIC, TRICLINIC], ids=["orthorhombic", "triclinic"])
def test_periodic_matches_brute_force_minimum_image(box):
    rng = np.random.default_rng(5)
    inside = rng.uniform(0, 1, size=(250, 3)) @ box
    # atoms on and near the faces, and atoms given outside the box (unwrapped coordinates)
    frac_faces = rng.uniform(0, 1, size=(60, 3))
    frac_faces[np.arange(60), rng.integers(0, 3, 60)] = rng.choice([0.0, 1e-12, 1 - 1e-12, 1.0, -1e-9], 60)
    outside = rng.uniform(-1.5, 2.5, size=(40, 3)) @ box
    pos = np.concatenate([inside, frac_faces @ box, outside])
    batch = np.sort(rng.integers(0, 2, len(pos)))  # two molecules sharing the box never pair
    result = both_methods(pos, batch, box)
    assert_matches_reference(result, reference_pairs(pos, batch, CUTOFF, box))
    assert float(torch.linalg.vector_norm(result[2], dim=1).max()) < CUTOFF


@pytest.mark.parametrize("box", [ORTHORHOMBIC, TRICLINIC], ids=["orthorhombic", "triclinic"])
def test_molecule_wrapped_across_the_boundary(box, chignolin):
    """Chignolin straddling a corner of the box, each atom wrapped in: same pairs and vectors as the whole molecule."""
    pos = chignolin[1] - chignolin[1].mean(0)  # centred on the origin: a corner of the cell
    big_box = box * 2.0  # room for the 19 Å long molecule plus the cutoff: no contacts between images
    batch = np.zeros(len(pos), dtype=int)
    whole = both_methods(pos, batch)
    wrapped_pos = reduce_into_box(pos, big_box)
    assert np.abs(wrapped_pos - pos).max() > 10.0  # really wrapped
    for method in (all_pairs, cell_list):
        wrapped = method(torch.tensor(wrapped_pos), torch.tensor(batch), CUTOFF, torch.tensor(big_box))
        assert torch.equal(wrapped[0], whole[0]) and torch.equal(wrapped[1], whole[1])
        torch.testing.assert_close(wrapped[2], whole[2], rtol=0, atol=1e-9)


def test_periodic_gradients_reach_the_box():
    """r_ij = pos_j - pos_i + n @ box: d(sum |r|^2)/d box = sum_pairs 2 n_ij^T r_ij (the virial's ingredient)."""
    rng = np.random.default_rng(6)
    box = torch.tensor(TRICLINIC, requires_grad=True)
    pos = torch.tensor(rng.uniform(0, 1, size=(200, 3)) @ TRICLINIC, requires_grad=True)
    batch = torch.zeros(200, dtype=torch.long)
    grads = []
    for method in (all_pairs, cell_list):
        i, j, r = method(pos, batch, CUTOFF, box)
        grads.append(torch.autograd.grad((r ** 2).sum(), (pos, box)))
        images = torch.linalg.solve(box.detach().T, (r.detach() - (pos[j] - pos[i]).detach()).T).T.round()
        torch.testing.assert_close(grads[-1][1], 2 * images.T @ r.detach(), rtol=0, atol=1e-8)
        assert bool((images != 0).any())
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=1e-9)


def test_small_box_cells_and_cutoff_at_half_height():
    """Boxes only two or three cutoffs across (one or two cells per direction) still give exact pairs."""
    rng = np.random.default_rng(7)
    for box in (np.diag([10.0, 10.0, 10.0]), np.diag([10.0, 14.0, 10.5]),
                np.array([[12.25, 0.0, 0.0], [5.9, 14.1, 0.0], [-5.9, 6.5, 15.3]])):
        assert float(box_heights(torch.tensor(box)).min()) >= 2 * CUTOFF
        pos = rng.uniform(-0.2, 1.2, size=(120, 3)) @ box
        batch = np.zeros(len(pos), dtype=int)
        assert_matches_reference(both_methods(pos, batch, box), reference_pairs(pos, batch, CUTOFF, box))


def test_bad_boxes_are_refused():
    pos = torch.zeros(4, 3, dtype=torch.float64)
    batch = torch.zeros(4, dtype=torch.long)
    for method in ("all_pairs", "cell_list"):
        with pytest.raises(ValueError, match="half the shortest box height"):
            neighbor_pairs(pos, batch, CUTOFF, method, torch.tensor(np.diag([30.0, 9.9, 30.0])))
        with pytest.raises(ValueError, match="half the shortest box height"):  # wide in by, but flat in height
            neighbor_pairs(pos, batch, CUTOFF, method, torch.tensor([[11.0, 0, 0], [0, 11.0, 0], [0, 10.0, 9.0]]))
        with pytest.raises(ValueError, match="lower triangular"):
            neighbor_pairs(pos, batch, CUTOFF, method, torch.tensor([[20.0, 1.0, 0], [0, 20.0, 0], [0, 0, 20.0]]))
        with pytest.raises(ValueError, match=r"\(3, 3\)"):
            neighbor_pairs(pos, batch, CUTOFF, method, torch.ones(3, dtype=torch.float64))


# ---------------------------------------------------------------- dispatch and TorchScript

def test_unknown_method_names_the_accepted_ones():
    with pytest.raises(ValueError, match="all_pairs.*cell_list.*auto"):
        neighbor_pairs(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long), CUTOFF, "kd_tree")


def test_auto_switches_to_the_cell_list_above_the_threshold():
    """The cell list refuses extents that overflow its 64-bit cell keys; all_pairs does not mind: so the
    error tells which method "auto" ran."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [1e17, 1e17, 1e17], [1.0, 0.0, 0.0]], dtype=torch.float64)
    batch = torch.zeros(3, dtype=torch.long)
    i, _, _ = neighbor_pairs(pos, batch, CUTOFF, "auto")
    assert i.tolist() == [0, 2] and AUTO_CELL_LIST_ATOMS >= 3
    with pytest.raises(ValueError, match="overflow"):
        neighbor_pairs(pos, batch, CUTOFF, "auto", None, 2)
    with pytest.raises(ValueError, match="overflow"):
        neighbor_pairs(pos, batch, CUTOFF, "cell_list")


def test_scripted_neighbor_pairs_equal_eager(chignolin):
    scripted = torch.jit.script(neighbor_pairs)
    pos = torch.tensor(reduce_into_box(chignolin[1], TRICLINIC * 2))
    batch = torch.zeros(len(pos), dtype=torch.long)
    for method in ("all_pairs", "cell_list", "auto"):
        for box in (None, torch.tensor(TRICLINIC * 2)):
            assert_identical(scripted(pos, batch, CUTOFF, method, box), neighbor_pairs(pos, batch, CUTOFF, method, box))


# ---------------------------------------------------------------- in a model

def et_potential(method):
    torch.manual_seed(0)
    pot = build_model("et", {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8,
                                 "neighbor_method": method})
    return pot.to(torch.float64).eval()


def test_et_energies_and_forces_do_not_depend_on_the_method(aspirin, chignolin):
    pots = {m: et_potential(m) for m in ("all_pairs", "cell_list")}
    for z, pos in (aspirin, chignolin):
        z = torch.as_tensor(z, dtype=torch.long)
        pos = torch.as_tensor(pos, dtype=torch.float64)
        batch = torch.zeros(len(z), dtype=torch.long)
        results = {}
        for method, pot in pots.items():
            energy, forces = pot.energy_and_forces(z, pos, batch, 1)
            assert bool(forces.abs().max() > 0)
            results[method] = (energy, forces)
            scripted = torch.jit.script(pot)
            p = pos.clone().requires_grad_(True)
            e_scripted = scripted(z, p, batch, 1)
            (g,) = torch.autograd.grad(e_scripted.sum(), p)
            torch.testing.assert_close(e_scripted, energy, rtol=0, atol=1e-10)
            torch.testing.assert_close(-g, forces, rtol=0, atol=1e-10)
        # same pairs in the same order: bitwise the same energies and forces
        assert torch.equal(results["cell_list"][0], results["all_pairs"][0])
        assert torch.equal(results["cell_list"][1], results["all_pairs"][1])
