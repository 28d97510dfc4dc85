"""Force metrics against hand computations, batch accumulation, units, conformation clusters."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model_helpers import random_rotation  # tests/ is on sys.path (pytest rootdir insertion)
from openmlff.structures import load_structure
from openmlff.metrics import (
    ForceErrorAccumulator,
    assign_clusters,
    atom_force_metrics,
    cluster_conformations,
    cluster_force_metrics,
    conformation_descriptor,
    element_force_metrics,
    frame_force_metrics,
    global_force_metrics,
    silhouette_score,
)


# IUPAC standard atomic weights (Da) of the elements of the tiny example.
M_H, M_C, M_O = 1.008, 12.011, 15.999

# Tiny example: 2 frames x 4 atoms (H, C, O, H). Error vectors dF = F_pred - F_ref in eV/Å:
#   frame 0: H0 (3, 4, 0)  |dF| = 5   C (0, 0, 0)       O (0, 0, -2) |dF| = 2   H3 (0, 0, 0)
#   frame 1: H0 (0, 0, 0)             C (1, -2, 2) |dF| = 3   O (0, 0, 1) |dF| = 1   H3 (0, -1, 0) |dF| = 1
Z = np.array([1, 6, 8, 1])
DF = np.array([
    [[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -2.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, 0.0], [1.0, -2.0, 2.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]],
])
# Energy errors E_pred - E_ref = (0.5, -1.5) eV.
E_REF = np.array([-100.0, -101.0])
E_PRED = np.array([-99.5, -102.5])


@pytest.fixture
def forces():
    """Reference forces of arbitrary size and predictions that differ from them by exactly DF."""
    F_ref = np.random.default_rng(1).normal(scale=2.0, size=DF.shape)
    return F_ref + DF, F_ref


def approx(value):
    return pytest.approx(value, rel=1e-12, abs=1e-12)


def test_global_metrics_by_hand(forces):
    F_pred, F_ref = forces
    got = global_force_metrics(F_pred, F_ref, Z, E_pred=E_PRED, E_ref=E_REF, force_unit="eV/Å", energy_unit="eV")
    # 24 components; |components| sum to 3+4+2 (frame 0) + 1+2+2+1+1 (frame 1) = 16; squares to 29 + 11 = 40.
    assert got["force_mae"] == approx(16 / 24)
    assert got["force_rmse"] == approx(math.sqrt(40 / 24))
    assert got["force_max"] == approx(5.0)
    # FNM: each component divided by its atom's mass. H: |3|+|4| (H0) + |1| (H3); C: 1+2+2; O: 2+1.
    assert got["fnm_mae"] == approx((8 / M_H + 5 / M_C + 3 / M_O) / 24)
    assert got["fnm_rmse"] == approx(math.sqrt((26 / M_H**2 + 9 / M_C**2 + 5 / M_O**2) / 24))
    assert got["fnm_max"] == approx(5 / M_H)
    assert got["energy_mae"] == approx((0.5 + 1.5) / 2)
    assert got["energy_rmse"] == approx(math.sqrt((0.25 + 2.25) / 2))
    errors = np.asarray(E_PRED) - np.asarray(E_REF)  # the MAE after the mean signed error is subtracted
    assert got["energy_mae_offset_removed"] == approx(np.abs(errors - errors.mean()).mean())
    shifted = global_force_metrics(F_pred, F_ref, Z, E_pred=np.asarray(E_PRED) + 1234.5, E_ref=E_REF, energy_unit="eV")
    assert shifted["energy_mae_offset_removed"] == approx(got["energy_mae_offset_removed"])
    assert got["n_frames"] == 2 and got["n_atoms"] == 4
    assert got["units"] == {"force": "eV/Å", "fnm": "(eV/Å)/Da", "energy": "eV"}


def test_global_metrics_without_energies(forces):
    got = global_force_metrics(*forces, Z)
    assert got["energy_mae"] is None and got["energy_rmse"] is None and got["energy_mae_offset_removed"] is None


def test_element_metrics_by_hand(forces):
    got = element_force_metrics(*forces, Z, force_unit="eV/Å")
    assert list(got) == ["H", "C", "O"]
    # H: atoms 0 and 3, 12 components: |.| 3+4+1 = 8, squares 9+16+1 = 26, largest norm 5.
    # C: 6 components: 1+2+2 = 5, squares 9, norm 3.   O: 6 components: 2+1 = 3, squares 5, norm 2.
    for symbol, mass, n, abs_sum, sq_sum, largest in (("H", M_H, 12, 8, 26, 5), ("C", M_C, 6, 5, 9, 3),
                                                      ("O", M_O, 6, 3, 5, 2)):
        entry = got[symbol]
        assert entry["force_mae"] == approx(abs_sum / n)
        assert entry["force_rmse"] == approx(math.sqrt(sq_sum / n))
        assert entry["force_max"] == approx(largest)
        assert entry["fnm_mae"] == approx(abs_sum / n / mass)
        assert entry["fnm_rmse"] == approx(math.sqrt(sq_sum / n) / mass)
        assert entry["fnm_max"] == approx(largest / mass)
        assert entry["units"]["fnm"] == "(eV/Å)/Da"
    assert got["H"]["n_atoms"] == 2 and got["C"]["n_atoms"] == 1


def test_atom_metrics_by_hand(forces):
    got = atom_force_metrics(*forces, Z, force_unit="eV/Å")
    assert got["index"].tolist() == [0, 1, 2, 3]
    assert got["element"] == ["H", "C", "O", "H"]
    # 6 components per atom. H0: 3+4 = 7, squares 25, norm 5; C: 5, 9, 3; O: 3, 5, 2; H3: 1, 1, 1.
    masses = np.array([M_H, M_C, M_O, M_H])
    np.testing.assert_allclose(got["force_mae"], np.array([7, 5, 3, 1]) / 6, rtol=1e-12)
    np.testing.assert_allclose(got["force_rmse"], np.sqrt(np.array([25, 9, 5, 1]) / 6), rtol=1e-12)
    np.testing.assert_allclose(got["force_max"], [5, 3, 2, 1], rtol=1e-12)
    np.testing.assert_allclose(got["fnm_mae"], np.array([7, 5, 3, 1]) / 6 / masses, rtol=1e-12)
    np.testing.assert_allclose(got["fnm_rmse"], np.sqrt(np.array([25, 9, 5, 1]) / 6) / masses, rtol=1e-12)
    np.testing.assert_allclose(got["fnm_max"], np.array([5, 3, 2, 1]) / masses, rtol=1e-12)


def test_frame_metrics_by_hand(forces):
    F_pred, F_ref = forces
    got = frame_force_metrics(F_pred, F_ref, Z, E_pred=E_PRED, E_ref=E_REF, force_unit="eV/Å", energy_unit="eV")
    # 12 components per frame. Frame 0: |.| 9, squares 29, norms H0 5, O 2. Frame 1: |.| 7, squares 11,
    # norms C 3, O 1, H3 1 - the largest FNM of frame 1 is the light H3 (1/1.008), not C (3/12.011).
    np.testing.assert_allclose(got["force_mae"], [9 / 12, 7 / 12], rtol=1e-12)
    np.testing.assert_allclose(got["force_rmse"], [math.sqrt(29 / 12), math.sqrt(11 / 12)], rtol=1e-12)
    np.testing.assert_allclose(got["force_max"], [5, 3], rtol=1e-12)
    np.testing.assert_allclose(got["fnm_mae"], [(7 / M_H + 2 / M_O) / 12, (1 / M_H + 5 / M_C + 1 / M_O) / 12],
                               rtol=1e-12)
    np.testing.assert_allclose(got["fnm_rmse"], [math.sqrt((25 / M_H**2 + 4 / M_O**2) / 12),
                                                 math.sqrt((1 / M_H**2 + 9 / M_C**2 + 1 / M_O**2) / 12)], rtol=1e-12)
    np.testing.assert_allclose(got["fnm_max"], [5 / M_H, 1 / M_H], rtol=1e-12)
    np.testing.assert_allclose(got["energy_error"], [0.5, -1.5], rtol=1e-12)


def test_unit_conversion_to_kcal_per_mol(forces):
    F_pred, F_ref = forces
    in_ev = global_force_metrics(F_pred, F_ref, Z, E_pred=E_PRED, E_ref=E_REF, force_unit="eV/Å", energy_unit="eV")
    default = global_force_metrics(F_pred, F_ref, Z, E_pred=E_PRED, E_ref=E_REF)
    kcal_per_ev = 96.48533212 / 4.184  # 1 eV = 96.485 kJ/mol, 1 kcal = 4.184 kJ: 23.0605
    assert kcal_per_ev == pytest.approx(23.06, abs=1e-3)
    for key in ("force_mae", "force_rmse", "force_max", "fnm_mae", "fnm_rmse", "fnm_max", "energy_mae", "energy_rmse"):
        assert default[key] == pytest.approx(in_ev[key] * kcal_per_ev, rel=1e-9), key
    assert default["units"] == {"force": "kcal/mol/Å", "fnm": "(kcal/mol/Å)/Da", "energy": "kcal/mol"}
    # kJ/mol/nm: 96.485 kJ/mol per eV and 10 Å per nm.
    in_kj_nm = global_force_metrics(F_pred, F_ref, Z, force_unit="kJ/mol/nm")
    assert in_kj_nm["force_mae"] == pytest.approx(in_ev["force_mae"] * 964.8533212, rel=1e-9)
    with pytest.raises(ValueError, match="unknown energy unit"):
        global_force_metrics(F_pred, F_ref, Z, force_unit="furlong/Å")


def test_accumulator_over_batches_equals_one_shot_and_is_json():
    rng = np.random.default_rng(7)
    z = np.array([6, 1, 1, 8, 7, 1])
    F_ref = rng.normal(size=(10, 6, 3))
    F_pred = F_ref + rng.normal(scale=0.3, size=F_ref.shape)
    E_ref, E_pred = rng.normal(size=10), rng.normal(size=10)
    one_shot = ForceErrorAccumulator(z)
    one_shot.add(F_pred, F_ref, E_pred, E_ref)
    batched = ForceErrorAccumulator(z)
    for start, stop in ((0, 3), (3, 4), (4, 10)):
        batch = slice(start, stop)
        if stop - start == 1:  # a single frame may come as (n_atoms, 3) and a scalar energy
            batched.add(F_pred[start], F_ref[start], E_pred[start], E_ref[start])
        else:
            batched.add(F_pred[batch], F_ref[batch], E_pred[batch], E_ref[batch])
    assert batched.n_frames == 10
    expected, got = one_shot.result(), batched.result()
    assert got.keys() == expected.keys()
    assert got["frames"].keys() == expected["frames"].keys()
    np.testing.assert_allclose(got["frames"]["force_mae"], expected["frames"]["force_mae"], rtol=1e-12)
    np.testing.assert_allclose(got["frames"]["energy_error"], expected["frames"]["energy_error"], rtol=1e-12)
    np.testing.assert_allclose(got["atoms"]["fnm_rmse"], expected["atoms"]["fnm_rmse"], rtol=1e-12)
    for key in ("force_mae", "force_rmse", "force_max", "fnm_mae", "fnm_rmse", "fnm_max", "energy_mae", "energy_rmse"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key
    for symbol in ("H", "C", "N", "O"):
        for key in ("force_mae", "force_rmse", "force_max", "fnm_mae", "fnm_rmse", "fnm_max"):
            assert got["elements"][symbol][key] == pytest.approx(expected["elements"][symbol][key], rel=1e-12)
    # The plain functions give the same numbers as the accumulator's parts.
    assert global_force_metrics(F_pred, F_ref, z, E_pred=E_pred, E_ref=E_ref)["force_rmse"] == pytest.approx(
        got["force_rmse"], rel=1e-12)
    # JSON-ready: plain types only, and a round trip keeps everything.
    assert json.loads(json.dumps(got)) == got
    assert isinstance(got["atoms"]["force_mae"], list) and isinstance(got["frames"]["fnm_max"], list)


def test_accumulator_refuses_bad_input():
    acc = ForceErrorAccumulator([1, 8, 1])
    with pytest.raises(ValueError, match="no frames"):
        acc.result()
    good = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match=r"F_ref has shape \(2, 4, 3\)"):
        acc.add(good, np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="E_ref is missing"):
        acc.add(good, good, E_pred=[0.0, 0.0])
    bad = good.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="F_pred has 1 non-finite"):
        acc.add(bad, good)
    acc.add(good, good, E_pred=[0.0, 1.0], E_ref=[0.0, 0.0])
    with pytest.raises(ValueError, match="every batch or for none"):
        acc.add(good, good)
    with pytest.raises(ValueError, match="unknown atomic numbers"):
        ForceErrorAccumulator([1, 0])


def _aspirin() -> np.ndarray:
    """The built-in aspirin structure (MD17 atom order), positions in Å."""
    return load_structure("aspirin").positions_angstrom


def test_descriptor_invariant_under_rotation_and_translation():
    rng = np.random.default_rng(3)
    R = _aspirin()
    rotation = random_rotation(rng)
    moved = R @ rotation.T + rng.normal(scale=5.0, size=3)
    assert not np.allclose(moved, R)
    d0, d1 = conformation_descriptor(R), conformation_descriptor(moved)
    assert d0.shape == (1, 21 * 20 // 2)
    np.testing.assert_allclose(d1, d0, rtol=1e-12)
    stretched = R.copy()
    stretched[0] += [0.3, 0.0, 0.0]
    assert not np.allclose(conformation_descriptor(stretched), d0)
    # Two atoms 2 Å apart: one pair, 1/r = 0.5 per Å.
    np.testing.assert_allclose(conformation_descriptor([[0, 0, 0], [0, 2.0, 0]]), [[0.5]])


def _two_groups(rng, n_per_group: int):
    """Aspirin frames in two well-separated groups (group 1 has 5 atoms moved by 1.5 Å), with
    0.01 Å noise, each frame randomly rotated and translated."""
    base = _aspirin()
    other = base.copy()
    other[:5] += [1.5, 0.0, 0.0]
    frames, truth = [], []
    for group, start in ((0, base), (1, other)):
        for _ in range(n_per_group):
            R = start + rng.normal(scale=0.01, size=start.shape)
            frames.append(R @ random_rotation(rng).T + rng.normal(size=3))
            truth.append(group)
    order = rng.permutation(len(frames))
    return np.array(frames)[order], np.array(truth)[order]


def _same_partition(labels, truth) -> bool:
    return np.array_equal(labels, truth) or np.array_equal(labels, 1 - truth)


def test_kmeans_recovers_two_groups_and_assigns_new_frames():
    rng = np.random.default_rng(11)
    R, truth = _two_groups(rng, 25)
    labels, centers, info = cluster_conformations(R, seed=0)  # k chosen by the silhouette rule
    assert info["n_clusters"] == 2 and info["k_candidates"][0] == 2
    assert max(info["silhouette"]) == info["silhouette"][0]
    assert _same_partition(labels, truth)
    assert sorted(info["cluster_sizes"]) == [25, 25]
    json.dumps(info)
    again, _, _ = cluster_conformations(R, n_clusters=2, seed=0)
    assert _same_partition(again, truth)
    new_R, new_truth = _two_groups(np.random.default_rng(12), 5)
    assigned = assign_clusters(new_R, centers)
    mapping = {labels[truth == g][0]: g for g in (0, 1)}  # cluster label -> group
    assert [mapping[a] for a in assigned] == new_truth.tolist()
    with pytest.raises(ValueError, match="same atoms"):
        assign_clusters(new_R, centers, atoms=[0, 1, 2])


def test_kmeans_converges_is_deterministic_and_beats_one_default_kmeans2_start(test_data):
    """scipy's kmeans2 stepped to convergence, best of 4 k-means++ starts: a Lloyd fixed point, the same for a seed,
    and lower inertia on average than one start of kmeans2's own default (10 steps) on the same frames."""
    import warnings

    from scipy.cluster.vq import kmeans2

    from openmlff.data import load_dataset
    from openmlff.metrics.conformations import _kmeans

    X = conformation_descriptor(load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz").R)
    k = 3
    ours, default = [], []
    for seed in range(8):
        labels, centers, inertia = _kmeans(X, k, np.random.default_rng(seed))
        d2 = ((X[:, None, :] - centers[None]) ** 2).sum(-1)
        np.testing.assert_array_equal(labels, d2.argmin(1))  # each frame at its nearest center
        for c in range(k):  # each center the mean of its frames
            np.testing.assert_allclose(centers[c], X[labels == c].mean(0), rtol=1e-12)
        assert inertia == pytest.approx(d2.min(1).sum(), rel=1e-12)
        again = _kmeans(X, k, np.random.default_rng(seed))
        np.testing.assert_array_equal(again[0], labels)
        np.testing.assert_array_equal(again[1], centers)
        ours.append(inertia)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one_centers, _ = kmeans2(X, k, minit="++", seed=np.random.default_rng(seed))
        default.append((((X[:, None, :] - one_centers[None]) ** 2).sum(-1)).min(1).sum())
    assert np.mean(ours) < np.mean(default)  # measured: 6.487 against 6.609 (1/Å)²
    assert min(ours) <= min(default)


def test_silhouette_by_hand():
    # 1-D points 0, 1 | 10, 11. Point 0: a = 1, b = (10 + 11)/2 = 10.5; point 1: a = 1, b = (9 + 10)/2 = 9.5;
    # the other cluster mirrors this.
    X = np.array([[0.0], [1.0], [10.0], [11.0]])
    expected = (9.5 / 10.5 + 8.5 / 9.5) / 2
    assert silhouette_score(X, [0, 0, 1, 1]) == pytest.approx(expected, rel=1e-12)


def test_cluster_force_metrics_and_ratio_of_bad_points_by_hand():
    frame_metrics = {
        "force_mae": np.array([1.0, 3.0, 2.0, 5.0, 0.5]),
        "fnm_mae": np.array([0.1, 0.3, 0.2, 0.5, 0.05]),
        "force_max": np.array([4.0, 9.0, 6.0, 7.0, 1.0]),
        "fnm_max": np.array([2.0, 1.0, 3.0, 0.5, 0.25]),
        "units": {"force": "kcal/mol/Å", "fnm": "(kcal/mol/Å)/Da", "energy": "kcal/mol"},
    }
    labels = np.array([0, 0, 1, 1, 1])
    got = cluster_force_metrics(frame_metrics, labels, global_force_mae=2.0)
    assert got["cluster"].tolist() == [0, 1]
    assert got["n_frames"].tolist() == [2, 3]
    # Cluster 0: MAEs 1, 3 -> mean 2; one of two above 2.0 (the 3) -> 1/2.
    # Cluster 1: MAEs 2, 5, 0.5 -> mean 7.5/3; only 5 is above 2.0 (2 is not strictly above) -> 1/3.
    np.testing.assert_allclose(got["force_mae"], [2.0, 7.5 / 3], rtol=1e-12)
    np.testing.assert_allclose(got["fnm_mae"], [0.2, 0.75 / 3], rtol=1e-12)
    np.testing.assert_allclose(got["force_max"], [9.0, 7.0])
    np.testing.assert_allclose(got["fnm_max"], [2.0, 3.0])
    np.testing.assert_allclose(got["ratio_bad_points"], [1 / 2, 1 / 3], rtol=1e-12)
    assert got["units"]["force"] == "kcal/mol/Å"
    with pytest.raises(ValueError, match="labels has 4"):
        cluster_force_metrics(frame_metrics, labels[:4], 2.0)


def test_cluster_metrics_from_real_frame_metrics(forces):
    """The pieces fit: per-frame metrics of the tiny example, two one-frame clusters."""
    frames = frame_force_metrics(*forces, Z, force_unit="eV/Å")
    overall = global_force_metrics(*forces, Z, force_unit="eV/Å")
    got = cluster_force_metrics(frames, [0, 1], overall["force_mae"])
    # Global MAE 16/24 = 0.667; frame 0 has 9/12 = 0.75 (bad), frame 1 has 7/12 = 0.583 (good).
    assert got["ratio_bad_points"].tolist() == [1.0, 0.0]
    assert got["units"]["force"] == "eV/Å"
