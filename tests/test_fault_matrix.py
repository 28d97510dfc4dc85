"""The fault matrix: every command that writes, crossed with the faults a long unattended job meets.

The README's promise ("When things go wrong") for each cell: the same result as an uninterrupted run, or one
line on stderr naming the file or field with a non-zero exit, and nothing already written lost.

  commands  data generate, data label, train, finetune, recruit, export, metrics, simulate (lone, --replicas,
            --solvate), campaign run, correlate, active-learn  (COMMANDS below)
  faults    kill     SIGKILL at a random moment (seeded per command) once it has started writing; the same command
                     again gives the uninterrupted run's result
            sigint   Ctrl-C (SIGINT to the process group) at such a moment: one line, exit 130; the same command
                     again gives the uninterrupted run's result
            full     the output on a full disk (a real tmpfs): one line naming a file on it, exit 1, nothing written
            fills    the disk fills mid-run (a tmpfs of half the output's size): one line naming the file, exit 1;
                     with room again the same command gives the uninterrupted run's result
            bad:KIND each input the command reads, made empty, truncated, of the wrong format, of other atoms, with
                     a non-finite value, not UTF-8: one line naming that file, exit 1, no output written
            collapse a copy collapses at step 0 (MD commands): the run ends "collapsed at 0.0 ps", exit 0, and the
                     same command again returns the same summary

A tmpfs needs root (mount); where it cannot be mounted (or with OPENMLFF_TEST_NO_MOUNT=1) the `full` cells run
in-process with every file write under OUT made to fail with ENOSPC (fault injection through openmlff.core.atomic_io)
and the `fills` cells are skipped. Cells that cannot
hold (an input kind a command does not read) are not in the matrix; BAD_INPUTS_NOT_APPLICABLE says why, and so does
the README. The whole matrix runs in CI (`bash tests/run.sh`); `bash tests/run.sh --fast` runs a sample (marker
`fast`: one fault of each kind, one bad input of each kind).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

TINY = '{"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}'
ENV = {"OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}


# --- the workspace every cell reads (inputs are never written by a cell) ----------------------------------------

@dataclass
class Workspace:
    root: Path
    data: Path          # 100 rMD17 aspirin frames
    frames: Path        # 4 of them, for labelling
    xtb: Path           # 30 of them relabelled with GFN2-xTB (active learning labels at that level)
    checkpoint: Path    # a tiny ET trained 1 epoch on `data`
    model: Path         # its export
    toy: Path           # a harmonic aspirin model (stable at any temperature)
    peptide_toy: Path   # the same for Ac-Ala3-NHMe (solvated runs need a peptide: amber14 couples it to the water)
    campaign: Path      # a finished campaign of `model` (for correlate)
    spec: Path          # a campaign spec of `toy`, 2 runs
    collapse_spec: Path  # the same with a 2 Å non-bonded limit: every run collapses at step 0
    bad: dict = field(default_factory=dict)  # slot -> a bad file given in its place (a bad-input cell)

    def given(self, slot: str, default):
        return self.bad.get(slot, default)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, test_data, toy_model) -> Workspace:
    import torch

    from openmlff.campaign import run_campaign
    from openmlff.data import load_dataset, save_dataset
    from openmlff.model_file.writer import export_checkpoint
    from openmlff.reference import label_conformations
    from openmlff.structures import load_structure
    from openmlff.training import TrainingConfig, train
    from toy_models import write_toy_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("faults")
    data = root / "data.npz"
    shutil.copy(test_data / "datasets" / "rmd17_aspirin_100.npz", data)
    dataset = load_dataset(data)
    frames = save_dataset(dataset.subset(np.arange(4)), root / "frames.npz")
    xtb = label_conformations("gfn2-xtb", dataset.z, dataset.R[:30], root / "xtb_chunks", n_workers=1, progress=False,
                              name="aspirin_xtb")
    xtb_path = save_dataset(xtb.dataset, root / "xtb.npz")
    config = TrainingConfig(hyperparameters=json.loads(TINY), n_train=20, n_val=5, n_test=10, batch_size=5,
                            max_epochs=1, torch_threads=1)
    result = train(dataset, root / "train", config, progress=False)
    model = export_checkpoint(result.checkpoint, root / "model.pt")
    toy = shutil.copy(toy_model, root / "toy.pt")
    peptide = load_structure("ac-ala3-nhme")
    peptide_toy = write_toy_model(root / "peptide_toy.pt", peptide.atomic_numbers, peptide.positions_angstrom)
    md = {"steps": 100, "report_interval_steps": 50, "platform": "CPU"}
    campaign_spec = root / "quality.json"
    campaign_spec.write_text(json.dumps({"models": {"et": str(model)}, "temperatures_K": [500], "md": md,
                                         "starts": {"data": str(data), "frames_from_split": "test",
                                                    "checkpoint": str(result.checkpoint), "count": 2}}))
    run_campaign(campaign_spec, out=root / "campaign", n_workers=1, progress=False)
    spec = root / "toy.json"
    md = {"steps": 3000, "report_interval_steps": 50, "checkpoint_interval_steps": 500, "replicas_per_context": 1}
    spec.write_text(json.dumps({"models": {"toy": str(toy)}, "temperatures_K": [300], "md": md,
                                "starts": {"structures": {"a": "aspirin", "b": "aspirin"}}}))
    collapse_spec = root / "collapse.json"
    collapse_md = {k: v for k, v in md.items() if k != "replicas_per_context"}  # aspirin: replica batches by default
    collapse_spec.write_text(json.dumps({"models": {"toy": str(toy)}, "temperatures_K": [300],
                                         "md": {**collapse_md, "min_nonbonded_distance_angstrom": 2.0},
                                         "starts": {"structures": {"a": "aspirin", "b": "aspirin"}}}))
    return Workspace(root, data, frames, xtb_path, result.checkpoint, model, toy, peptide_toy, root / "campaign",
                     spec, collapse_spec)


# --- what each command writes, reads, and how its results compare -----------------------------------------------

def _arrays(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files if f[k].dtype != object and k != "openmlff_meta"}


def _weights(checkpoint: Path) -> dict:
    from openmlff.training.checkpoint import read_checkpoint

    state = read_checkpoint(checkpoint).state
    return {k: v.numpy() for k, v in state["best_state"].items()}


def _trajectories(folder: Path) -> dict:
    """Every trajectory under `folder` (relative path -> coordinates) with its run's steps completed."""
    from openmlff.analysis.run_files import read_trajectory

    out = {}
    for summary in sorted(folder.rglob("summary.json")):
        run = summary.parent
        doc = json.loads(summary.read_text())
        traj = run / doc["trajectory"]
        out[str(run.relative_to(folder))] = (doc["steps_completed"], doc["stable"], read_trajectory(traj).xyz)
    return out


def _without(doc, keys=("created", "finished_at", "wall_time_s", "setup_time_s", "ns_per_day", "time_s",
                        "elapsed_s", "at", "generated", "versions")):
    """A JSON document without its clock readings (keys in `keys`, or naming wall or CPU time)."""
    if isinstance(doc, dict):
        return {k: _without(v, keys) for k, v in doc.items() if k not in keys and "wall" not in k and "cpu_s" not in k}
    if isinstance(doc, list):
        return [_without(v, keys) for v in doc]
    return doc


def _json(path: Path):
    return _without(json.loads(path.read_text()))


def _model_energies(path: Path):
    from openmlff.potentials.exported import ExportedModel
    from openmlff.data import load_dataset

    frames = load_dataset(Path(__file__).parent / "data" / "datasets" / "rmd17_aspirin_100.npz").subset(np.arange(3))
    return ExportedModel(path).energies_and_forces(frames.z, frames.R)


def _training(folder: Path):
    return _weights(folder / "model.ckpt")


def _rounds(folder: Path):
    """The rounds of an active-learning loop, paths relative to its folder."""
    doc = json.loads((folder / "rounds.json").read_text().replace(str(folder), "AL"))
    return [_without(r, ("time_s", "elapsed_s", "wall_time_s", "ns_per_day", "seconds")) for r in doc["rounds"]]


@dataclass
class Command:
    """One command of the matrix: its arguments (writing under OUT; each input through ws.given(slot, default)), the
    comparable result of what it wrote, the inputs it reads (slot -> input kind), and, for MD commands, arguments
    that make every copy collapse at step 0."""

    name: str
    argv: Callable[[Workspace, Path], list]
    result: Callable[[Path], object]
    inputs: dict[str, str] = field(default_factory=dict)
    collapse: Callable[[Workspace, Path], list] | None = None


def _simulate(ws, out, *extra, steps=3000):
    return ["simulate", "--model", ws.given("model", ws.toy), "--structure", ws.given("structure", "aspirin"),
            "--temperature", 300, "--timestep", 0.5, "--steps", steps, "--report-interval", 50,
            "--checkpoint-interval", 500, "--out", out / "run", "--quiet", *extra]


def _solvated(ws, out, *extra, steps=200):
    return ["simulate", "--model", ws.given("model", ws.peptide_toy), "--structure", "ac-ala3-nhme", "--solvate", 0.6,
            "--nonbonded-cutoff-nm", 0.55, "--temperature", 300, "--timestep", 0.5, "--steps", steps,
            "--report-interval", 20, "--checkpoint-interval", 40, "--out", out / "run", "--quiet", *extra]


COMMANDS = [
    Command("data-generate",
            lambda ws, o: ["data", "generate", "--structure", ws.given("structure", "aspirin"), "--method", "gfn2-xtb",
                           "--temperature", 500, "--frames", 40, "--stride", 4, "--equilibration", 4, "--out",
                           o / "gen.npz", "--seed", 1, "--quiet"],
            lambda o: _arrays(o / "gen.npz"), {"structure": "structure"}),
    Command("data-label",
            lambda ws, o: ["data", "label", "--data", ws.given("data", ws.frames), "--method", "gfn2-xtb", "--out",
                           o / "lab.npz", "--chunk-size", 1, "--workers", 1, "--quiet"],
            lambda o: _arrays(o / "lab.npz"), {"data": "dataset"}),
    Command("train",
            lambda ws, o: ["train", "--data", ws.given("data", ws.data), "--model", "et", "--out", o / "train",
                           "--max-epochs", 4, "--n-train", 20, "--n-val", 5, "--n-test", 10, "--batch-size", 5,
                           "--threads", 1, "--hyperparameters", TINY, "--quiet"],
            lambda o: _weights(o / "train" / "model.ckpt"), {"data": "dataset"}),
    Command("finetune",
            lambda ws, o: ["finetune", ws.given("checkpoint", ws.checkpoint), "--reweight", "frames", "--out", o / "ft",
                           "--max-epochs", 3, "--quiet"],
            lambda o: _weights(o / "ft" / "model.ckpt"), {"checkpoint": "checkpoint"}),
    Command("recruit",
            lambda ws, o: ["recruit", ws.given("checkpoint", ws.checkpoint), "--pool", ws.given("data", ws.data),
                           "--count", 20, "--strategy", "frames", "--threads", 1, "--out", o / "picked.npz", "--quiet"],
            lambda o: _arrays(o / "picked.npz"), {"checkpoint": "checkpoint", "data": "dataset"}),
    Command("export",
            lambda ws, o: ["export", ws.given("checkpoint", ws.checkpoint), "--out", o / "model.pt"],
            lambda o: _model_energies(o / "model.pt"), {"checkpoint": "checkpoint"}),
    Command("metrics",
            lambda ws, o: ["metrics", "--model", ws.given("model", ws.model), "--data", ws.given("data", ws.data),
                           "--out", o / "m.json", "--frames", "test", "--checkpoint",
                           ws.given("checkpoint", ws.checkpoint), "--threads", 1],
            lambda o: _json(o / "m.json")["global"], {"model": "model", "data": "dataset", "checkpoint": "checkpoint"}),
    Command("simulate", lambda ws, o: _simulate(ws, o), _trajectories, {"model": "model", "structure": "structure"},
            collapse=lambda ws, o: _simulate(ws, o, "--min-distance", 2.0, steps=100)),
    Command("simulate-replicas", lambda ws, o: _simulate(ws, o, "--replicas", 2), _trajectories, {"model": "model"},
            collapse=lambda ws, o: _simulate(ws, o, "--replicas", 2, "--min-distance", 2.0, steps=100)),
    Command("simulate-solvated", lambda ws, o: _solvated(ws, o), _trajectories, {"model": "model"},
            collapse=lambda ws, o: _solvated(ws, o, "--min-distance", 2.0, steps=40)),
    Command("campaign",
            lambda ws, o: ["campaign", "run", ws.given("spec", ws.spec), "--out", o / "c", "--workers", 1, "--quiet"],
            lambda o: _trajectories(o / "c"), {"spec": "spec"},
            collapse=lambda ws, o: ["campaign", "run", ws.collapse_spec, "--out", o / "c", "--workers", 1, "--quiet"]),
    Command("correlate",
            lambda ws, o: ["correlate", ws.given("campaign", ws.campaign), "--out", o / "corr", "--bootstrap", 100,
                           "--n-clusters", 2, "--quiet"],
            lambda o: _json(o / "corr" / "correlation.json")["model_metrics"], {"campaign": "campaign"}),
    Command("active-learn",
            lambda ws, o: ["active-learn", "--data", ws.given("data", ws.xtb), "--method", "gfn2-xtb", "--rounds", 1,
                           "--out", o / "al", "--committee-size", 2, "--frames-per-round", 2, "--starts", 2,
                           "--md-steps", 40, "--continue-epochs", 1, "--keep-going", "--hyperparameters", TINY,
                           "--n-train", 16, "--n-val", 4, "--n-test", 6, "--batch-size", 4, "--max-epochs", 1,
                           "--quiet"],
            lambda o: _rounds(o / "al"), {"data": "dataset"}),
]
BY_NAME = {c.name: c for c in COMMANDS}


# --- running a command -------------------------------------------------------------------------------------------

def _argv(args) -> list[str]:
    return [sys.executable, "-m", "openmlff", *map(str, args)]


def run(args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(args), capture_output=True, text=True, env=ENV, timeout=timeout)


def start(args) -> subprocess.Popen:
    """The command in a process group of its own (as a shell job), with SIGINT at its default (Python's Ctrl-C)."""
    return subprocess.Popen(_argv(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def one_line(proc_or_rc, stderr: str | None = None, rc: int = 1) -> str:
    """The command ended with exit status `rc` and exactly one line on stderr (no traceback); that line."""
    code = proc_or_rc.returncode if stderr is None else proc_or_rc
    err = proc_or_rc.stderr if stderr is None else stderr
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == rc and "Traceback" not in err and len(lines) == 1, f"exit {code}, stderr:\n{err}"
    return lines[0]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def same(a, b, where="result") -> None:
    """Equal results: the same keys, the same numbers (arrays bit for bit: resumes are exact)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


@dataclass
class Reference:
    seconds: float
    result: object
    bytes: int


@pytest.fixture(scope="module")
def references(ws, tmp_path_factory):
    """Each command's uninterrupted run (made when a cell first needs it): its duration, result and output size."""
    made: dict[str, Reference] = {}

    def get(cmd: Command) -> Reference:
        if cmd.name not in made:
            out = tmp_path_factory.mktemp(f"ref-{cmd.name}")
            t0 = time.perf_counter()
            ok(run(cmd.argv(ws, out)))
            seconds = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            made[cmd.name] = Reference(seconds, cmd.result(out), size)
        return made[cmd.name]
    return get


# --- the cells ---------------------------------------------------------------------------------------------------

#: The sample that `bash tests/run.sh --fast` runs (one cell of each fault); CI runs every cell.
FAST = {("kill", "simulate"), ("sigint", "train"), ("full", "metrics"), ("fills", "simulate-replicas"),
        ("collapse", "simulate-replicas")}


def cells(fault: str, names) -> list:
    return [pytest.param(BY_NAME[n], id=n, marks=() if (fault, n) in FAST else pytest.mark.slow) for n in names]


def _interrupt_at_random(cmd: Command, ws, reference: Reference, out: Path, sig: int, salt: str):
    """Start the command, send `sig` (to its process group, as Ctrl-C would) at a seeded random moment between half
    and nine tenths of its uninterrupted duration, and return the ended process with its output."""
    delay = random.Random(f"{salt}-{cmd.name}").uniform(0.5, 0.9) * reference.seconds
    proc = start(cmd.argv(ws, out))
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=300)
    if sig == signal.SIGKILL:  # the group's other processes (campaign workers) die with their parent
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize("cmd", cells("kill", BY_NAME))
def test_kill_at_a_random_moment_then_the_same_command_gives_the_uninterrupted_result(cmd, ws, references, tmp_path):
    reference = references(cmd)
    _interrupt_at_random(cmd, ws, reference, tmp_path, signal.SIGKILL, "kill")
    ok(run(cmd.argv(ws, tmp_path)))
    same(cmd.result(tmp_path), reference.result)


@pytest.mark.parametrize("cmd", cells("sigint", BY_NAME))
def test_ctrl_c_is_one_line_exit_130_and_the_same_command_resumes(cmd, ws, references, tmp_path):
    reference = references(cmd)
    rc, _, stderr = _interrupt_at_random(cmd, ws, reference, tmp_path, signal.SIGINT, "sigint")
    if rc == -signal.SIGINT and not stderr.strip():
        pass  # the signal came as the interpreter was exiting, after the work was done (the rerun checks that)
    elif rc != 0:  # 0: it ended before the signal came
        # CPython exits by SIGINT (-2 here, 130 in a shell) when a KeyboardInterrupt passed through C code that ran
        # Python (an import in torch, say) before openmlff caught it; the shell's status is 130 either way
        assert "interrupted" in one_line(130 if rc == -signal.SIGINT else rc, stderr, rc=130)
    ok(run(cmd.argv(ws, tmp_path)))
    same(cmd.result(tmp_path), reference.result)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of `size` bytes (root may mount one); skips the test where mounting is refused."""
    mounts = []

    def mount(size: int) -> Path:
        if os.environ.get("OPENMLFF_TEST_NO_MOUNT") == "1":
            pytest.skip("OPENMLFF_TEST_NO_MOUNT=1: no tmpfs")
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size)}", "tmpfs", str(folder)],
                              capture_output=True)
        if proc.returncode:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounts.append(folder)
        return folder
    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _can_mount(tmp_path) -> bool:
    """Whether a tmpfs can be mounted here (OPENMLFF_TEST_NO_MOUNT=1 says no, to run the fallback as root)."""
    if os.environ.get("OPENMLFF_TEST_NO_MOUNT") == "1":
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode:
        return False
    subprocess.run(["umount", "-l", str(probe)], check=False)
    return True


def _fill(folder: Path) -> None:
    """Leave no byte free on the file system of `folder`."""
    try:
        with open(folder / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC


@pytest.mark.parametrize("cmd", cells("full", BY_NAME))
def test_a_full_disk_at_the_start_is_one_line_naming_the_file(cmd, ws, tmp_path, tmpfs, monkeypatch, capsys):
    if _can_mount(tmp_path):
        disk = tmpfs(64 * 1024)
        _fill(disk)
        line = one_line(run(cmd.argv(ws, disk / "out")))
        assert "No space left on device" in line and str(disk) in line, line
        assert [p.name for p in disk.rglob("*") if p.is_file() and p.stat().st_size] == ["filler"]
        return
    # no tmpfs: every file written through openmlff.core.atomic_io under OUT fails as on a full disk (in this process)
    from openmlff.core import atomic_io
    from openmlff.cli import main

    out, real = tmp_path / "out", atomic_io._write_and_replace

    def full(path, tmp, write):
        if not Path(path).resolve().is_relative_to(out.resolve()):
            return real(path, tmp, write)  # another disk (a temporary folder)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
    monkeypatch.setattr(atomic_io, "_write_and_replace", full)
    rc = main([str(a) for a in cmd.argv(ws, out)])
    line = one_line(rc, capsys.readouterr().err)
    assert "No space left on device" in line and str(out) in line, line


@pytest.mark.parametrize("cmd", cells("fills", BY_NAME))
def test_a_disk_that_fills_mid_run_stops_with_one_line_and_the_run_resumes(cmd, ws, references, tmp_path, tmpfs):
    reference = references(cmd)
    disk = tmpfs(max(4096, reference.bytes // 2))
    line = one_line(run(cmd.argv(ws, disk)))
    assert "No space left on device" in line and str(disk) in line, line
    subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
    ok(run(cmd.argv(ws, disk)))
    same(cmd.result(disk), reference.result)


@pytest.mark.parametrize("cmd", cells("collapse", [c.name for c in COMMANDS if c.collapse is not None]))
def test_a_collapse_at_step_0_ends_the_run_as_collapsed(cmd, ws, tmp_path):
    proc = ok(run(cmd.collapse(ws, tmp_path)))
    summaries = sorted(tmp_path.rglob("summary.json"))
    assert summaries, proc.stdout
    first = [json.loads(p.read_text()) for p in summaries]
    for doc in first:
        assert not doc["stable"] and doc["collapse_step"] == 0 and doc["collapse_reason"] == "nonbonded_contact"
    ok(run(cmd.collapse(ws, tmp_path)))  # again: the same summaries, nothing run twice
    assert [json.loads(p.read_text()) for p in summaries] == first


# --- bad inputs ----------------------------------------------------------------------------------------------------

BAD_KINDS = ("empty", "truncated", "wrong_format", "wrong_atoms", "non_finite", "not_utf8")
#: (input kind, bad kind) that no command can be given, and why (the README's table says the same).
BAD_INPUTS_NOT_APPLICABLE = {
    ("checkpoint", "not_utf8"): "a training checkpoint is a binary (zip) file: there is no text to decode",
    ("campaign", "wrong_atoms"): "correlate reads the models and starts a campaign recorded; `campaign run` checked them",
    ("campaign", "non_finite"): "correlate reads numbers `campaign run` wrote; the spec's are checked when it is read",
}
#: (command, slot, bad kind) where the input is fine for that command: any molecule may be sampled, labelled,
#: trained, exported or fine-tuned on its own.
ACCEPTED = {("data-generate", "structure", "wrong_atoms"), ("data-label", "data", "wrong_atoms"),
            ("train", "data", "wrong_atoms"), ("active-learn", "data", "wrong_atoms"),
            ("export", "checkpoint", "wrong_atoms"), ("finetune", "checkpoint", "wrong_atoms")}
#: The sample of bad-input cells in the fast tier: each bad kind once.
FAST_BAD = {("metrics", "data", "empty"), ("simulate", "structure", "truncated"), ("campaign", "spec", "wrong_format"),
            ("recruit", "checkpoint", "wrong_atoms"), ("simulate", "model", "non_finite"),
            ("data-label", "data", "not_utf8")}


def _bad_cells() -> list:
    out = []
    for cmd in COMMANDS:
        for slot, kind in cmd.inputs.items():
            for bad in BAD_KINDS:
                if (kind, bad) in BAD_INPUTS_NOT_APPLICABLE or (cmd.name, slot, bad) in ACCEPTED:
                    continue
                marks = () if (cmd.name, slot, bad) in FAST_BAD else pytest.mark.slow
                out.append(pytest.param(cmd, slot, kind, bad, id=f"{cmd.name}-{slot}-{bad}", marks=marks))
    return out


def _half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _text(dst: Path, text: str | bytes) -> Path:
    dst.write_bytes(text if isinstance(text, bytes) else text.encode())
    return dst


@pytest.fixture(scope="module")
def bad_files(ws, test_data) -> dict:
    """(input kind, bad kind) -> a file (or folder) of that kind that is bad in that way."""
    import torch

    from openmlff.data import load_dataset
    from openmlff.model_file.writer import export_checkpoint
    from openmlff.training import TrainingConfig, train
    from openmlff.training.checkpoint import read_checkpoint
    from untrained_model import write_untrained_et

    root = ws.root / "bad"
    root.mkdir()
    files = {}
    aspirin_pdb = Path(__file__).resolve().parents[1] / "openmlff" / "resources" / "structures" / "aspirin.pdb"
    extxyz = (test_data / "datasets" / "md17_aspirin_15.extxyz").read_text()
    lines = extxyz.splitlines(keepends=True)
    n = int(lines[0])
    # datasets
    d = root / "dataset"
    d.mkdir()
    with np.load(ws.data) as f:  # no frames (a 0-byte file is refused in test_reliability)
        np.savez(d / "empty.npz", **{k: (f[k][:0] if k != "nuclear_charges" else f[k]) for k in f.files})
    files["dataset", "empty"] = d / "empty.npz"
    files["dataset", "truncated"] = _half(ws.data, d / "truncated.npz")
    files["dataset", "wrong_format"] = _text(d / "wrong_format.npz", aspirin_pdb.read_text())
    a = n + 4 + 6  # frame 1's atoms 6 (C) and 7 (O) swapped: the same formula in another order
    swapped = lines[:a] + [lines[a + 1], lines[a]] + lines[a + 2:]
    files["dataset", "wrong_atoms"] = _text(d / "wrong_atoms.extxyz", "".join(swapped))
    with np.load(ws.data) as f:
        arrays = {k: f[k].copy() for k in f.files}
    arrays["coords"][3, 0, 0] = np.nan
    np.savez(d / "non_finite.npz", **arrays)
    files["dataset", "non_finite"] = d / "non_finite.npz"
    files["dataset", "not_utf8"] = _text(d / "not_utf8.extxyz", lines[0].encode() + b"\xff\xfe" + "".join(lines[1:]).encode())
    # checkpoints and models of another molecule (ethanol), and with a NaN weight
    c = root / "checkpoint"
    c.mkdir()
    files["checkpoint", "empty"] = _text(c / "empty.ckpt", b"")
    files["checkpoint", "truncated"] = _half(ws.checkpoint, c / "truncated.ckpt")
    files["checkpoint", "wrong_format"] = _text(c / "wrong_format.ckpt", json.dumps({"weights": [1, 2, 3]}))
    ethanol = load_dataset(test_data / "datasets" / "md17_ethanol_3.xyz")
    config = TrainingConfig(hyperparameters=json.loads(TINY), n_train=1, n_val=1, n_test=1, batch_size=1,
                            max_epochs=1, torch_threads=1)
    files["checkpoint", "wrong_atoms"] = train(ethanol, c / "ethanol", config, progress=False).checkpoint
    state = dict(read_checkpoint(ws.checkpoint).state)
    best = {k: v.clone() for k, v in state["best_state"].items()}
    next(v for v in best.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    torch.save(dict(state, best_state=best), c / "non_finite.ckpt")
    files["checkpoint", "non_finite"] = c / "non_finite.ckpt"
    m = root / "model"
    m.mkdir()
    files["model", "empty"] = _text(m / "empty.pt", b"")
    files["model", "truncated"] = _half(ws.model, m / "truncated.pt")
    files["model", "wrong_format"] = _text(m / "wrong_format.pt", "not a model\n")
    files["model", "wrong_atoms"] = export_checkpoint(files["checkpoint", "wrong_atoms"], m / "wrong_atoms.pt")
    dataset = load_dataset(ws.data)
    nan_model = write_untrained_et(m / "nan_source.pt", dataset)
    module = torch.jit.load(str(nan_model))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(float("nan"))
    extra = {"openmlff.json": ""}
    torch.jit.load(str(nan_model), _extra_files=extra)
    torch.jit.save(module, str(m / "non_finite.pt"), _extra_files=extra)
    files["model", "non_finite"] = m / "non_finite.pt"
    torch.jit.save(module, str(m / "not_utf8.pt"), _extra_files={"openmlff.json": b"\xff\xfe{"})
    files["model", "not_utf8"] = m / "not_utf8.pt"
    # structures
    s = root / "structure"
    s.mkdir()
    pdb = aspirin_pdb.read_text()
    files["structure", "empty"] = _text(s / "empty.pdb", b"")
    files["structure", "truncated"] = _text(s / "truncated.pdb", pdb[: len(pdb) // 2])
    files["structure", "wrong_format"] = _text(s / "wrong_format.pdb", (test_data / "datasets" / "md17_ethanol_3.xyz")
                                               .read_text())
    files["structure", "wrong_atoms"] = shutil.copy(aspirin_pdb.with_name("ac-ala3-nhme.pdb"), s / "wrong_atoms.pdb")
    atom = next(i for i, line in enumerate(pdb.splitlines()) if line.startswith(("ATOM", "HETATM")))
    rows = pdb.splitlines(keepends=True)
    rows[atom] = rows[atom][:30] + "     nan" + rows[atom][38:]
    files["structure", "non_finite"] = _text(s / "non_finite.pdb", "".join(rows))
    files["structure", "not_utf8"] = _text(s / "not_utf8.pdb", b"REMARK \xff\xfe\n" + pdb.encode())
    # campaign specs and campaign folders
    p = root / "spec"
    p.mkdir()
    spec = ws.spec.read_text()
    files["spec", "empty"] = _text(p / "empty.json", b"")
    files["spec", "truncated"] = _text(p / "truncated.json", spec[: len(spec) // 2])
    files["spec", "wrong_format"] = _text(p / "wrong_format.json", "[1, 2, 3]")
    files["spec", "wrong_atoms"] = _text(p / "wrong_atoms.json", spec.replace(str(ws.toy), str(files["model", "wrong_atoms"])))
    files["spec", "non_finite"] = _text(p / "non_finite.json", spec.replace('"temperatures_K": [300]',
                                                                              '"temperatures_K": [Infinity]'))
    files["spec", "not_utf8"] = _text(p / "not_utf8.json", b"\xff\xfe" + spec.encode())
    k = root / "campaign"
    k.mkdir()
    for bad in ("empty", "truncated", "wrong_format", "not_utf8"):
        folder = k / bad
        shutil.copytree(ws.campaign, folder)
        document = (folder / "campaign.json").read_text()
        files["campaign", bad] = folder
        if bad == "empty":
            shutil.rmtree(folder)
            folder.mkdir()
        elif bad == "truncated":
            _text(folder / "campaign.json", document[: len(document) // 2])
        elif bad == "wrong_format":
            _text(folder / "campaign.json", "[1, 2, 3]")
        else:
            _text(folder / "campaign.json", b"\xff\xfe" + document.encode())
    return files


@pytest.mark.parametrize(("cmd", "slot", "kind", "bad"), _bad_cells())
def test_a_bad_input_is_one_line_naming_the_file_and_writes_nothing(cmd, slot, kind, bad, ws, bad_files, tmp_path,
                                                                    capsys):
    from dataclasses import replace

    from openmlff.cli import main

    given = bad_files[kind, bad]
    out = tmp_path / "out"
    try:
        rc = main([str(a) for a in cmd.argv(replace(ws, bad={slot: given}), out)])
    except SystemExit as exc:  # argparse
        rc = exc.code
    line = one_line(rc, capsys.readouterr().err)
    assert given.name in line, line
    written = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".lock")] if out.exists() else []
    assert not written, written
