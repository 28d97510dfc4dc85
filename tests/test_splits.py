"""Train/validation/test splits: seeded, disjoint, sized as asked, saved and read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openmlff.data import Split, load_dataset, make_split


def test_same_seed_same_split_other_seed_other_split():
    a, b = make_split(1200, seed=7), make_split(1200, seed=7)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.train, make_split(1200, seed=8).train)


@pytest.mark.parametrize("n_frames", [3, 10, 101, 1200])
def test_fraction_split_is_disjoint_covers_all_and_is_sized(n_frames):
    split = make_split(n_frames, seed=1)
    together = np.concatenate([split.train, split.val, split.test])
    np.testing.assert_array_equal(np.sort(together), np.arange(n_frames))  # disjoint, nothing lost
    assert split.sizes["train"] == int(0.8 * n_frames + 1e-9)
    assert split.sizes["val"] == int(0.1 * n_frames + 1e-9)
    assert split.n_frames == n_frames and split.seed == 1


def test_explicit_sizes_and_remainder_for_test():
    split = make_split(1200, 1000, 50, seed=3)
    assert split.sizes == {"train": 1000, "val": 50, "test": 150}
    small = make_split(1200, 100, 20, 30, seed=3)
    assert small.sizes == {"train": 100, "val": 20, "test": 30}
    assert len(set(small.train) | set(small.val) | set(small.test)) == 150
    partial = make_split(100, fractions=(0.5, 0.1, 0.1))  # fractions below 1: the rest stays unused
    assert partial.sizes == {"train": 50, "val": 10, "test": 10}


@pytest.mark.parametrize("args, kwargs", [((10, 5, 5, 5), {}), ((1200, 1150), {}), ((0,), {}),
                                          ((10,), {"fractions": (0.6, 0.6, 0.0)}), ((10, -1), {})])
def test_impossible_sizes_raise_value_error(args, kwargs):
    with pytest.raises(ValueError):
        make_split(*args, **kwargs)


def test_exceeding_message_names_sizes_and_frames():
    with pytest.raises(ValueError, match=r"n_train=1150 \(given\), n_val=120 \(fraction 0.1\).*1200 frames"):
        make_split(1200, 1150)


def test_dict_and_json_file_round_trip(tmp_path):
    split = make_split(500, 400, 50, seed=11)
    doc = json.loads(json.dumps(split.to_dict()))  # JSON-friendly: survives dumps/loads
    again = Split.from_dict(doc)
    path = split.save(tmp_path / "split.json")
    loaded = Split.load(path)
    for other in (again, loaded):
        for name in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(other, name), getattr(split, name))
        assert (other.seed, other.n_frames) == (11, 500)
    (tmp_path / "bad.json").write_text('{"train": [1]}')
    with pytest.raises(ValueError, match="bad.json"):
        Split.load(tmp_path / "bad.json")


def test_overlapping_or_out_of_range_sets_are_refused():
    with pytest.raises(ValueError, match="disjoint"):
        Split(train=np.array([0, 1]), val=np.array([1]), test=np.array([2]), seed=0)
    with pytest.raises(ValueError, match="9 but the dataset has 5"):
        Split(train=np.array([0, 9]), val=np.array([1]), test=np.array([2]), seed=0, n_frames=5)


def test_subsets_of_a_real_dataset(test_data):
    ds = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")
    split = make_split(ds.n_frames, 70, 10, seed=0)
    train, val, test = split.subsets(ds)
    assert (train.n_frames, val.n_frames, test.n_frames) == (70, 10, 20)
    np.testing.assert_array_equal(val.R, ds.R[split.val])
    np.testing.assert_array_equal(test.E, ds.E[split.test])
    with pytest.raises(ValueError, match="100"):
        make_split(50).subsets(ds)


def test_nested_training_sets_keep_validation_and_test():
    split = make_split(1200, n_train=950, n_val=50, n_test=200, seed=0)
    small, large = split.nested_train(25, seed=1), split.nested_train(300, seed=1)
    assert set(small.train) < set(large.train) < set(split.train)
    assert not np.array_equal(split.nested_train(25, seed=2).train, small.train)  # another seed, another draw
    np.testing.assert_array_equal(small.test, split.test)
    np.testing.assert_array_equal(small.val, split.val)
    with pytest.raises(ValueError, match="between 1 and the split's 950"):
        split.nested_train(951, seed=0)
