"""openmlff.campaign: spec files and their grid, the campaign directory and run states, and real campaigns of
aspirin MD (toy TorchScript models, Reference platform) in the local process pool, on a real Dask LocalCluster,
killed with SIGKILL midway and resumed: every run done exactly once, every frame written exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from openmlff.campaign import (
    FAILED, FINISHED_COLLAPSED, FINISHED_STABLE, INTERRUPTED, PENDING, RUNNING, CampaignDirectory, CampaignSpec,
    CampaignSpecError, campaign_status, execute_run, format_status, read_attempts, run_campaign, run_state,
)
from openmlff.cli import main as cli_main
from openmlff.data import load_dataset, make_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_models import write_toy_model  # noqa: E402

from campaign_helpers import REPO_ROOT, REPORT_INTERVAL, STRETCHED_BOND, check_run_done_once, write_spec  # noqa: E402


# --- the spec -------------------------------------------------------------------------------------

def test_spec_expands_to_the_grid_with_stable_run_ids(tmp_path, aspirin_data):
    spec_path = tmp_path / "c.toml"
    spec_path.write_text(f"""
name = "aspirin"
seeds = [0, 1]
temperatures_K = [300, 500.5]
[models]
et = "models/et.pt"
visnet = "/abs/visnet.pt"
[starts]
data = "{aspirin_data}"
frames = [123, 4]
[md]
timestep_fs = 1.0
length_ps = 2
platform = "CPU"
""")
    spec = CampaignSpec.from_file(spec_path)
    runs = spec.expand()
    assert len(runs) == 2 * 2 * 2 * 2
    assert runs[0].run_id == "et__frame0123__T300__s0" and runs[-1].run_id == "visnet__frame0004__T500.5__s1"
    assert len({r.run_id for r in runs}) == len(runs)
    assert spec.models["et"] == str(tmp_path / "models" / "et.pt")  # relative to the spec file
    assert spec.md["steps"] == 2000  # 2 ps at 1 fs
    config = runs[5].simulation_config(torch_threads=1)
    assert (config.temperature_K, config.seed, config.steps, config.platform, config.torch_threads) == \
        (runs[5].temperature_K, runs[5].seed, 2000, "CPU", 1)
    # the same runs from the normalised form stored in campaign.json, and from a JSON spec of the same grid
    again = CampaignSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert [r.run_id for r in again.expand()] == [r.run_id for r in runs] and again.sha256() == spec.sha256()


@pytest.mark.parametrize("change, field, expected", [
    ({"md": {"temperature_K": 300}}, "md.temperature_K", "set by the grid"),
    ({"md": {"stepz": 10}}, "md.stepz", "not a SimulationConfig field"),
    ({"md": {"steps": "many"}}, "md.steps", "expected int"),
    ({"md": {"timestep_fs": -1.0}}, "md.timestep_fs", "must be positive"),
    ({"seeds": [0, 0]}, "seeds", "holds a value twice"),
    ({"temperatures_K": [0]}, "temperatures_K", "must be positive"),
    ({"models": {"a__b": "x.pt"}}, "models.a__b", "no '__'"),
    ({"starts": {"data": "d.npz"}}, "starts", "name the starting frames"),
    ({"starts": {"data": "d.npz", "frames": [1, -2]}}, "starts.frames", "integers >= 0"),
    ({"starts": {"data": "d.npz", "frames_from_split": "test"}}, "starts.checkpoint", "needs the training checkpoint"),
    ({"starts": {"structures": ["aspirin", "aspirin"]}}, "starts.structures", "start id 'aspirin'"),
    ({"colour": "red"}, "colour", "unknown field"),
])
def test_spec_errors_name_the_file_and_the_field(tmp_path, change, field, expected):
    raw = {"models": {"m": "m.pt"}, "starts": {"data": "d.npz", "frames": [0]}, **change}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(CampaignSpecError, match=f"{path}: field '{field}'.*{expected}"):
        CampaignSpec.from_file(path)


def test_frames_drawn_from_a_split_grow_with_count(tmp_path, aspirin_data):
    split = make_split(100, n_train=80, n_val=10, n_test=10, seed=3)
    split.save(tmp_path / "split.json")

    def spec(count):
        path = tmp_path / f"c{count}.json"
        path.write_text(json.dumps({"name": "c", "models": {"m": "m.pt"}, "starts": {
            "data": str(aspirin_data), "frames_from_split": "test", "checkpoint": "split.json", "count": count}}))
        return CampaignSpec.from_file(path)

    four, six = spec(4).starts.frames, spec(6).starts.frames
    assert len(four) == 4 and len(six) == 6 and set(four) < set(six) <= set(split.test.tolist())
    with pytest.raises(CampaignSpecError, match="'starts.count': asks for 11 frames, but the 'test' set"):
        spec(11)


def test_changed_spec_is_refused_naming_the_field_and_additions_are_accepted(tmp_path, aspirin_data):
    folder = CampaignDirectory(tmp_path / "campaign")
    models = {"a": tmp_path / "a.pt"}
    folder.adopt(CampaignSpec.from_file(write_spec(tmp_path, models, aspirin_data, seeds=(0, 1))))
    pending = [run_state(folder.run_dir(r.run_id)) for r in folder.spec().expand()]
    assert pending == [PENDING] * 4

    for changes, named in [({"timestep_fs": 1.0}, "'md.timestep_fs': recorded 0.5, now 1.0"),
                           ({"seeds": (1,)}, "'seeds': \\[0\\] removed"),
                           ({"frames": (3, 8)}, "'starts.frames': \\[7\\] removed"),
                           ({"models": {"a": tmp_path / "other.pt"}}, "'models.a': recorded")]:
        kwargs = {"seeds": (0, 1), "frames": (3, 7), "models": models, **changes}
        md = {k: v for k, v in kwargs.items() if k not in ("seeds", "frames", "models")}
        changed = write_spec(tmp_path, kwargs["models"], aspirin_data, frames=kwargs["frames"],
                             seeds=kwargs["seeds"], name="grid", **md)
        with pytest.raises(CampaignSpecError, match=f"changes the campaign recorded in .*campaign.json: {named}"):
            run_campaign(changed, out=folder.directory, progress=False)
    # the refused specs left the recorded one alone
    assert len(folder.spec().expand()) == 4

    grown = write_spec(tmp_path, {**models, "b": tmp_path / "b.pt"}, aspirin_data, frames=(3, 7, 9), seeds=(0, 1, 2),
                       steps=400)
    folder.adopt(CampaignSpec.from_file(grown))
    assert len(folder.spec().expand()) == 2 * 3 * 3 and folder.spec().steps == 400
    assert len(folder.read()["history"]) == 2


# --- campaigns ------------------------------------------------------------------------------------

def test_local_pool_campaign_does_every_run_once(tmp_path, models, aspirin_data):
    spec_path = write_spec(tmp_path, models, aspirin_data)  # 2 models x 2 starts x 2 seeds
    result = run_campaign(spec_path, n_workers=2, progress=False)
    assert result.directory == tmp_path / "grid" and result.submitted == 8
    assert result.outcomes == {FINISHED_STABLE: 4, FINISHED_COLLAPSED: 4}
    status = result.status
    assert status["counts"][FINISHED_STABLE] == 4 and status["counts"][FINISHED_COLLAPSED] == 4
    assert status["steps_done"] == status["steps_total"] == 8 * 200 and status["estimated_time_left_s"] == 0
    assert status["ns_per_day_per_run"] > 0 and not status["executor_active"]
    folder = CampaignDirectory(result.directory)
    for run in folder.spec().expand():
        summary = check_run_done_once(folder.run_dir(run.run_id))
        record = json.loads((folder.run_dir(run.run_id) / "run.json").read_text())
        assert record["config"]["seed"] == run.seed and record["config"]["temperature_K"] == 500.0
        assert record["structure"]["positions_sha256"]  # the start frame, bond references from the data set
        if run.model == "blowup":
            assert summary["collapse_reason"] == "bond_deviation"
            assert summary["first_broken_bond"]["atoms"] == list(STRETCHED_BOND)
        else:
            assert summary["stable"] and summary["steps_completed"] == 200
    assert folder.read()["sessions"][-1]["workers"] == 2

    before = {p: p.stat().st_mtime_ns for p in result.directory.rglob("*") if p.is_file() and "runs" in p.parts}
    again = run_campaign(result.directory, progress=False)  # the directory alone: nothing left to do
    assert again.submitted == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # the campaign's status and each run's files are read without torch or OpenMM (docs/architecture.md "Layers")
    reader = (
        "import sys\n"
        "from pathlib import Path\n"
        "from openmlff.cli import main\n"
        "from openmlff.md.dcd import read_dcd_frames\n"
        "from openmlff.md.rundir import RunDirectory\n"
        "from openmlff.md.state_table import read_state_csv\n"
        f"assert main(['campaign', 'status', {str(result.directory)!r}]) == 0\n"
        f"for run in sorted(Path({str(result.directory)!r}).glob('runs/*')):\n"
        "    d = RunDirectory(run)\n"
        "    print(run.name, d.read_summary().stable, len(read_state_csv(d.state_csv)['step']),"
        " len(read_dcd_frames(d.trajectory)))\n"
        "print('heavy:', sorted(m for m in ('torch', 'openmm') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, check=True)
    assert done.stdout.rstrip().endswith("heavy: []"), done.stdout
    rows = str(200 // REPORT_INTERVAL + 1)  # a stable run's state rows and frames: steps 0, 20, ..., 200
    assert sum(line.split()[1:] == ["True", rows, rows] for line in done.stdout.splitlines()) == 4, done.stdout


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


_KILL_SPEC_STEPS = 600


@pytest.mark.slow
def test_killed_campaign_resumes_without_repeating_a_run(tmp_path, models, aspirin_data, dask_cluster):
    """Killed while in the local pool (`openmlff campaign run` in a subprocess), resumed on Dask: the state is
    on disk only, so any executor takes over."""
    # the blow-up model first: its runs end within a few steps while the stable ones take a while
    spec_path = write_spec(tmp_path, {"blowup": models["blowup"], "stable": models["stable"]}, aspirin_data,
                           steps=_KILL_SPEC_STEPS, name="killed")
    runs_dir = tmp_path / "killed" / "runs"
    log = open(tmp_path / "first_session.log", "w")
    first = subprocess.Popen(
        [sys.executable, "-m", "openmlff.cli", "campaign", "run", str(spec_path), "--workers", "2",
         "--status-interval", "2"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + 240
        while not _one_finished_and_one_midway(runs_dir):
            assert first.poll() is None, (tmp_path / "first_session.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the campaign never had a finished and a half-done run at once"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the executor and its worker processes
        first.wait()
        log.close()

    folder = CampaignDirectory(tmp_path / "killed")
    spec = folder.spec()
    _wait_until_no_run_is_locked(folder, spec)  # the killed workers' exits release their run locks
    before = {}
    for run in spec.expand():
        run_dir = folder.run_dir(run.run_id)
        summary = run_dir / "summary.json"
        checkpoint = run_dir / "checkpoint.json"
        before[run.run_id] = {
            "state": run_state(run_dir, spec.steps),
            "summary": (summary.read_bytes(), summary.stat().st_mtime_ns) if summary.exists() else None,
            "run_json": (run_dir / "run.json").read_bytes() if (run_dir / "run.json").exists() else None,
            "checkpoint_step": json.loads(checkpoint.read_text())["step"] if checkpoint.exists() else None,
            "starts": sum(a["event"] == "start" for a in read_attempts(run_dir))}
    states = [b["state"] for b in before.values()]
    assert FINISHED_COLLAPSED in states and INTERRUPTED in states, states
    status = campaign_status(folder.directory)
    assert status["counts"][INTERRUPTED] >= 1 and 0 < status["progress"] < 1
    assert "interrupted" in format_status(status)

    result = run_campaign(folder.directory, scheduler_address=dask_cluster.scheduler_address, progress=False)
    assert result.submitted == sum(b["summary"] is None for b in before.values())
    assert result.status["counts"][FINISHED_STABLE] == 4 and result.status["counts"][FINISHED_COLLAPSED] == 4
    resumed_from_checkpoint = 0
    for run_id, b in before.items():
        run_dir = folder.run_dir(run_id)
        summary_path = run_dir / "summary.json"
        if b["summary"] is not None:  # finished before the kill: not touched again
            assert (summary_path.read_bytes(), summary_path.stat().st_mtime_ns) == b["summary"]
            check_run_done_once(run_dir)
        elif b["state"] == INTERRUPTED:  # started before the kill: resumed where its checkpoint was, run.json kept
            summary = check_run_done_once(run_dir, starts=b["starts"] + 1, new_runs=b["starts"])
            assert (run_dir / "run.json").read_bytes() == b["run_json"]
            last = [a for a in read_attempts(run_dir) if a["event"] == "start"][-1]
            assert last["resume_from_step"] == b["checkpoint_step"] == summary["resumed_from_step"]
            resumed_from_checkpoint += b["checkpoint_step"] is not None and b["checkpoint_step"] > 0
            if run_id.startswith("stable"):
                assert summary["steps_completed"] == _KILL_SPEC_STEPS
        else:  # not begun (or killed before run.json): started from scratch once
            assert b["state"] == PENDING
            check_run_done_once(run_dir, starts=b["starts"] + 1, new_runs=b["starts"] + 1)
    assert resumed_from_checkpoint >= 1


def _wait_until_no_run_is_locked(folder: CampaignDirectory, spec, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(run_state(folder.run_dir(r.run_id), spec.steps) == RUNNING for r in spec.expand()):
        assert time.monotonic() < deadline, "a killed worker still holds a run lock"
        time.sleep(0.05)


def _one_finished_and_one_midway(runs_dir: Path) -> bool:
    """At least one run has its summary and another a committed checkpoint past step 0 but no summary."""
    if not runs_dir.is_dir():
        return False
    finished = midway = False
    for run_dir in runs_dir.iterdir():
        if (run_dir / "summary.json").exists():
            finished = True
        elif (run_dir / "checkpoint.json").exists():
            try:
                midway |= json.loads((run_dir / "checkpoint.json").read_text())["step"] > 0
            except (json.JSONDecodeError, KeyError):
                pass
    return finished and midway


def test_dask_campaign_does_every_run_once(tmp_path, models, aspirin_data, dask_cluster, capsys):
    spec_path = write_spec(tmp_path, models, aspirin_data, name="on-dask")
    result = run_campaign(spec_path, scheduler_address=dask_cluster.scheduler_address, progress=False)
    assert result.submitted == 8 and result.outcomes == {FINISHED_STABLE: 4, FINISHED_COLLAPSED: 4}
    folder = CampaignDirectory(result.directory)
    assert folder.read()["sessions"][-1]["executor"] == "dask"
    assert folder.read()["sessions"][-1]["scheduler"] == dask_cluster.scheduler_address
    hosts_pids = set()
    for run in folder.spec().expand():
        check_run_done_once(folder.run_dir(run.run_id))
        hosts_pids |= {a["pid"] for a in read_attempts(folder.run_dir(run.run_id))}
    assert os.getpid() not in hosts_pids  # the runs ran in the cluster's worker processes

    assert cli_main(["campaign", "status", str(result.directory), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["counts"][FINISHED_STABLE] == 4 and shown["progress"] == 1.0


def test_failed_runs_are_recorded_and_retried_only_when_asked(tmp_path, models, aspirin_data, dask_cluster):
    """A missing model, or one of other atoms than the starts, is refused before any run starts; a run that fails
    (a frame that does not exist) is recorded with its traceback, left alone, and run again only with retry_failed."""
    data = tmp_path / "data.npz"
    data.write_bytes(Path(aspirin_data).read_bytes())
    swapped = tmp_path / "swapped.pt"
    spec_path = write_spec(tmp_path, {"good": models["stable"], "swapped": swapped}, data,
                           frames=(3, 1000), seeds=(0,), steps=100, name="failing")
    address = dask_cluster.scheduler_address
    with pytest.raises(CampaignSpecError, match="field 'models.swapped'.*swapped.pt: no such model file"):
        run_campaign(spec_path, scheduler_address=address, progress=False)
    assert not (tmp_path / "failing").exists()  # refused before anything was written
    z, positions = _aspirin_frame0(data)
    write_toy_model(swapped, z[::-1], positions[::-1])  # a readable model of the atoms in another order
    with pytest.raises(CampaignSpecError, match="field 'models.swapped'.*swapped.pt: the model's atomic numbers"):
        run_campaign(spec_path, scheduler_address=address, progress=False)
    assert not (tmp_path / "failing").exists()
    write_toy_model(swapped, z, positions)  # the model is fixed
    result = run_campaign(spec_path, scheduler_address=address, progress=False)
    assert result.outcomes == {FINISHED_STABLE: 2, FAILED: 2}
    folder = CampaignDirectory(result.directory)
    errors = {r["run_id"]: r["error"] for r in result.status["runs"] if r["state"] == FAILED}
    assert "frame 1000 does not exist (the dataset has 100 frames" in errors["good__frame1000__T500__s0"]
    error = json.loads((folder.run_dir("swapped__frame1000__T500__s0") / "error.json").read_text())
    assert "Traceback" in error["traceback"] and error["error_type"]
    check_run_done_once(folder.run_dir("good__frame0003__T500__s0"))

    assert run_campaign(spec_path, scheduler_address=address, progress=False).submitted == 0  # failed: left alone
    with np.load(data) as f:  # the data are fixed: the same 100 frames eleven times, so frame 1000 exists
        arrays = {k: (f[k] if f[k].ndim < 2 and k != "energies" else np.concatenate([f[k]] * 11)) for k in f.files}
    np.savez(data, **arrays)
    retried = run_campaign(spec_path, scheduler_address=address, retry_failed=True, progress=False)
    assert retried.submitted == 2 and retried.outcomes == {FINISHED_STABLE: 2}
    assert not (folder.run_dir("swapped__frame1000__T500__s0") / "error.json").exists()
    check_run_done_once(folder.run_dir("swapped__frame1000__T500__s0"), starts=2, new_runs=2)  # failed, then done
    assert run_state(folder.run_dir("good__frame0003__T500__s0")) == FINISHED_STABLE


def _aspirin_frame0(path: Path):
    data = load_dataset(path)
    return data.z, data.R[0]


def test_structure_starts_use_their_topology_and_reference(tmp_path, models, dask_cluster):
    spec_path = tmp_path / "structures.toml"
    spec_path.write_text(f"""
name = "from-structures"
temperatures_K = [300]
reference = "start"
[models]
stable = "{models['stable']}"
[starts]
structures = {{ builtin = "aspirin" }}
[md]
steps = 60
report_interval_steps = {REPORT_INTERVAL}
platform = "Reference"
""")
    result = run_campaign(spec_path, scheduler_address=dask_cluster.scheduler_address, progress=False)
    assert result.outcomes == {FINISHED_STABLE: 1}
    run_dir = CampaignDirectory(result.directory).run_dir("stable__builtin__T300__s0")
    check_run_done_once(run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["reference_positions"] is None  # the starting structure is the bond reference
    assert mdtraj.load(str(run_dir / "topology.pdb")).topology.residue(0).name == "AIN"  # the built-in topology


def hold_lock(folder):
    """A process holding openmlff's lock of `folder` (as a task of a killed campaign still going would) until its
    stdin closes."""
    code = ("import sys; from openmlff.core.locks import FolderLock; lock = FolderLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_held_by_another_process_is_refused_at_once(tmp_path, models, aspirin_data):
    """A run's lock held by another process makes a second execution return at once, naming the holder, with
    nothing started and no error recorded; once the holder is gone the run is done: never two writers."""
    spec = CampaignSpec.from_file(write_spec(tmp_path, {"stable": models["stable"]}, aspirin_data, frames=(3,),
                                             seeds=(0,), steps=60))
    run = spec.expand()[0]
    run_dir = tmp_path / "runs" / run.run_id
    holder = hold_lock(run_dir)
    try:
        assert run_state(run_dir) == RUNNING
        started = time.monotonic()
        outcome = execute_run(run, str(run_dir), 1)
        assert time.monotonic() - started < 10
        assert outcome["state"] == RUNNING and f"PID {holder.pid}" in outcome["error"]
        assert read_attempts(run_dir) == [] and not (run_dir / "error.json").exists()
    finally:
        holder.stdin.close()
        holder.wait()
    outcome = execute_run(run, str(run_dir), 1)  # the holder is dead: its lock is taken over
    assert outcome["state"] == FINISHED_STABLE
    check_run_done_once(run_dir)
