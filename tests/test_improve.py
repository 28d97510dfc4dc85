"""Metric-guided improvement: the weighted sampler, the reweighting rules by hand, fine-tuning from a parent,
recruiting unseen frames by the model's errors, and continued training on added frames (API and CLI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openmlff.cli import main
from openmlff.data import load_dataset, save_dataset
from openmlff.core.errors import InputError
from openmlff.model_file.writer import export_checkpoint
from openmlff.improve import FinetuneConfig, RecruitConfig, finetune, recruit_frames, sample_weights
from openmlff.improve.recruit import _largest_remainder
from openmlff.metrics.evaluation import evaluate_model
from openmlff.model_file.reader import read_model_metadata
from openmlff.training import TrainingConfig, train
from openmlff.training.checkpoint import read_checkpoint
from openmlff.training.start import COMBINED_DATA_NAME, StartError, continue_start
from openmlff.training.trainer import TrainingResumeError, epoch_order

TINY = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}


@pytest.fixture(scope="module")
def data_path(test_data):
    return test_data / "datasets" / "rmd17_aspirin_100.npz"


@pytest.fixture(scope="module")
def dataset(data_path):
    return load_dataset(data_path)


@pytest.fixture(scope="module")
def parent(dataset, tmp_path_factory):
    """A tiny ET trained for 2 epochs on 20 of the 100 frames (5 validation, 5 test; 70 unseen)."""
    out = tmp_path_factory.mktemp("parent")
    config = TrainingConfig(hyperparameters=TINY, n_train=20, n_val=5, n_test=5, batch_size=5, warmup_steps=4,
                            learning_rate=3e-3, max_epochs=2, torch_threads=1)
    return train(dataset, out, config, progress=False).checkpoint


# --- the weighted sampler and the rules ------------------------------------------------------------

def test_epoch_order_without_weights_is_a_seeded_permutation():
    frames = np.array([3, 5, 8, 13, 21])
    order = epoch_order(frames, None, seed=1, epoch=4)
    assert sorted(order.tolist()) == frames.tolist()
    assert torch.equal(order, epoch_order(frames, None, seed=1, epoch=4))
    assert not all(torch.equal(order, epoch_order(frames, None, seed=1, epoch=e)) for e in range(5, 9))


def test_epoch_order_draws_frames_in_proportion_to_their_weights():
    frames, weights = np.array([10, 20, 30, 40]), np.array([1.0, 3.0, 0.0, 6.0])
    draws = torch.cat([epoch_order(frames, weights, seed=0, epoch=e) for e in range(3000)]).numpy()
    assert draws.size == 12000
    share = np.array([(draws == f).mean() for f in frames])
    assert share[2] == 0.0  # weight 0: never drawn
    np.testing.assert_allclose(share, weights / weights.sum(), atol=0.015)


def test_frames_rule_by_hand():
    e = np.array([1.0, 2.0, 4.0, 0.01, 100.0])  # median 2
    w, summary = sample_weights("frames", e)
    raw = np.array([0.5, 1.0, 2.0, 0.1, 10.0])  # e / 2, clipped to [0.1, 10]
    np.testing.assert_allclose(w, raw / raw.mean())
    assert w.mean() == pytest.approx(1.0) and summary["median_frame_force_mae"] == 2.0
    w2, _ = sample_weights("frames", e, power=2.0, cap=4.0)
    raw2 = np.clip((e / 2) ** 2, 0.1, 4.0)
    np.testing.assert_allclose(w2, raw2 / raw2.mean())
    assert summary["effective_sample_size"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum())


def test_frames_rule_solves_its_power_for_a_target_effective_sample_size():
    """target_ess 0.5: the power whose weights have Kish's ESS at half the frames; the weights are the frames
    rule's at that power; an unreachable target gives the largest power and says the share reached."""
    e = np.random.default_rng(4).lognormal(0.0, 0.3, size=200)  # a narrow spread: power 1 gives ESS ~ 0.9 n
    plain, plain_summary = sample_weights("frames", e)
    assert plain_summary["effective_sample_share"] > 0.85
    w, summary = sample_weights("frames", e, target_ess=0.5)
    assert summary["effective_sample_share"] == pytest.approx(0.5, abs=1e-4) and summary["solved_power"] > 1
    again, _ = sample_weights("frames", e, power=summary["solved_power"])
    np.testing.assert_allclose(w, again)
    few = np.array([1.0, 1.1, 1.2, 1.3])  # clipped at 10x the median at most: ESS 0.05 is out of reach
    _, far = sample_weights("frames", few, target_ess=0.05)
    assert far["solved_power"] == 50.0 and far["effective_sample_share"] > 0.05
    with pytest.raises(InputError, match="target_ess in \\(0, 1\\]"):
        sample_weights("frames", e, target_ess=1.5)


def test_clusters_rule_weighs_the_bad_cluster_by_one_plus_strength():
    rng = np.random.default_rng(0)
    compact = np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    wide = 2.5 * compact
    R = np.concatenate([compact + rng.normal(0, 0.01, (6, 3, 3)), wide + rng.normal(0, 0.01, (4, 3, 3))])
    e = np.array([3.0, 2.5, 2.8, 3.1, 0.2, 2.9, 0.1, 0.3, 0.2, 0.1])  # compact: 5 of 6 above 1.0
    w, summary = sample_weights("clusters", e, positions_angstrom=R, global_force_mae=1.0, n_clusters=2)
    rbp_compact = 5 / 6
    raw = np.array([1 + 4 * rbp_compact] * 6 + [1.0] * 4)
    np.testing.assert_allclose(w, raw / raw.mean())
    assert sorted(summary["ratio_bad_points"]) == pytest.approx([0.0, rbp_compact])


def test_rules_refuse_unknown_names_and_options():
    with pytest.raises(InputError, match="unknown reweighting rule"):
        sample_weights("loudest", [1.0])
    with pytest.raises(InputError, match="takes"):
        sample_weights("frames", [1.0], strength=2)
    with pytest.raises(InputError, match="positions"):
        sample_weights("clusters", [1.0, 2.0])
    np.testing.assert_array_equal(sample_weights("none", [1.0, 5.0])[0], [1.0, 1.0])


# --- fine-tuning ----------------------------------------------------------------------------------

def test_finetune_starts_from_the_parent_and_records_its_rule(parent, dataset, tmp_path):
    start_only = finetune(parent, tmp_path / "zero", FinetuneConfig(reweight="frames", max_epochs=0), progress=False)
    state = read_checkpoint(start_only.checkpoint).state
    parent_state = read_checkpoint(parent).state
    for key, value in parent_state["best_state"].items():  # no epoch yet: the parent's best weights
        assert torch.equal(state["model_state"][key], value)
    assert state["split"] == parent_state["split"] and state["element_energy_ev"] == parent_state["element_energy_ev"]
    origin = state["origin"]
    assert origin["kind"] == "finetuned" and origin["reweighting"]["rule"] == "frames"
    assert origin["reweighting"]["parameters"] == {"power": 1.0, "floor": 0.1, "cap": 10.0}
    assert len(state["sample_weights"]) == 20 and np.mean(state["sample_weights"]) == pytest.approx(1.0)
    assert state["config"]["learning_rate"] == pytest.approx(3e-3 / 4)

    result = finetune(parent, tmp_path / "ft", FinetuneConfig(reweight="clusters", max_epochs=2), progress=False)
    assert result.epochs == 2
    meta = read_model_metadata(export_checkpoint(result.checkpoint, tmp_path / "ft.pt"))
    assert meta["training"]["origin"]["reweighting"]["rule"] == "clusters"
    assert meta["training"]["origin"]["parent"]["checkpoint"] == str(parent.resolve())
    again = finetune(parent, tmp_path / "ft", FinetuneConfig(reweight="clusters", max_epochs=3), progress=False)  # resumes
    assert again.epochs == 3
    with pytest.raises(TrainingResumeError, match="origin.reweighting"):
        finetune(parent, tmp_path / "ft", FinetuneConfig(reweight="frames", max_epochs=3), progress=False)


def test_finetune_of_a_parent_trained_on_a_kept_split(dataset, tmp_path):
    """A parent of `train --split` fine-tunes on its own split (the kept split's file is not asked for again), with
    the patience given."""
    from openmlff.data import make_split

    path = make_split(dataset.n_frames, n_train=60, n_val=10, n_test=20, seed=0).save(tmp_path / "split.json")
    config = TrainingConfig(hyperparameters=TINY, split=str(path), n_train=20, batch_size=5, warmup_steps=4,
                            learning_rate=3e-3, max_epochs=1, torch_threads=1)
    parent = train(dataset, tmp_path / "parent", config, progress=False).checkpoint
    result = finetune(parent, tmp_path / "ft", FinetuneConfig(reweight="none", max_epochs=1,
                                                              early_stopping_patience_epochs=1000), progress=False)
    state = read_checkpoint(result.checkpoint).state
    assert state["split"] == read_checkpoint(parent).state["split"] and state["config"]["split"] is None
    assert state["config"]["early_stopping_patience_epochs"] == 1000 and result.epochs == 1


def test_finetune_refuses_other_data(parent, dataset, tmp_path):
    with pytest.raises(StartError, match="not the data"):
        finetune(parent, tmp_path, FinetuneConfig(reweight="none", max_epochs=1), data=dataset.subset(np.arange(50)),
                 progress=False)


# --- recruiting -----------------------------------------------------------------------------------

def test_recruit_frames_takes_the_largest_errors_among_unseen_frames(parent, dataset, tmp_path):
    split = read_checkpoint(parent).split
    seen = set(np.concatenate([split.train, split.val, split.test]).tolist())
    result = recruit_frames(parent, dataset, RecruitConfig(count=6, strategy="frames"))
    chosen = result.pool_indices.tolist()
    assert len(chosen) == 6 and not seen & set(chosen)
    unseen = np.array(sorted(set(range(dataset.n_frames)) - seen))
    errors = evaluate_model(export_checkpoint(parent, tmp_path / "p.pt"), dataset.subset(unseen))["frames"]["force_mae"]
    expected = unseen[np.argsort(-np.asarray(errors))[:6]]
    assert sorted(chosen) == sorted(expected.tolist())
    assert result.record["recruited_score_mean"] > result.record["candidates_score_mean"]
    np.testing.assert_array_equal(result.dataset.F, dataset.F[result.pool_indices])
    assert result.dataset.provenance["recruited"]["pool_indices"] == chosen


def test_recruit_random_and_clusters(parent, dataset):
    split = read_checkpoint(parent).split
    seen = set(np.concatenate([split.train, split.val, split.test]).tolist())
    a = recruit_frames(parent, dataset, RecruitConfig(count=8, strategy="random", seed=1)).pool_indices
    assert np.array_equal(a, recruit_frames(parent, dataset, RecruitConfig(count=8, strategy="random", seed=1)).pool_indices)
    assert not np.array_equal(a, recruit_frames(parent, dataset, RecruitConfig(count=8, strategy="random", seed=2)).pool_indices)
    c = recruit_frames(parent, dataset, RecruitConfig(count=8, strategy="clusters", n_clusters=3))
    info = c.record["clusters"]
    assert len(set(c.pool_indices.tolist())) == 8 and not seen & set(c.pool_indices.tolist())
    assert sum(info["quota"]) == 8 and all(q <= s for q, s in zip(info["quota"], info["sizes"]))
    assert not seen & set(a.tolist())


def test_largest_remainder_respects_shares_and_capacity():
    np.testing.assert_array_equal(_largest_remainder([3, 1, 0], 4, [10, 10, 10]), [3, 1, 0])
    np.testing.assert_array_equal(_largest_remainder([9, 1, 0], 5, [2, 10, 10]), [2, 3, 0])
    assert _largest_remainder([1, 1, 1], 2, [5, 5, 5]).sum() == 2


def test_recruit_refuses_too_many_and_other_molecules(parent, dataset, test_data):
    with pytest.raises(InputError, match="has 70 frames the model has not seen"):
        recruit_frames(parent, dataset, RecruitConfig(count=71, strategy="random"))
    benzene = load_dataset(test_data / "datasets" / "rmd17_benzene_10.npz")
    with pytest.raises(InputError, match="atoms differ"):
        recruit_frames(parent, benzene, RecruitConfig(count=2, strategy="random"))


# --- continued training on added frames -------------------------------------------------------------

def test_continue_with_added_frames_keeps_the_split_and_records_them(parent, dataset, tmp_path):
    added = recruit_frames(parent, dataset, RecruitConfig(count=5, strategy="random")).dataset
    save_dataset(added, tmp_path / "added.npz")
    added = load_dataset(tmp_path / "added.npz")
    combined, start = continue_start(read_checkpoint(parent), dataset, added, tmp_path / "run")
    assert combined.n_frames == 105 and (tmp_path / "run" / COMBINED_DATA_NAME).is_file()
    p_split = read_checkpoint(parent).split
    np.testing.assert_array_equal(start.split.train, np.concatenate([p_split.train, np.arange(100, 105)]))
    np.testing.assert_array_equal(start.split.test, p_split.test)
    np.testing.assert_array_equal(combined.R[100:], added.R)
    result = train(combined, tmp_path / "run", TrainingConfig(max_epochs=1, batch_size=5, torch_threads=1),
                   progress=False, start=start)
    state = read_checkpoint(result.checkpoint).state
    assert state["config"]["hyperparameters"] == read_checkpoint(parent).config["hyperparameters"]  # the parent's size
    assert state["origin"]["added_data"]["frame_indices"] == list(range(100, 105))
    assert state["data_provenance"]["source_file"].endswith(COMBINED_DATA_NAME)
    other = dataset.subset([0, 1])
    with pytest.raises(StartError, match="other frames"):
        continue_start(read_checkpoint(parent), dataset, other, tmp_path / "run")


def test_cli_recruit_continue_and_finetune(parent, data_path, tmp_path, capsys):
    added = tmp_path / "recruited.npz"
    assert main(["recruit", str(parent), "--pool", str(data_path), "--count", "4", "--strategy", "clusters",
                 "--out", str(added), "--quiet"]) == 0
    assert "4 of 70 unseen pool frames (clusters)" in capsys.readouterr().out
    assert main(["train", "--data", str(data_path), "--out", str(tmp_path / "cont"), "--continue-from", str(parent),
                 "--add-data", str(added), "--max-epochs", "1", "--batch-size", "5", "--quiet"]) == 0
    assert read_checkpoint(tmp_path / "cont" / "model.ckpt").split.train.size == 24
    assert main(["finetune", str(parent), "--reweight", "frames", "--out", str(tmp_path / "ft"), "--max-epochs", "1",
                 "--reweight-options", '{"power": 2}', "--quiet"]) == 0
    assert read_checkpoint(tmp_path / "ft" / "model.ckpt").state["origin"]["reweighting"]["parameters"]["power"] == 2
    capsys.readouterr()
    assert main(["train", "--data", str(data_path), "--out", str(tmp_path / "x"), "--add-data", str(added)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--add-data needs --continue-from" in err[0]
