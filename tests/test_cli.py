"""The command-line contract, end to end through real subprocesses: data info, train, export, metrics, simulate."""

import json
import subprocess
import sys

import mdtraj
import pytest

TINY = '{"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}'


def openmlff(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "openmlff", *map(str, args)], capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    if check and proc.returncode != 0:
        raise AssertionError(f"openmlff {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory, test_data):
    """A tiny ET trained for two epochs and exported, through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    data = test_data / "datasets" / "rmd17_aspirin_100.npz"
    openmlff("train", "--data", data, "--model", "et", "--out", root / "train", "--max-epochs", 2, "--seed", 3,
             "--n-train", 20, "--n-val", 5, "--n-test", 10, "--batch-size", 5, "--threads", 1,
             "--hyperparameters", TINY, "--quiet")
    assert (root / "train" / "model.ckpt").is_file() and (root / "train" / "training_log.csv").is_file()
    openmlff("export", root / "train" / "model.ckpt", "--out", root / "model.pt")
    return root, data


def test_data_info_reports_frames_atoms_units(test_data):
    out = openmlff("data", "info", test_data / "datasets" / "rmd17_aspirin_100.npz").stdout
    assert "100" in out and "21" in out and "kcal/mol" in out
    info = json.loads(openmlff("data", "info", test_data / "datasets" / "md17_ethanol_3.xyz", "--json").stdout)
    assert info["frames"] == 3 and info["atoms"] == 9


def test_malformed_file_is_refused_with_file_and_field(test_data):
    bad = test_data / "datasets" / "rmd17_benzene_10_malformed.npz"
    proc = openmlff("data", "info", bad, check=False)
    assert proc.returncode == 1
    assert "rmd17_benzene_10_malformed.npz" in proc.stderr and "nuclear_charges" in proc.stderr


@pytest.mark.slow
def test_metrics_json_has_units_and_global_keys(trained, tmp_path):
    root, data = trained
    out = tmp_path / "metrics.json"
    openmlff("metrics", "--model", root / "model.pt", "--data", data, "--out", out,
             "--frames", "test", "--checkpoint", root / "train" / "model.ckpt")
    report = json.loads(out.read_text())
    assert report["units"]["force"] == "kcal/mol/Å"
    for key in ("force_mae", "force_rmse", "force_max", "fnm_mae", "fnm_max", "energy_mae"):
        assert report["global"][key] > 0
    assert report["global"]["n_frames"] == 10
    assert set(report["elements"]) == {"H", "C", "O"}
    # a model for other atoms is refused, naming the model file
    proc = openmlff("metrics", "--model", root / "model.pt", "--data", data.parent / "md22_Ac-Ala3-NHMe_5.npz",
                    "--out", tmp_path / "x.json", check=False)
    assert proc.returncode == 1 and "model.pt" in proc.stderr and "atomic numbers" in proc.stderr


def test_simulate_writes_run_directory_and_resume_is_a_no_op(trained, tmp_path):
    root, data = trained
    run = tmp_path / "run"
    args = ["simulate", "--model", root / "model.pt", "--data", data, "--frame", 7, "--temperature", 500,
            "--timestep", 0.5, "--steps", 200, "--out", run, "--platform", "CPU", "--report-interval", 50,
            "--checkpoint-interval", 100, "--threads", 1, "--quiet"]
    openmlff(*args)
    summary = json.loads((run / "summary.json").read_text())
    for key in ("stable", "steps_completed", "collapse_time_ps", "ns_per_day"):
        assert key in summary
    assert summary["steps_completed"] == 200 or not summary["stable"]
    traj = mdtraj.load(str(run / "trajectory.dcd"), top=str(run / "topology.pdb"))
    assert traj.n_atoms == 21 and traj.n_frames == summary["steps_completed"] // 50 + 1
    assert (run / "state.csv").read_text().count("\n") == traj.n_frames + 1
    before = (run / "summary.json").read_bytes()
    openmlff(*args)
    assert (run / "summary.json").read_bytes() == before


def test_simulate_from_builtin_structure(trained, tmp_path):
    root, _ = trained
    openmlff("simulate", "--model", root / "model.pt", "--structure", "aspirin", "--temperature", 300,
             "--timestep", 0.5, "--steps", 20, "--out", tmp_path / "run", "--platform", "Reference",
             "--report-interval", 10, "--quiet")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps_requested"] == 20


@pytest.mark.slow
def test_simulate_replicas_from_frames_and_from_seeds(trained, tmp_path):
    root, data = trained
    out = openmlff("simulate", "--model", root / "model.pt", "--data", data, "--replicas", 2, "--frames", 3, 9,
                   "--temperature", 300, "--timestep", 0.5, "--steps", 20, "--out", tmp_path / "frames",
                   "--report-interval", 10, "--seed", 4, "--quiet").stdout
    assert "replica_000 (seed 4)" in out and "replica_001 (seed 4)" in out
    record = json.loads((tmp_path / "frames" / "replica_001" / "run.json").read_text())
    assert record["replicas"]["count"] == 2 and record["config"]["seed"] == 4
    out = openmlff("simulate", "--model", root / "model.pt", "--structure", "aspirin", "--replicas", 2,
                   "--temperature", 300, "--timestep", 0.5, "--steps", 20, "--out", tmp_path / "seeds",
                   "--report-interval", 10, "--seed", 4, "--quiet").stdout
    assert "replica_001 (seed 5)" in out
    bad = openmlff("simulate", "--model", root / "model.pt", "--data", data, "--replicas", 3, "--frames", 1, 2,
                   "--temperature", 300, "--timestep", 0.5, "--steps", 20, "--out", tmp_path / "bad", check=False)
    assert bad.returncode != 0 and "--replicas 3 needs 3 frames" in bad.stderr


def test_data_generate_and_label_with_gfn2_xtb(tmp_path, test_data):
    out = tmp_path / "aspirin_xtb.npz"
    openmlff("data", "generate", "--structure", "aspirin", "--method", "gfn2-xtb", "--temperature", 500,
             "--frames", 3, "--stride", 2, "--equilibration", 4, "--out", out, "--seed", 1, "--quiet")
    info = json.loads(openmlff("data", "info", out, "--json").stdout)
    assert info["frames"] == 3 and info["atoms"] == 21
    assert "GFN2-xTB" in info["level_of_theory"]
    labelled = tmp_path / "ethanol_xtb.npz"
    proc = openmlff("data", "label", "--data", test_data / "datasets" / "md17_ethanol_3.xyz", "--out", labelled,
                    "--workers", 1, "--chunk-size", 2, "--quiet")
    assert "3 of 3 frames" in proc.stdout
    assert json.loads(openmlff("data", "info", labelled, "--json").stdout)["frames"] == 3
