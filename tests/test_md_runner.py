"""openmlff.md.runner and reporters: real Langevin MD of aspirin with toy TorchScript models on the
Reference platform: the run directory, collapse detection, finished runs, and resuming after a
real SIGKILL with every frame exactly once and the same trajectory as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mdtraj
import numpy as np
import openmm.app as app
import pytest
import torch
from openmm import unit

from openmlff.md import (
    STATE_COLUMNS, DCDTrajectoryReporter, PlatformError, ResumeMismatchError, SimulationConfig, StepRecord,
    file_sha256, load_structure, read_state_csv, run_simulation,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_models import write_toy_model  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The stretched bond of the blow-up model: aspirin's C0-H14 (an aromatic C-H).
STRETCHED_BOND = (0, 14)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def aspirin(shared_data):
    return load_structure(shared_data / "structures" / "aspirin.xyz")


@pytest.fixture(scope="module")
def models(aspirin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    z, pos = aspirin.atomic_numbers, aspirin.positions_angstrom
    return {
        "stable": write_toy_model(folder / "toy.pt", z, pos),
        "float32": write_toy_model(folder / "toy32.pt", z, pos, dtype="float32"),
        "blowup": write_toy_model(folder / "blowup.pt", z, pos, stretch_bond=STRETCHED_BOND, stretch_angstrom=1.0),
    }


def config(**changes) -> SimulationConfig:
    base = SimulationConfig(temperature_K=500.0, timestep_fs=0.5, steps=200, seed=11, platform="Reference",
                            report_interval_steps=20, checkpoint_interval_steps=100, torch_threads=1)
    return replace(base, **changes)


def test_stable_run_writes_every_file(aspirin, models, tmp_path):
    out = tmp_path / "run"
    summary = run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, out, config(),
                             topology=aspirin.topology, progress=False)
    for name in ("run.json", "summary.json", "trajectory.dcd", "topology.pdb", "state.csv", "checkpoint.json"):
        assert (out / name).is_file(), name
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["stable"] is True
    assert summary["steps_completed"] == summary["steps_requested"] == 200
    assert summary["collapse_step"] is None and summary["collapse_time_ps"] is None
    assert summary["collapse_reason"] is None and summary["first_broken_bond"] is None
    assert summary["platform"] == "Reference"
    assert summary["ns_per_day"] > 0 and summary["wall_time_s"] > 0
    assert summary["simulated_time_ps"] == pytest.approx(0.1)

    traj = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    assert traj.n_frames == 200 // 20 + 1 == summary["frames_written"]
    assert traj.n_atoms == 21 and traj.topology.n_bonds == 21
    np.testing.assert_allclose(traj.xyz[0] * 10.0, aspirin.positions_angstrom, atol=1e-5)  # frame 0 = step 0
    assert np.abs(traj.xyz[-1] - traj.xyz[0]).max() > 1e-3  # the atoms moved

    states = read_state_csv(out / "state.csv")
    assert list(states) == list(STATE_COLUMNS)
    np.testing.assert_array_equal(states["step"], np.arange(0, 201, 20))
    np.testing.assert_allclose(states["time_ps"], states["step"] * 0.5e-3)
    np.testing.assert_allclose(states["total_energy_kJ_per_mol"],
                               states["potential_energy_kJ_per_mol"] + states["kinetic_energy_kJ_per_mol"])
    assert 100.0 < states["temperature_K"].mean() < 1000.0  # thermostatted near 500 K, 21 atoms fluctuate
    assert (states["speed_ns_per_day"][1:] > 0).all()

    record = json.loads((out / "run.json").read_text())
    assert record["model"]["sha256"] == file_sha256(models["stable"])
    assert record["model"]["metadata"]["architecture"] == "toy_springs"
    assert record["structure"]["atomic_numbers"] == aspirin.atomic_numbers.tolist()
    assert np.array_equal(record["structure"]["positions_angstrom"], aspirin.positions_angstrom)
    assert record["config"]["seed"] == 11 and record["openmm_seed"] == 12
    assert record["config"]["temperature_K"] == 500.0 and record["temperature_limit_K"] == 2000.0
    assert record["platform"]["name"] == "Reference"
    assert set(record["versions"]) >= {"openmlff", "openmm", "openmmtorch", "torch"}
    checkpoint = json.loads((out / "checkpoint.json").read_text())
    assert checkpoint["step"] == 200 and checkpoint["frames_written"] == 11 and checkpoint["state_rows_written"] == 11
    assert (out / checkpoint["checkpoint_file"]).is_file()
    assert len(list(out.glob("checkpoint_step*.chk"))) == 1  # older checkpoints are removed


def test_finished_run_is_not_run_again(aspirin, models, tmp_path):
    out = tmp_path / "run"
    first = run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, out,
                           config(steps=40), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, out,
                            config(steps=40), progress=False)
    assert second == first
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_blowup_model_collapses_and_the_summary_names_the_bond(aspirin, models, tmp_path):
    out = tmp_path / "run"
    cfg = config(temperature_K=300.0, steps=400, report_interval_steps=5)
    summary = run_simulation(models["blowup"], aspirin.atomic_numbers, aspirin.positions_angstrom, out, cfg, progress=False)
    assert summary["stable"] is False
    assert summary["collapse_reason"] == "bond_deviation"
    step = summary["collapse_step"]
    assert 0 < step < 400 and step % 5 == 0
    assert summary["steps_completed"] == step  # stopped at once
    assert summary["collapse_time_ps"] == pytest.approx(step * 0.5e-3)
    bond = summary["first_broken_bond"]
    assert bond["atoms"] == list(STRETCHED_BOND) and bond["elements"] == ["C", "H"]
    assert bond["length_angstrom"] - bond["reference_length_angstrom"] > 0.5
    assert bond["reference_length_angstrom"] == pytest.approx(
        np.linalg.norm(aspirin.positions_angstrom[14] - aspirin.positions_angstrom[0]))
    n_frames = step // 5 + 1
    assert summary["frames_written"] == n_frames
    assert mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb")).n_frames == n_frames
    assert read_state_csv(out / "state.csv")["step"][-1] == step
    # the collapsed frame is in the trajectory: the bond really is broken there
    last = mdtraj.load_frame(str(out / "trajectory.dcd"), n_frames - 1, top=str(out / "topology.pdb"))
    assert 10 * mdtraj.compute_distances(last, [STRETCHED_BOND])[0, 0] == pytest.approx(bond["length_angstrom"], abs=1e-4)
    # a collapsed run is finished: calling again returns its summary
    assert run_simulation(models["blowup"], aspirin.atomic_numbers, aspirin.positions_angstrom, out, cfg, progress=False) == summary


@pytest.mark.parametrize("change, named", [
    ({"config": {"temperature_K": 400.0}}, "config.temperature_K"),
    ({"config": {"timestep_fs": 1.0}}, "config.timestep_fs"),
    ({"config": {"seed": 12}}, "config.seed"),
    ({"model": "float32"}, "model sha256"),
    ({"positions": 0.01}, "starting positions"),
])
def test_changed_input_refuses_to_resume(aspirin, models, tmp_path, change, named):
    out = tmp_path / "run"
    run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, out, config(steps=20), progress=False)
    model = models[change.get("model", "stable")]
    positions = aspirin.positions_angstrom + change.get("positions", 0.0)
    with pytest.raises(ResumeMismatchError, match=f"cannot resume.*{named}[^:]*: recorded"):
        run_simulation(model, aspirin.atomic_numbers, positions, out, config(steps=20, **change.get("config", {})),
                       progress=False)


def test_torch_threads_may_change_on_resume(aspirin, models, tmp_path):
    out = tmp_path / "run"
    first = run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, out, config(steps=20), progress=False)
    assert run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, out,
                          config(steps=20, torch_threads=2), progress=False) == first


def test_bad_platform_name_error_lists_available_platforms(aspirin, models, tmp_path):
    with pytest.raises(PlatformError, match=r"'Metal' is not available; available platforms: \[.*'Reference'.*\]"):
        run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "run",
                       config(platform="Metal"), progress=False)


_CHILD = r"""
import json, os, signal, sys
import numpy as np, torch
from openmlff.md import SimulationConfig, run_simulation
args = json.loads(sys.argv[1])
def kill_myself(record):
    if record.step == args["kill_at_step"]:
        os.kill(os.getpid(), signal.SIGKILL)
run_simulation(args["model"], np.array(args["z"]), np.array(args["positions"]), args["out"],
               SimulationConfig(**args["config"]), progress=False, on_report=kill_myself)
"""


def test_run_killed_after_a_checkpoint_resumes_with_every_frame_once_and_the_same_trajectory(aspirin, models, tmp_path):
    cfg = config(steps=300, report_interval_steps=10, checkpoint_interval_steps=100)
    interrupted, uninterrupted = tmp_path / "interrupted", tmp_path / "uninterrupted"
    args = {"model": str(models["stable"]), "z": aspirin.atomic_numbers.tolist(),
            "positions": aspirin.positions_angstrom.tolist(), "out": str(interrupted),
            "config": {**cfg.__dict__}, "kill_at_step": 150}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], env=env, capture_output=True, timeout=120)
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    # killed at step 150: the committed checkpoint is step 100, but frames and rows up to 150 are on disk
    assert json.loads((interrupted / "checkpoint.json").read_text())["step"] == 100
    assert not (interrupted / "summary.json").exists()
    assert read_state_csv(interrupted / "state.csv")["step"][-1] == 150
    assert mdtraj.load(str(interrupted / "trajectory.dcd"), top=str(interrupted / "topology.pdb")).n_frames == 16

    resumed = run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, interrupted, cfg,
                             progress=False)
    assert resumed["resumed_from_step"] == 100 and resumed["steps_this_session"] == 200
    assert resumed["stable"] and resumed["steps_completed"] == 300 and resumed["frames_written"] == 31
    reference = run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, uninterrupted, cfg,
                               progress=False)
    assert reference["resumed_from_step"] is None

    states = read_state_csv(interrupted / "state.csv")
    np.testing.assert_array_equal(states["step"], np.arange(0, 301, 10))  # every row exactly once, in order
    expected_states = read_state_csv(uninterrupted / "state.csv")
    for column in ("potential_energy_kJ_per_mol", "kinetic_energy_kJ_per_mol"):
        np.testing.assert_array_equal(states[column], expected_states[column])
    traj = mdtraj.load(str(interrupted / "trajectory.dcd"), top=str(interrupted / "topology.pdb"))
    expected = mdtraj.load(str(uninterrupted / "trajectory.dcd"), top=str(uninterrupted / "topology.pdb"))
    assert traj.n_frames == expected.n_frames == 31
    np.testing.assert_array_equal(traj.xyz, expected.xyz)  # same Langevin noise after the checkpoint


def test_pythonforce_backend_follows_the_torchforce_trajectory(aspirin, models, tmp_path):
    cfg = config(steps=60, report_interval_steps=20)
    torchforce = run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom,
                                tmp_path / "torchforce", cfg, progress=False)
    pythonforce = run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom,
                                 tmp_path / "pythonforce", replace(cfg, backend="pythonforce"), progress=False)
    assert torchforce["stable"] and pythonforce["stable"] and pythonforce["backend"] == "pythonforce"
    a = read_state_csv(tmp_path / "torchforce" / "state.csv")
    b = read_state_csv(tmp_path / "pythonforce" / "state.csv")
    np.testing.assert_allclose(b["potential_energy_kJ_per_mol"], a["potential_energy_kJ_per_mol"], rtol=1e-8)


def test_dcd_reporter_reopened_at_a_frame_count_appends_after_it(aspirin, tmp_path):
    path = tmp_path / "t.dcd"
    top_path = tmp_path / "t.pdb"
    app.PDBFile.writeFile(aspirin.topology, unit.Quantity(aspirin.positions_angstrom / 10, unit.nanometer), open(top_path, "w"))
    frames = [aspirin.positions_angstrom / 10 + 0.01 * k for k in range(8)]

    def record(k):
        return StepRecord(step=10 * k, time_ps=0.0, positions_nm=frames[k], potential_energy_kJ_per_mol=0.0,
                          kinetic_energy_kJ_per_mol=0.0, temperature_K=0.0, speed_ns_per_day=0.0)

    writer = DCDTrajectoryReporter(path, aspirin.topology, 0.5, 10)
    for k in range(5):
        writer.report(record(k))
    writer.close()
    writer = DCDTrajectoryReporter(path, aspirin.topology, 0.5, 10, keep_frames=3)  # drop frames 3 and 4
    for k in (3, 4, 5, 6, 7):
        writer.report(record(k))
    writer.close()
    traj = mdtraj.load(str(path), top=str(top_path))
    np.testing.assert_allclose(traj.xyz, np.asarray(frames, dtype=np.float32), atol=1e-6)
    with pytest.raises(ValueError, match="holds 8 complete frames, but the checkpoint says 9"):
        DCDTrajectoryReporter(path, aspirin.topology, 0.5, 10, keep_frames=9)
