"""Trainer: learns, logs, checkpoints, resumes (also after a real SIGKILL), refuses a mismatched resume."""

import csv
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from openmlff.core.config import ConfigError
from openmlff.analysis.reference_data import model_splits
from openmlff.data import load_dataset, make_split
from openmlff.model_file.writer import export_checkpoint, load_exported
from openmlff.training import TrainingConfig, TrainingError, load_checkpoint, train
from openmlff.training.checkpoint import read_checkpoint

from model_helpers import TINY as TINY_SIZES  # tests/ is on sys.path (pytest rootdir insertion)

torch.set_num_threads(1)
TINY = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}
TINY_NEQUIP = TINY_SIZES["nequip"]


@pytest.fixture(scope="module")
def aspirin(test_data):
    return load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")


def tiny_config(**kw):
    base = dict(hyperparameters=TINY, n_train=20, n_val=5, n_test=5, batch_size=5, warmup_steps=4,
                learning_rate=3e-3, max_epochs=2, torch_threads=1)
    base.update(kw)
    return TrainingConfig(**base)


def test_training_learns_and_writes_log_and_checkpoint(tmp_path, aspirin):
    result = train(aspirin, tmp_path, tiny_config(max_epochs=25, ema_decay=0.5, learning_rate=1e-2), progress=False)
    assert result.epochs == 25 and result.stop_reason == "max epochs reached"
    with open(tmp_path / "training_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 25
    first, best = float(rows[0]["val_force_mae_kcal_per_mol_per_A"]), result.best_val_force_mae_kcal_per_mol_per_A
    assert best < 0.75 * first, (first, best)  # the model learned something
    potential, ckpt = load_checkpoint(tmp_path / "model.ckpt")
    split = ckpt["split"]
    assert len(split["train"]) == 20 and len(split["val"]) == 5 and len(split["test"]) == 5
    assert not set(split["train"]) & set(split["test"])
    assert ckpt["data_fingerprint"] == aspirin.fingerprint()
    # exported metadata carries the training provenance
    _, meta = load_exported(export_checkpoint(tmp_path / "model.ckpt", tmp_path / "model.pt"))
    assert meta["training"]["data_fingerprint_sha256"] == aspirin.fingerprint()
    assert meta["training"]["split"] == {"seed": 0, "n_train": 20, "n_val": 5, "n_test": 5}
    assert meta["training"]["metrics"]["val_force_mae_kcal_per_mol_per_A"] == pytest.approx(best)


def test_resume_continues_and_finished_run_is_not_repeated(tmp_path, aspirin):
    first = train(aspirin, tmp_path, tiny_config(max_epochs=2), progress=False)
    steps_per_epoch = first.steps // 2
    again = train(aspirin, tmp_path, tiny_config(max_epochs=2), progress=False)
    assert again.steps == first.steps  # finished: nothing re-run
    more = train(aspirin, tmp_path, tiny_config(max_epochs=3), progress=False)
    assert more.epochs == 3 and more.steps == first.steps + steps_per_epoch
    _, ckpt = load_checkpoint(tmp_path / "model.ckpt")
    assert [h["epoch"] for h in ckpt["history"]] == [1, 2, 3]


def test_resumed_training_matches_uninterrupted(tmp_path, aspirin):
    straight = train(aspirin, tmp_path / "a", tiny_config(max_epochs=3), progress=False)
    train(aspirin, tmp_path / "b", tiny_config(max_epochs=1), progress=False)
    resumed = train(aspirin, tmp_path / "b", tiny_config(max_epochs=3), progress=False)
    a, _ = load_checkpoint(straight.checkpoint, weights="raw")
    b, _ = load_checkpoint(resumed.checkpoint, weights="raw")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)


def test_ema_warmup_follows_the_weights_early_and_resumes_exactly(tmp_path, aspirin):
    from openmlff.training.ema import ExponentialMovingAverage

    model = torch.nn.Linear(2, 1)
    for warmup, kept in ((True, 0.1), (False, 0.99)):  # update 0: decay min(0.99, 1/10) with warm-up
        ema = ExponentialMovingAverage(model, 0.99, warmup)
        before = ema.shadow.weight.detach().clone()
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model, 0)
        torch.testing.assert_close(ema.shadow.weight, kept * before + (1 - kept) * model.weight.detach())
        with torch.no_grad():
            model.weight.sub_(1.0)
    assert ExponentialMovingAverage(model, 0.99, True).decay_at(10_000) == 0.99
    straight = train(aspirin, tmp_path / "a", tiny_config(max_epochs=3, ema_decay=0.9), progress=False)
    train(aspirin, tmp_path / "b", tiny_config(max_epochs=1, ema_decay=0.9), progress=False)
    resumed = train(aspirin, tmp_path / "b", tiny_config(max_epochs=3, ema_decay=0.9), progress=False)
    a, _ = load_checkpoint(straight.checkpoint, weights="ema")
    b, _ = load_checkpoint(resumed.checkpoint, weights="ema")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)


def test_checkpoint_from_before_ema_warmup_resumes_as_it_ran(tmp_path, aspirin):
    from openmlff.training.checkpoint import write_checkpoint

    train(aspirin, tmp_path, tiny_config(max_epochs=1), progress=False)
    state = dict(read_checkpoint(tmp_path / "model.ckpt").state)
    state["config"] = {k: v for k, v in state["config"].items() if k != "ema_warmup"}  # as 0.1.0 wrote it
    write_checkpoint(tmp_path / "model.ckpt", state)
    train(aspirin, tmp_path, tiny_config(max_epochs=2), progress=False)  # today's default does not block it
    assert read_checkpoint(tmp_path / "model.ckpt").state["config"]["ema_warmup"] is False
    with pytest.raises(TrainingError, match="ema_warmup"):  # now recorded: switching it on is a change
        train(aspirin, tmp_path, tiny_config(max_epochs=3, ema_warmup=True), progress=False)


def test_learning_rate_left_none_is_the_architectures_and_recorded(tmp_path, aspirin):
    from openmlff.models import ARCHITECTURES
    from openmlff.training.config import ARCHITECTURE_DEFAULTS

    assert set(ARCHITECTURE_DEFAULTS) == set(ARCHITECTURES)
    assert TrainingConfig(architecture="nequip").resolved().learning_rate == 1.0e-2
    assert TrainingConfig(architecture="et").resolved().warmup_steps == 500
    kept = TrainingConfig(architecture="nequip", learning_rate=2e-3, warmup_steps=0).resolved()
    assert (kept.learning_rate, kept.warmup_steps) == (2e-3, 0)
    with pytest.raises(ConfigError, match="learning_rate must be positive"):
        TrainingConfig(learning_rate=0.0)
    config = tiny_config(architecture="nequip", hyperparameters=TINY_NEQUIP, learning_rate=None, warmup_steps=None,
                         max_epochs=1)
    train(aspirin, tmp_path, config, progress=False)
    recorded = read_checkpoint(tmp_path / "model.ckpt").state
    assert (recorded["config"]["learning_rate"], recorded["config"]["warmup_steps"]) == (1.0e-2, 50)
    # 4 steps of the 50-step warm-up to 1e-2: the optimiser ran at 4/50 of it
    assert recorded["history"][-1]["learning_rate"] == pytest.approx(1.0e-2 * 4 / 50)


def test_nequip_run_of_0_1_1_resumes_with_its_learning_rate(tmp_path, aspirin):
    """A checkpoint records the learning rate it ran with (0.1.1: 1e-3 and 500 warm-up steps for every
    architecture); resumed with the default left None, it goes on with that, not with today's NequIP default."""
    old = dict(architecture="nequip", hyperparameters=TINY_NEQUIP, learning_rate=1.0e-3, warmup_steps=500)
    train(aspirin, tmp_path, tiny_config(**old, max_epochs=1), progress=False)
    train(aspirin, tmp_path, tiny_config(**{**old, "learning_rate": None, "warmup_steps": None}, max_epochs=2),
          progress=False)
    state = read_checkpoint(tmp_path / "model.ckpt").state
    assert state["epoch"] == 2 and (state["config"]["learning_rate"], state["config"]["warmup_steps"]) == (1e-3, 500)
    assert state["history"][-1]["learning_rate"] == pytest.approx(1.0e-3 * 8 / 500)
    with pytest.raises(TrainingError, match="learning_rate"):  # asking for another one is a change
        train(aspirin, tmp_path, tiny_config(**{**old, "learning_rate": 1e-2, "warmup_steps": None}, max_epochs=3),
              progress=False)


def test_a_diverged_epoch_goes_back_to_the_best_with_half_the_learning_rate(tmp_path, aspirin, monkeypatch, capsys):
    from openmlff.training import trainer

    validate, save, saved = trainer._Loop.validate, trainer._Loop.save, {}

    def blown_up(loop):  # the validation loss of epochs 3 (finite, 1000x) and 4 (NaN) as if the weights had blown up
        val, epoch = validate(loop), loop.state["epoch"]
        return dict(val, val_loss={3: val["val_loss"] * 1000, 4: math.nan}.get(epoch, val["val_loss"]))

    def record(loop, status):
        save(loop, status)
        saved[loop.state["epoch"]] = [{k: v.clone() for k, v in sd.items()}
                                      for sd in (loop.model.state_dict(), loop.ema.state_dict())]

    monkeypatch.setattr(trainer._Loop, "validate", blown_up)
    monkeypatch.setattr(trainer._Loop, "save", record)
    train(aspirin, tmp_path, tiny_config(max_epochs=6), progress=False)
    with open(tmp_path / "training_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["rolled_back"] for r in rows] == ["False", "False", "True", "True", "False", "False"]
    assert rows[2]["best"] == rows[3]["best"] == "False"
    best = max(int(r["epoch"]) for r in rows[:2] if r["best"] == "True")
    for undone in (3, 4):  # raw weights and EMA written after an undone epoch are the best epoch's
        for now, then in zip(saved[undone], saved[best]):
            assert all(torch.equal(now[k], then[k]) for k in now)
    assert not all(torch.equal(saved[5][0][k], saved[4][0][k]) for k in saved[5][0])  # and training went on
    lrs = [float(r["learning_rate"]) for r in rows]  # warm-up over after epoch 1: 3e-3, then halved twice
    assert lrs[1:] == pytest.approx([3e-3, 1.5e-3, 7.5e-4, 7.5e-4, 7.5e-4])
    state = read_checkpoint(tmp_path / "model.ckpt").state
    assert [r["epoch"] for r in state["rollbacks"]] == [3, 4] and state["best_epoch"] not in (3, 4)
    assert "epoch 3 diverged" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="divergence_factor"):
        tiny_config(divergence_factor=1.0)


def test_a_kept_split_keeps_validation_and_test_and_nests_the_training_frames(tmp_path, aspirin):
    """TrainingConfig.split: the same validation and test frames for every model, n_train frames of the split's
    training set, nested for one seed; a split drawn for other data is refused naming the field."""
    split = make_split(aspirin.n_frames, n_train=60, n_val=10, n_test=20, seed=3)
    path = split.save(tmp_path / "split.json")
    kept = {}
    for n_train in (10, 30):
        train(aspirin, tmp_path / f"n{n_train}", tiny_config(split=str(path), n_train=n_train, n_val=None, n_test=None,
                                                               max_epochs=1), progress=False)
        kept[n_train] = read_checkpoint(tmp_path / f"n{n_train}" / "model.ckpt").split
    for name in ("val", "test"):
        np.testing.assert_array_equal(getattr(kept[10], name), getattr(split, name))
    assert kept[10].sizes["train"] == 10 and kept[30].sizes["train"] == 30
    assert set(kept[10].train) < set(kept[30].train) < set(split.train)
    # the exported model names its frames: a reader finds the kept split without the checkpoint
    _, meta = load_exported(export_checkpoint(tmp_path / "n10" / "model.ckpt", tmp_path / "n10.pt"))
    (tmp_path / "n10" / "model.ckpt").unlink()
    found, where, _ = model_splits(meta, aspirin)
    assert "named with the model" in where and meta["training"]["split_file"] == str(path)
    np.testing.assert_array_equal(found["train"], kept[10].train)
    np.testing.assert_array_equal(found["test"], split.test)
    with pytest.raises(ValueError, match="n_val"):
        tiny_config(split=str(path), n_val=5)
    other = make_split(50, n_train=30, n_val=10, n_test=10).save(tmp_path / "other.json")
    with pytest.raises(TrainingError, match="field 'split': drawn for 50 frames"):
        train(aspirin, tmp_path / "other", tiny_config(split=str(other), n_val=None, n_test=None), progress=False)


def test_mismatched_resume_is_refused(tmp_path, aspirin):
    train(aspirin, tmp_path, tiny_config(max_epochs=1), progress=False)
    with pytest.raises(TrainingError, match="batch_size"):
        train(aspirin, tmp_path, tiny_config(max_epochs=2, batch_size=4), progress=False)
    other = aspirin.subset(np.arange(50))
    with pytest.raises(TrainingError, match="other data"):
        train(other, tmp_path, tiny_config(max_epochs=2), progress=False)


@pytest.mark.slow
def test_time_budget_stops_training(tmp_path, aspirin):
    t0 = time.perf_counter()
    result = train(aspirin, tmp_path, tiny_config(max_epochs=100_000, time_budget_s=3.0), progress=False)
    assert result.stop_reason == "time budget reached"
    assert 3.0 <= result.elapsed_s < 8.0 and time.perf_counter() - t0 < 30


def test_killed_training_resumes_from_checkpoint(tmp_path, test_data):
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from openmlff.data import load_dataset
        from openmlff.training import TrainingConfig, train
        ds = load_dataset({str(test_data / "datasets" / "rmd17_aspirin_100.npz")!r})
        cfg = TrainingConfig(hyperparameters={TINY!r}, n_train=20, n_val=5, n_test=5, batch_size=5,
                             warmup_steps=4, max_epochs=1000, torch_threads=1)
        train(ds, {str(tmp_path)!r}, cfg, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    ckpt = tmp_path / "model.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists() and read_checkpoint(ckpt).state["epoch"] >= 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epochs_before = read_checkpoint(ckpt).state["epoch"]
    assert epochs_before >= 2
    ds = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")
    result = train(ds, tmp_path, TrainingConfig(hyperparameters=TINY, n_train=20, n_val=5, n_test=5, batch_size=5,
                                                warmup_steps=4, max_epochs=epochs_before + 1, torch_threads=1),
                   progress=False)
    assert result.epochs == epochs_before + 1


@pytest.mark.slow
@pytest.mark.parametrize("architecture, sizes", [("et", TINY), ("nequip", TINY_NEQUIP)])
def test_compiled_training_follows_the_eager_run_and_resumes(tmp_path, aspirin, architecture, sizes, monkeypatch):
    """--compile: the same weights to float32 rounding over 3 epochs (forces by torch.func inside the compiled step,
    pairs found outside), and a compiled run resumed after its first epoch ends where the uninterrupted one does.
    23 frames in batches of 5: the last batch of each epoch is smaller (a second shape, compiled once more; with
    dynamic atom counts autograd inside dynamo failed, "Expected IntList but got GenericList")."""
    monkeypatch.setenv("OPENMLFF_CACHE_DIR", str(tmp_path / "cache"))
    cfg = dict(architecture=architecture, hyperparameters=sizes, max_epochs=3, n_train=23)
    eager = train(aspirin, tmp_path / "eager", tiny_config(**cfg), progress=False)
    compiled = train(aspirin, tmp_path / "compiled", tiny_config(**cfg, compile=True), progress=False)
    a, ckpt_a = load_checkpoint(eager.checkpoint, weights="raw")
    b, ckpt_b = load_checkpoint(compiled.checkpoint, weights="raw")
    assert ckpt_b["config"]["compile"] is True and eager.steps == compiled.steps
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pb, pa, rtol=2e-3, atol=2e-4, msg=name)
    for ha, hb in zip(ckpt_a["history"], ckpt_b["history"]):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-3)
    train(aspirin, tmp_path / "resumed", tiny_config(**{**cfg, "max_epochs": 1}, compile=True), progress=False)
    resumed = train(aspirin, tmp_path / "resumed", tiny_config(**cfg, compile=True), progress=False)
    c, _ = load_checkpoint(resumed.checkpoint, weights="raw")
    assert resumed.steps == compiled.steps
    for (name, pb), pc in zip(b.state_dict().items(), c.state_dict().values()):
        torch.testing.assert_close(pc, pb, rtol=1e-4, atol=1e-5, msg=name)
