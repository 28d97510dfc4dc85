"""Active learning on xTB-level aspirin data with GFN2-xTB labels: a real loop of committee training, campaigns
with the committee's spread, selection, labelling and continued training; it resumes, and refuses mixed levels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openmlff.cli import main
from openmlff.data import load_dataset, save_dataset
from openmlff.core.errors import InputError
from openmlff.improve.active import ActiveLearningConfig, active_learn, select_frames, write_active_learning_report
from openmlff.reference import label_conformations
from openmlff.training import TrainingConfig
from openmlff.training.checkpoint import read_checkpoint

TINY = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}


@pytest.fixture(scope="module")
def xtb_data(test_data, tmp_path_factory):
    """40 rMD17 aspirin conformations relabelled with GFN2-xTB: data at the level the loop labels with."""
    folder = tmp_path_factory.mktemp("xtb")
    frames = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz").subset(np.arange(40))
    result = label_conformations("gfn2-xtb", frames.z, frames.R, folder / "chunks", n_workers=1, progress=False,
                                 name="aspirin_xtb")
    return save_dataset(result.dataset, folder / "aspirin_xtb.npz")


def config(**kw):
    training = TrainingConfig(hyperparameters=TINY, n_train=20, n_val=5, n_test=10, batch_size=5, warmup_steps=4,
                              learning_rate=3e-3, max_epochs=2, torch_threads=1)
    return ActiveLearningConfig(**{**dict(method="gfn2-xtb", rounds=1, committee_size=2, training=training,
                                          continue_epochs=1, starts=2, md_steps=40, report_interval_steps=10,
                                          frames_per_round=3, label_workers=1, md_workers=1,
                                          stop_when_not_improving=False), **kw})


@pytest.mark.slow
def test_one_round_of_active_learning_resumes(xtb_data, tmp_path):
    data = load_dataset(xtb_data)
    doc = active_learn(data, tmp_path / "al", config(), progress=False)
    assert [e["round"] for e in doc["rounds"]] == [0, 1] and doc["stop_reason"] == "1 labelling rounds done"
    r0, r1 = doc["rounds"]
    assert r0["labelled_frames"] == 3 and r0["label_failures"] == 0 and r0["candidates"] >= 3
    assert r1["training_frames"] == r0["training_frames"] + 3 == 23
    assert r0["stability"]["n_runs"] == 2 and "uncertainty_spearman" in r0["held_out"]
    member = read_checkpoint(tmp_path / "al" / "round_1" / "members" / "member_1" / "model.ckpt").state
    assert member["origin"]["added_data"]["n_frames"] == 3 and member["config"]["seed"] == 1
    labelled = load_dataset(tmp_path / "al" / "round_0" / "labelled.npz")
    with np.load(tmp_path / "al" / "round_0" / "selected.npz") as sel:
        np.testing.assert_allclose(labelled.R, sel["positions_angstrom"])
    stamp = (tmp_path / "al" / "round_1" / "committee.pt").stat().st_mtime_ns
    again = active_learn(data, tmp_path / "al", config(), progress=False)  # everything found on disk
    assert again["rounds"] == doc["rounds"]
    assert (tmp_path / "al" / "round_1" / "committee.pt").stat().st_mtime_ns == stamp
    page = write_active_learning_report(again, tmp_path / "al" / "report.html").read_text()
    assert "round_1" in page and "Survival" in page
    with pytest.raises(InputError, match="frames_per_round"):
        active_learn(data, tmp_path / "al", config(frames_per_round=4), progress=False)


def test_labels_of_another_level_are_refused(xtb_data, tmp_path):
    with pytest.raises(InputError, match="cannot be mixed"):
        active_learn(load_dataset(xtb_data), tmp_path, config(method="dft"), progress=False)


def test_select_frames_prefers_uncertain_and_diverse():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 3)) * 1.5
    R = np.stack([base + 0.001 * k for k in range(6)] + [base * 1.3, base * 0.8])  # 6 near-duplicates, 2 others
    sigma = np.array([9.0, 8.9, 8.8, 8.7, 8.6, 8.5, 1.0, 0.5])
    pick = select_frames(R, sigma, 2)
    assert pick[0] == 0 and pick[1] in (6, 7)  # the most uncertain, then not one of its near-duplicates


@pytest.mark.slow
def test_cli_active_learn(xtb_data, tmp_path, capsys):
    assert main(["active-learn", "--data", str(xtb_data), "--method", "gfn2-xtb", "--rounds", "1", "--out",
                 str(tmp_path / "al"), "--committee-size", "2", "--frames-per-round", "2", "--starts", "2",
                 "--md-steps", "40", "--continue-epochs", "1", "--keep-going",
                 "--hyperparameters", json.dumps(TINY), "--n-train", "20", "--n-val", "5", "--n-test", "10",
                 "--batch-size", "5", "--max-epochs", "1", "--drive", "member", "--training-workers", "2",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "round 1: 22 training frames" in out and (tmp_path / "al" / "report.html").is_file()
    doc = json.loads((tmp_path / "al" / "rounds.json").read_text())
    assert [e["md_driven_by"] for e in doc["rounds"]] == ["member_0", "member_0"]
    spec = json.loads((tmp_path / "al" / "round_1" / "campaign.json").read_text())
    assert list(spec["models"]) == ["member_0"] and spec["trust"]["committee"].endswith("committee.pt")
    # the members trained side by side are the members trained one after another (same seeds, same split)
    alone = ActiveLearningConfig(method="gfn2-xtb", rounds=0, committee_size=2, training=TrainingConfig(
        hyperparameters=TINY, n_train=20, n_val=5, n_test=10, batch_size=5, max_epochs=1, torch_threads=1),
        starts=2, md_steps=40, md_workers=1, label_workers=1)
    from openmlff.improve.active import _round_zero

    sequential = _round_zero(load_dataset(xtb_data), tmp_path / "seq", alone, progress=False)
    for k, ckpt in enumerate(sequential):
        a = read_checkpoint(ckpt).state
        b = read_checkpoint(tmp_path / "al" / "round_0" / "members" / f"member_{k}" / "model.ckpt").state
        assert a["split"] == b["split"] and a["config"]["seed"] == b["config"]["seed"] == k
        for name, value in a["best_state"].items():
            np.testing.assert_allclose(value.numpy(), b["best_state"][name].numpy(), rtol=1e-5, atol=1e-6)
