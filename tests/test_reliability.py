"""Safe to hand a checkpoint, safe on a busy node: crafted checkpoints never run, one writer per run directory,
workers die with their parent, user errors are one line naming the file, a full disk leaves a resumable run."""

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
import torch

from openmlff.core.errors import InputError
from openmlff.training.checkpoint import CheckpointError, read_checkpoint

TINY = '{"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}'
ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}


def openmlff(*args, check=False, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "openmlff", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"openmlff {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def one_line_error(proc, *needles):
    """The command failed with one line on stderr (no traceback) that holds every needle."""
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


class Payload:
    """What an attacker puts in a checkpoint: unpickling it runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, test_data):
    """A tiny ET trained for one epoch through the CLI, exported, and a crafted copy of its checkpoint."""
    root = tmp_path_factory.mktemp("reliability")
    data = test_data / "datasets" / "rmd17_aspirin_100.npz"
    openmlff("train", "--data", data, "--model", "et", "--out", root / "train", "--max-epochs", 1, "--n-train", 20,
             "--n-val", 5, "--n-test", 10, "--batch-size", 5, "--threads", 1, "--hyperparameters", TINY, "--quiet",
             check=True)
    openmlff("export", root / "train" / "model.ckpt", "--out", root / "model.pt", check=True)
    return root, data


def crafted_checkpoint(path: Path, genuine: Path, marker: Path) -> Path:
    """A real checkpoint with one extra entry whose unpickling would run code."""
    state = dict(read_checkpoint(genuine).state, notes=Payload(marker))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_the_payload_runs_under_a_plain_unpickler(trained, tmp_path):
    """The control: the crafted file is dangerous, so the refusals below mean something."""
    root, _ = trained
    marker = tmp_path / "ran"
    bad = crafted_checkpoint(tmp_path / "evil.ckpt", root / "train" / "model.ckpt", marker)
    torch.load(bad, weights_only=False)  # noqa: S614 - deliberately unsafe, to prove the payload is live
    assert marker.exists()


@pytest.mark.slow
def test_crafted_checkpoint_is_refused_by_export_train_and_metrics(trained, tmp_path):
    root, data = trained
    marker = tmp_path / "ran"
    bad = crafted_checkpoint(tmp_path / "evil" / "model.ckpt", root / "train" / "model.ckpt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(bad)
    one_line_error(openmlff("export", bad, "--out", tmp_path / "m.pt"), bad, "refused")
    one_line_error(openmlff("train", "--data", data, "--out", bad.parent, "--max-epochs", 2, "--n-train", 20,
                            "--n-val", 5, "--n-test", 10, "--hyperparameters", TINY, "--quiet"), bad, "refused")
    one_line_error(openmlff("metrics", "--model", root / "model.pt", "--data", data, "--out", tmp_path / "m.json",
                            "--frames", "test", "--checkpoint", bad), bad, "refused")
    assert not marker.exists()


def test_crafted_checkpoint_is_refused_by_a_campaign_spec(trained, tmp_path):
    root, data = trained
    marker = tmp_path / "ran"
    bad = crafted_checkpoint(tmp_path / "evil.ckpt", root / "train" / "model.ckpt", marker)
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps({"models": {"et": str(root / "model.pt")},
                                "starts": {"data": str(data), "frames_from_split": "test", "checkpoint": str(bad)},
                                "md": {"steps": 20}}))
    one_line_error(openmlff("campaign", "run", spec, "--quiet"), spec, "starts.checkpoint", bad, "refused")
    assert not marker.exists() and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_analyze_does_not_follow_a_crafted_checkpoint_named_in_the_model(trained, tmp_path):
    """The exported model names its training checkpoint; analyze reads the split from it, so replace it."""
    root, data = trained
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    model = tmp_path / "model.pt"
    (train_dir / "model.ckpt").write_bytes((root / "train" / "model.ckpt").read_bytes())
    openmlff("export", train_dir / "model.ckpt", "--out", model, check=True)
    openmlff("simulate", "--model", model, "--data", data, "--frame", 3, "--temperature", 300, "--timestep", 0.5,
             "--steps", 20, "--report-interval", 10, "--out", tmp_path / "run", "--quiet", check=True)
    marker = tmp_path / "ran"
    crafted_checkpoint(train_dir / "model.ckpt", root / "train" / "model.ckpt", marker)
    proc = openmlff("analyze", tmp_path / "run", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    analysis = json.loads(next((tmp_path / "run" / "analysis").glob("*.json")).read_text())
    assert "recomputed" in json.dumps(analysis)  # the split came from the metadata, not the crafted file


def test_checkpoints_of_the_previous_version_still_load(trained, tmp_path):
    """openmlff 0.1 wrote numpy arrays and torch's TorchVersion into model.ckpt: read, converted to plain types."""
    root, _ = trained
    state = dict(read_checkpoint(root / "train" / "model.ckpt").state)
    state["element_energy_ev"] = np.asarray(state["element_energy_ev"])
    state["versions"] = dict(state["versions"], torch=torch.__version__)
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    again = read_checkpoint(old)
    assert isinstance(again.state["element_energy_ev"], list) and isinstance(again.state["versions"]["torch"], str)
    assert again.split.train.size == 20
    proc = openmlff("export", old, "--out", tmp_path / "old.pt")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_bad_files_are_one_line_errors_naming_the_file(trained, tmp_path):
    root, data = trained
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    one_line_error(openmlff("data", "info", empty), empty)
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    one_line_error(openmlff("data", "info", folder), folder, "folder")
    one_line_error(openmlff("export", root / "train", "--out", tmp_path / "m.pt"), root / "train", "folder")
    not_a_dir = tmp_path / "plain_file"
    not_a_dir.write_text("x")
    one_line_error(openmlff("simulate", "--model", root / "model.pt", "--data", data, "--temperature", 300,
                            "--timestep", 0.5, "--steps", 10, "--out", not_a_dir), not_a_dir)
    one_line_error(openmlff("train", "--data", data, "--out", not_a_dir / "sub", "--max-epochs", 1), not_a_dir)
    no_split = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, no_split)
    one_line_error(openmlff("metrics", "--model", root / "model.pt", "--data", data, "--out", tmp_path / "m.json",
                            "--frames", "test", "--checkpoint", no_split), no_split, "checkpoint")
    one_line_error(openmlff("metrics", "--model", root / "model.pt", "--data", tmp_path / "missing.npz",
                            "--out", tmp_path / "m.json"), tmp_path / "missing.npz")


def test_extxyz_frame_with_fewer_atoms_than_its_header_names_frame_and_counts(test_data, tmp_path):
    lines = (test_data / "datasets" / "md17_aspirin_15.extxyz").read_text().splitlines(keepends=True)
    n = int(lines[0])
    frame = n + 2
    broken = lines[: 2 * frame + 2 + n - 1] + lines[3 * frame:]  # frame 2 loses its last atom line
    path = tmp_path / "broken.extxyz"
    path.write_text("".join(broken))
    line = one_line_error(openmlff("data", "info", path), path, "frame 2")
    assert "21" in line and "20" in line


@pytest.mark.slow
def test_second_simulate_on_one_directory_is_refused_at_once_naming_the_holder(toy_model, tmp_path):
    out = tmp_path / "run"
    args = ["simulate", "--model", toy_model, "--structure", "aspirin", "--temperature", 300,
            "--timestep", 0.5, "--steps", 100000, "--report-interval", 10, "--out", out, "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "openmlff", *map(str, args)], env=ENV, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 120
        while not (out / "state.csv").is_file() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "state.csv").is_file()
        started = time.monotonic()
        second = openmlff(*args)
        assert time.monotonic() - started < 30
        one_line_error(second, out, f"PID {first.pid}", "another process")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed writer's lock is taken over; the run resumes from its checkpoint and finishes
    rerun = openmlff(*args[:-7], "--steps", 200, "--report-interval", 10, "--out", out, "--quiet")
    assert rerun.returncode == 1  # steps may only grow: proves the resume check ran under the lock
    assert "steps may only grow" in rerun.stderr


@pytest.mark.slow
def test_a_killed_campaign_leaves_no_worker_running(toy_model, tmp_path):
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps({"models": {"toy": str(toy_model)}, "starts": {"structures": {"a": "aspirin", "b": "aspirin"}},
                                "md": {"steps": 5000000, "report_interval_steps": 1000}}))
    campaign = subprocess.Popen([sys.executable, "-m", "openmlff", "campaign", "run", str(spec), "--workers", "2",
                                 "--quiet"], env=ENV, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    attempts = tmp_path / "c" / "runs"
    deadline = time.time() + 120
    pids: set[int] = set()
    while len(pids) < 2 and time.time() < deadline:
        for f in attempts.glob("*/attempts.jsonl"):  # a run has started MD once its run.json is written
            if (f.parent / "run.json").is_file():
                pids |= {json.loads(line)["pid"] for line in f.read_text().splitlines() if line.strip()}
        time.sleep(0.2)
    assert len(pids) == 2, "both runs should have started"
    campaign.send_signal(signal.SIGKILL)
    campaign.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids), "worker processes outlived the killed campaign"
    status = json.loads(openmlff("campaign", "status", tmp_path / "c", "--json", check=True).stdout)
    assert status["counts"]["interrupted"] == 2  # nobody holds the runs: the next campaign run resumes them


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_campaign_spec_naming_a_missing_model_is_refused_before_any_run(trained, tmp_path):
    root, data = trained
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps({"models": {"et": str(root / "model.pt"), "gone": str(tmp_path / "gone.pt")},
                                "starts": {"data": str(data), "frames": [1]}, "md": {"steps": 20}}))
    one_line_error(openmlff("campaign", "run", spec, "--quiet"), spec, "models.gone", tmp_path / "gone.pt")
    assert not (tmp_path / "c").exists()
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    spec.write_text(json.dumps({"models": {"junk": str(junk)}, "starts": {"data": str(data), "frames": [1]}}))
    one_line_error(openmlff("campaign", "run", spec, "--quiet"), spec, "models.junk", junk)


def test_campaign_runs_checkpoint_like_simulate():
    from openmlff.campaign.spec import md_setting
    from openmlff.cli import build_parser
    from openmlff.md import SimulationConfig

    args = build_parser().parse_args(["simulate", "--model", "m.pt", "--structure", "aspirin", "--temperature", "300",
                                      "--timestep", "0.5", "--steps", "10", "--out", "x"])
    assert args.checkpoint_interval_steps == SimulationConfig().checkpoint_interval_steps == md_setting({}, "checkpoint_interval_steps")
    assert SimulationConfig().checkpoint_interval_s <= 300  # also by wall clock: at most a few minutes lost


def test_wall_clock_checkpoints_are_taken_between_step_checkpoints(toy_model, aspirin, tmp_path):
    from openmlff.md import SimulationConfig, run_simulation

    cfg = SimulationConfig(temperature_K=300, steps=60, report_interval_steps=10, monitor_interval_steps=5,
                           checkpoint_interval_steps=10_000, checkpoint_interval_s=1e-9, torch_threads=1)
    steps = []
    run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "run", cfg, progress=False,
                   on_report=lambda r: steps.append(json.loads((tmp_path / "run" / "checkpoint.json").read_text())["step"]
                                                    if (tmp_path / "run" / "checkpoint.json").is_file() else None))
    assert steps[1:] == [5, 15, 25, 35, 45, 55]  # a checkpoint at every check, by the clock, not only at step 60


# --- a full disk ----------------------------------------------------------------------------------------

def _run_on(folder: Path, model, steps: int):
    return openmlff("simulate", "--model", model, "--structure", "aspirin", "--temperature", 300,
                    "--timestep", 0.5, "--steps", steps, "--report-interval", 10, "--checkpoint-interval", 50,
                    "--out", folder / "run", "--quiet")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (root may mount one; elsewhere this test is skipped, the fault-injection one still runs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); test_full_disk_by_fault_injection covers the same path")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_one_line_and_it_resumes(toy_model, small_tmpfs, tmp_path):
    reference = _run_on(tmp_path, toy_model, 400)  # the same run on a roomy disk
    assert reference.returncode == 0, reference.stderr
    first = _run_on(small_tmpfs, toy_model, 400)
    assert first.returncode == 0, first.stderr  # room for it
    filler = small_tmpfs / "filler"
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 6000))  # leaves room for a few frames, not for a checkpoint
    full = _run_on(small_tmpfs, toy_model, 4000)
    one_line_error(full, "No space left on device", small_tmpfs / "run")
    checkpoint = json.loads((small_tmpfs / "run" / "checkpoint.json").read_text())
    assert checkpoint["step"] >= 400
    filler.unlink()
    again = _run_on(small_tmpfs, toy_model, 4000)
    assert again.returncode == 0, again.stderr
    summary = json.loads((small_tmpfs / "run" / "summary.json").read_text())
    assert summary["steps_completed"] == 4000 and summary["frames_written"] == 401


def test_full_disk_by_fault_injection_keeps_the_last_checkpoint_resumable(toy_model, aspirin, tmp_path, monkeypatch):
    """The checkpoint write at step 80 fails with ENOSPC: the run stops with that OSError, naming the file;
    the first checkpoint stays committed and a second call finishes the run bit-identically to one uninterrupted."""
    import errno

    from openmlff.md import SimulationConfig, reporters, run_simulation

    start = (toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom)
    cfg = SimulationConfig(temperature_K=300, steps=120, report_interval_steps=10, checkpoint_interval_steps=40,
                           torch_threads=1)
    straight = run_simulation(*start, tmp_path / "straight", cfg, progress=False)
    real_write = reporters.atomic_write_bytes
    calls = []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 3:  # checkpoints at steps 0 and 40 are written, the one at step 80 fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    monkeypatch.setattr(reporters, "atomic_write_bytes", full_disk)
    with pytest.raises(OSError) as info:
        run_simulation(*start, tmp_path / "run", cfg, progress=False)
    assert info.value.errno == errno.ENOSPC and "checkpoint_step" in info.value.filename
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["step"] == 40
    assert not list((tmp_path / "run").glob(".*.tmp"))  # no half-written file left
    monkeypatch.setattr(reporters, "atomic_write_bytes", real_write)
    resumed = run_simulation(*start, tmp_path / "run", cfg, progress=False)
    assert resumed["resumed_from_step"] == 40 and resumed["steps_completed"] == straight["steps_completed"] == 120
    from openmlff.analysis.run_files import read_trajectory

    a = read_trajectory(tmp_path / "straight" / "trajectory.dcd")
    b = read_trajectory(tmp_path / "run" / "trajectory.dcd")
    np.testing.assert_array_equal(a.xyz, b.xyz)


# --- issue 31: the defects the hostile-user trial found, one test each ---------------------------------------

def test_metrics_on_data_that_is_not_the_checkpoints_is_one_line(trained, test_data, tmp_path):
    root, _ = trained
    other = test_data / "datasets" / "md17_aspirin_15.extxyz"
    line = one_line_error(openmlff("metrics", "--model", root / "model.pt", "--data", other, "--energy-unit-in-file",
                                   "kcal/mol", "--out", tmp_path / "m.json", "--frames", "test", "--checkpoint",
                                   root / "train" / "model.ckpt"),
                          other, "not the data the split in")
    assert "model.ckpt" in line and not (tmp_path / "m.json").exists()


def test_an_empty_frame_range_names_the_option(trained, tmp_path):
    root, data = trained
    one_line_error(openmlff("metrics", "--model", root / "model.pt", "--data", data, "--out", tmp_path / "m.json",
                            "--frames", "50:40"), "--frames 50:40", "selects none of the 100 frames")


def test_a_dataset_of_zero_frames_is_one_line(tmp_path, test_data):
    with np.load(test_data / "datasets" / "rmd17_aspirin_100.npz") as f:
        arrays = {k: (f[k][:0] if k != "nuclear_charges" else f[k]) for k in f.files}
    empty = tmp_path / "zero.npz"
    np.savez(empty, **arrays)
    one_line_error(openmlff("data", "info", empty), empty, "'coords' holds no frames")


def test_a_frame_with_the_atoms_in_another_order_names_the_first_differing_atom(tmp_path, test_data):
    lines = (test_data / "datasets" / "md17_aspirin_15.extxyz").read_text().splitlines(keepends=True)
    n = int(lines[0])
    a = n + 4 + 6  # frame 1: atoms 6 (C) and 7 (O) swapped
    path = tmp_path / "swapped.extxyz"
    path.write_text("".join(lines[:a] + [lines[a + 1], lines[a]] + lines[a + 2:]))
    one_line_error(openmlff("data", "info", path), path, "frame 1 has atom 6 O where frame 0 has C")


@pytest.mark.slow
def test_a_model_file_with_openmlff_metadata_around_another_module_is_refused_before_any_run(trained, tmp_path):
    root, data = trained
    extra = {"openmlff.json": ""}
    torch.jit.load(str(root / "model.pt"), _extra_files=extra)

    class NoEnergies(torch.nn.Module):
        def forward(self, positions: torch.Tensor) -> torch.Tensor:
            return positions.sum()

    class WrongShape(torch.nn.Module):
        def forward(self, positions: torch.Tensor) -> torch.Tensor:
            return positions.sum(-1)

        @torch.jit.export
        def energies(self, positions: torch.Tensor) -> torch.Tensor:
            return positions.sum(-1)

    for name, module, needle in (("none.pt", NoEnergies(), "no batched `energies`"),
                                 ("shape.pt", WrongShape(), "must give shape (1,)")):
        path = tmp_path / name
        torch.jit.save(torch.jit.script(module), str(path), _extra_files=extra)
        one_line_error(openmlff("metrics", "--model", path, "--data", data, "--out", tmp_path / "m.json"), path,
                       needle)
        one_line_error(openmlff("simulate", "--model", path, "--data", data, "--frame", 0, "--temperature", 300,
                                "--timestep", 0.5, "--steps", 10, "--out", tmp_path / "run"), path, needle)
        assert not (tmp_path / "run").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("args, needle", [
    (["--timestep", "inf"], "--timestep-fs/--timestep: expected a finite number, got 'inf'"),
    (["--temperature", "nan"], "--temperature-K/--temperature: expected a finite number, got 'nan'"),
    (["--friction", "-inf"], "--friction-per-ps/--friction: expected a finite number, got '-inf'"),
])
def test_non_finite_options_are_usage_errors_naming_the_flag(toy_model, tmp_path, args, needle):
    settings = {"--timestep": "0.5", "--temperature": "300", **dict(zip(args[::2], args[1::2]))}
    proc = openmlff("simulate", "--model", toy_model, "--structure", "aspirin", "--steps", 10, "--out",
                    tmp_path / "run", *[f"{k}={v}" for k, v in settings.items()])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, field", [
    ({"temperatures_K": [float("inf")]}, "temperatures_K"),
    ({"md": {"timestep_fs": float("nan")}}, "md.timestep_fs"),
    ({"md": {"length_ps": 1e-9}}, "md.length_ps"),
    ({"md": {"length_ps": float("inf")}}, "md.length_ps"),
])
def test_non_finite_spec_numbers_and_lengths_under_one_step_are_refused_naming_the_field(toy_model, tmp_path, change,
                                                                                         field):
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps({"models": {"toy": str(toy_model)}, "starts": {"structures": {"a": "aspirin"}},
                                **change}))  # json writes Infinity and NaN, which Python's reader takes
    one_line_error(openmlff("campaign", "run", spec, "--quiet"), spec, f"field '{field}'")
    assert not (tmp_path / "c").exists()


def test_configs_refuse_non_finite_numbers_naming_the_field():
    from openmlff.core.config import ConfigError
    from openmlff.improve.active import ActiveLearningConfig
    from openmlff.md import SimulationConfig
    from openmlff.training import TrainingConfig
    from openmlff.training.losses import check_loss

    for make, name in ((lambda: SimulationConfig(temperature_K=float("inf")), "temperature_K"),
                       (lambda: SimulationConfig(timestep_fs=float("nan")), "timestep_fs"),
                       (lambda: TrainingConfig(learning_rate=float("nan")), "learning_rate"),
                       (lambda: ActiveLearningConfig(method="gfn2-xtb", temperature_K=float("inf")), "temperature_K")):
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.field == name and "finite" in str(info.value)
    with pytest.raises(InputError, match="option 'max_weight' must be a finite number"):
        check_loss("max_error", {"max_weight": float("inf")})
    with pytest.raises(InputError, match=r"rounds must be >= 0 \(0: the first committee alone\)"):
        ActiveLearningConfig(method="gfn2-xtb", rounds=-1)

