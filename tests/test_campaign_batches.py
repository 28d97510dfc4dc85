"""Campaign replica batches (openmlff/campaign/batches.py): the plan is made once and kept, batched runs are ordinary
runs to `campaign status` and `analyze`, and a batched campaign killed with SIGKILL and resumed gives every run the
result of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from openmlff.campaign import (
    FINISHED_COLLAPSED, FINISHED_STABLE, INTERRUPTED, CampaignDirectory, CampaignSpec, CampaignSpecError, format_status,
    read_attempts, run_campaign, run_state,
)
from openmlff.campaign.batches import AUTO_REPLICAS, BATCHES_FILE, BatchSpec, auto_replicas, plan_tasks
from openmlff.md import read_state_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from campaign_helpers import REPO_ROOT, check_run_done_once, write_spec  # noqa: E402


def _plan(tmp_path, spec, workers=2, platform="Reference", alone=(), atoms=21):
    runs = spec.expand()
    return plan_tasks(tmp_path, spec, runs, workers, started_alone=lambda run: run.run_id in alone,
                      n_atoms=lambda run: atoms, platform=platform)


def _members(tasks):
    return [[r.run_id for r in t.runs] if isinstance(t, BatchSpec) else t.run_id for t in tasks]


def test_batches_are_planned_once_and_kept(tmp_path, models, aspirin_data):
    spec = CampaignSpec.from_file(write_spec(tmp_path, {"stable": models["stable"]}, aspirin_data, frames=(3, 7, 11),
                                             seeds=(0, 1), replicas_per_context=4))
    tasks = _plan(tmp_path, spec, workers=1, alone={"stable__frame0011__T500__s1"})
    assert _members(tasks) == [["stable__frame0003__T500__s0", "stable__frame0003__T500__s1",
                                "stable__frame0007__T500__s0", "stable__frame0007__T500__s1"],
                               "stable__frame0011__T500__s1", "stable__frame0011__T500__s0"]  # one left: alone
    recorded = json.loads((tmp_path / BATCHES_FILE).read_text())["batches"]
    assert list(recorded) == ["batch0000"]
    # another session, another size, more workers, a grown grid: the planned batch keeps its members
    grown = CampaignSpec.from_file(write_spec(tmp_path, {"stable": models["stable"]}, aspirin_data, frames=(3, 7, 11),
                                              seeds=(0, 1, 2, 3), replicas_per_context=2))
    again = _members(_plan(tmp_path, grown, workers=4, alone={"stable__frame0011__T500__s1"}))
    assert again[0] == recorded["batch0000"]
    new = json.loads((tmp_path / BATCHES_FILE).read_text())["batches"]
    assert new["batch0000"] == recorded["batch0000"] and all(len(m) == 2 for k, m in new.items() if k != "batch0000")
    # 8 runs to plan on 4 workers: batches of 2; of the 7 not started alone, the last is left alone
    assert sorted(m for members in new.values() for m in members) == sorted(
        r.run_id for r in grown.expand() if r.run_id not in ("stable__frame0011__T500__s1", "stable__frame0011__T500__s3"))


def test_the_default_batches_only_where_measured_faster(tmp_path, models, aspirin_data):
    spec = CampaignSpec.from_file(write_spec(tmp_path, {"stable": models["stable"], "blowup": models["blowup"]},
                                             aspirin_data, frames=tuple(range(0, 40, 2)), seeds=(0,)))
    assert spec.replicas_per_context is None
    assert auto_replicas("CPU", "torchforce", 21) == AUTO_REPLICAS > 1
    assert auto_replicas("CPU", "torchforce", 42) == auto_replicas("CPU", "torchforce", 166) == 1
    assert auto_replicas("CUDA", "torchforce", 21) == 1
    assert auto_replicas("CPU", "pythonforce", 21) == 1
    assert all(isinstance(t, str) for t in _members(_plan(tmp_path / "a", spec, platform="Reference")))
    assert all(isinstance(t, str) for t in _members(_plan(tmp_path / "b", spec, platform="CPU", atoms=166)))
    (tmp_path / "c").mkdir()
    cpu = _members(_plan(tmp_path / "c", spec, platform="CPU", workers=2))  # 20 runs per model: 8, 8, 4 each
    assert [len(m) for m in cpu] == [8, 8, 4, 8, 8, 4] and len({m[0].split("__")[0] for m in cpu[:3]}) == 1
    (tmp_path / "d").mkdir()
    few = _members(_plan(tmp_path / "d", spec, platform="CPU", workers=16))  # 40 runs, 16 workers: at most 3 a batch
    assert max(len(m) for m in few) == 3


def test_solvated_and_npt_runs_go_alone(tmp_path, models, aspirin_data):
    """Replicas are molecules in vacuum: md.solvate_padding_nm or md.pressure_bar runs alone, whatever the size."""
    for md in ({"solvate_padding_nm": 1.0}, {"pressure_bar": 1.0}):
        folder = tmp_path / next(iter(md))
        folder.mkdir()
        spec = CampaignSpec.from_file(write_spec(folder, {"stable": models["stable"]}, aspirin_data,
                                                 frames=tuple(range(8)), seeds=(0,), replicas_per_context=4, **md))
        assert all(isinstance(t, str) for t in _members(_plan(folder, spec, platform="CPU")))


@pytest.mark.parametrize("value, expected", [(0, "positive integer"), (2.5, "positive integer"),
                                             (True, "positive integer")])
def test_bad_replicas_per_context_names_the_field(tmp_path, models, aspirin_data, value, expected):
    path = write_spec(tmp_path, {"stable": models["stable"]}, aspirin_data, replicas_per_context=value)
    with pytest.raises(CampaignSpecError, match=rf"field 'md.replicas_per_context': .*{expected}"):
        CampaignSpec.from_file(path)


def test_batched_campaign_runs_are_ordinary_runs(tmp_path, models, aspirin_data):
    spec_path = write_spec(tmp_path, models, aspirin_data, replicas_per_context=2)  # 2 models x 2 starts x 2 seeds
    result = run_campaign(spec_path, n_workers=2, progress=False)
    assert result.submitted == 8 and result.outcomes == {FINISHED_STABLE: 4, FINISHED_COLLAPSED: 4}
    folder = CampaignDirectory(result.directory)
    batches = json.loads((folder.directory / BATCHES_FILE).read_text())["batches"]
    assert len(batches) == 4 and all(len(m) == 2 and len({r.split("__")[0] for r in m}) == 1 for m in batches.values())
    session = folder.read()["sessions"][-1]
    assert session["batches"] == 4 and session["runs_at_once"] == 4
    status = result.status
    assert status["counts"][FINISHED_STABLE] == 4 and status["steps_done"] == status["steps_total"]
    assert status["runs_at_once"] == 4 and "at 4 at once (2 workers, replica batches)" in format_status(status)
    for run in folder.spec().expand():
        run_dir = folder.run_dir(run.run_id)
        summary = check_run_done_once(run_dir)
        record = json.loads((run_dir / "run.json").read_text())
        batch_id = next(b for b, m in batches.items() if run.run_id in m)
        assert record["replicas"]["batch_directory"] == f"../../batches/{batch_id}" and record["config"]["seed"] == run.seed
        assert [a.get("batch") for a in read_attempts(run_dir)] == [batch_id, batch_id]
        if run.model == "blowup":
            assert summary["collapse_reason"] == "bond_deviation"
        else:
            assert summary["stable"] and summary["steps_completed"] == 200
    from openmlff.cli import main as cli_main

    stable = folder.run_dir("stable__frame0003__T500__s1")
    assert cli_main(["analyze", str(stable), "--no-errors", "--data", str(aspirin_data)]) == 0
    assert (stable / "analysis").is_dir()
    assert run_campaign(result.directory, progress=False).submitted == 0


@pytest.mark.slow
def test_killed_batched_campaign_resumes_to_the_uninterrupted_result(tmp_path, models, aspirin_data):
    """`openmlff campaign run` killed (SIGKILL, executor and worker) while its batch is midway: resumed, every run's
    state rows are bit for bit those of the same campaign run without a kill."""
    spec_kwargs = dict(frames=(3, 7), seeds=(0,), steps=800, replicas_per_context=2)
    whole = run_campaign(write_spec(tmp_path, {"stable": models["stable"]}, aspirin_data, name="whole", **spec_kwargs),
                         n_workers=1, progress=False)
    assert whole.outcomes == {FINISHED_STABLE: 2}
    spec_path = write_spec(tmp_path, {"stable": models["stable"]}, aspirin_data, name="killed", **spec_kwargs)
    checkpoint = tmp_path / "killed" / "batches" / "batch0000" / "checkpoint.json"
    log = open(tmp_path / "first_session.log", "w")
    first = subprocess.Popen([sys.executable, "-m", "openmlff.cli", "campaign", "run", str(spec_path), "--workers",
                              "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + 240
        while not _midway(checkpoint):
            assert first.poll() is None, (tmp_path / "first_session.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the batch never reached a checkpoint past step 0"
            time.sleep(0.02)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        log.close()
    folder = CampaignDirectory(tmp_path / "killed")
    spec = folder.spec()
    deadline = time.monotonic() + 30
    while any(run_state(folder.run_dir(r.run_id), spec.steps) != INTERRUPTED for r in spec.expand()):
        assert time.monotonic() < deadline, [run_state(folder.run_dir(r.run_id), spec.steps) for r in spec.expand()]
        time.sleep(0.05)
    killed_at = json.loads(checkpoint.read_text())["step"]
    assert 0 < killed_at < 800
    result = run_campaign(folder.directory, n_workers=1, progress=False)
    assert result.outcomes == {FINISHED_STABLE: 2}
    for run in spec.expand():
        resumed = read_state_csv(folder.run_dir(run.run_id) / "state.csv")
        uninterrupted = read_state_csv(CampaignDirectory(whole.directory).run_dir(run.run_id) / "state.csv")
        for column in ("step", "potential_energy_kJ_per_mol", "kinetic_energy_kJ_per_mol", "temperature_K"):
            assert np.array_equal(resumed[column], uninterrupted[column]), (run.run_id, column)
        summary = check_run_done_once(folder.run_dir(run.run_id), starts=2, new_runs=1)
        assert summary["resumed_from_step"] >= killed_at


def _midway(checkpoint: Path) -> bool:
    try:
        return 0 < json.loads(checkpoint.read_text())["step"] < 600
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False
