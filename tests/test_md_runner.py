"""openmlff.md.runner and reporters: real MD of aspirin with toy TorchScript models on the Reference and
CPU platforms: the run directory in each trajectory format, collapse detection and the frames kept
before it, finished and extended runs, refused changes, and resuming after a real SIGKILL (at a
chosen step and at a random moment) with every frame exactly once and the same trajectory as an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from openmlff.core import elements
from openmlff.md import (
    STATE_COLUMNS, PlatformError, ResumeMismatchError, SimulationConfig, file_sha256, read_state_csv, run_simulation,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_models import write_toy_model  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The stretched bond of the blow-up model: aspirin's C0-H14 (an aromatic C-H).
STRETCHED_BOND = (0, 14)


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
                            report_interval_steps=20, monitor_interval_steps=5, checkpoint_interval_steps=100,
                            torch_threads=1)
    return replace(base, **changes)


def run(model, aspirin, out, cfg, **kwargs) -> dict:
    return run_simulation(model, aspirin.atomic_numbers, aspirin.positions_angstrom, out, cfg, topology=aspirin.topology,
                          progress=False, **kwargs)


def test_stable_run_writes_every_file(aspirin, models, tmp_path):
    out = tmp_path / "run"
    summary = run(models["stable"], aspirin, out, config())
    for name in ("run.json", "summary.json", "trajectory.dcd", "topology.pdb", "state.csv", "checkpoint.json"):
        assert (out / name).is_file(), name
    assert not (out / "collapse_frames.dcd").exists()
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["stable"] is True
    assert summary["steps_completed"] == summary["steps_requested"] == 200
    assert summary["collapse_step"] is None and summary["collapse_time_ps"] is None
    assert summary["collapse_reason"] is None and summary["first_broken_bond"] is None
    assert summary["closest_nonbonded_pair"] is None and summary["collapse_frames"] is None
    assert summary["platform"] == "Reference" and summary["integrator"] == "langevin_middle"
    assert summary["ns_per_day"] > 0 and summary["wall_time_s"] > 0
    assert summary["simulated_time_ps"] == pytest.approx(0.1)
    assert summary["minimization"] is None

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
    left = states["estimated_time_left_s"]
    assert np.isnan(left[0]) and left[-1] == 0.0  # nothing timed at step 0; nothing left at the end
    assert (left[1:-1] > 0).all() and left[1] > left[-2]

    record = json.loads((out / "run.json").read_text())
    assert record["model"]["sha256"] == file_sha256(models["stable"])
    assert record["model"]["metadata"]["architecture"] == "toy_springs"
    assert record["structure"]["atomic_numbers"] == aspirin.atomic_numbers.tolist()
    assert np.array_equal(record["structure"]["positions_angstrom"], aspirin.positions_angstrom)
    assert record["config"]["seed"] == 11 and record["openmm_seed"] == 12
    assert record["config"]["temperature_K"] == 500.0 and record["temperature_limit_K"] == 2000.0
    assert record["integrator"]["openmm_class"] == "LangevinMiddleIntegrator" and record["integrator"]["ensemble"] == "NVT"
    assert record["platform"]["name"] == "Reference"
    assert record["torchforce_properties"] == {"useCUDAGraphs": "false", "CUDAGraphWarmupSteps": "10"}
    assert record["trajectory"] == {"file": "trajectory.dcd", "format": "dcd", "topology": "topology.pdb",
                                    "frame_interval_steps": 20, "first_frame_step": 0}
    assert record["history"] == []
    assert set(record["versions"]) >= {"openmlff", "openmm", "openmmtorch", "torch"}
    checkpoint = json.loads((out / "checkpoint.json").read_text())
    assert checkpoint["step"] == 200 and checkpoint["frames_written"] == 11 and checkpoint["state_rows_written"] == 11
    assert checkpoint["trajectory_bytes"] == (out / "trajectory.dcd").stat().st_size
    assert (out / checkpoint["checkpoint_file"]).is_file()
    assert len(list(out.glob("checkpoint_step*.chk"))) == 1  # older checkpoints are removed


def test_a_run_from_atomic_numbers_alone_gets_a_topology_with_bonds(aspirin, models, tmp_path):
    out = tmp_path / "run"
    run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, out, config(steps=20),
                   progress=False)
    traj = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    assert [a.element.atomic_number for a in traj.topology.atoms] == aspirin.atomic_numbers.tolist()
    assert traj.topology.n_bonds == 21


@pytest.mark.parametrize("fmt, file, atol", [("xtc", "trajectory.xtc", 1e-3), ("hdf5", "trajectory.h5", 1e-6)])
def test_xtc_and_hdf5_trajectories_hold_the_same_frames_as_dcd(aspirin, models, tmp_path, fmt, file, atol):
    if fmt == "hdf5":
        pytest.importorskip("tables", reason="mdtraj's HDF5 format needs PyTables (pip install tables)")
    cfg = config(steps=100)
    run(models["stable"], aspirin, tmp_path / "dcd", cfg)
    summary = run(models["stable"], aspirin, tmp_path / fmt, replace(cfg, trajectory_format=fmt))
    assert summary["trajectory"] == file and not (tmp_path / fmt / "trajectory.dcd").exists()
    assert not (tmp_path / fmt / "trajectory_partial.dcd").exists()  # an HDF5 run's frames until it ends
    expected = mdtraj.load(str(tmp_path / "dcd" / "trajectory.dcd"), top=str(tmp_path / "dcd" / "topology.pdb"))
    top = {} if fmt == "hdf5" else {"top": str(tmp_path / fmt / "topology.pdb")}
    traj = mdtraj.load(str(tmp_path / fmt / file), **top)
    assert traj.n_frames == expected.n_frames == 6 and traj.topology.n_bonds == 21
    np.testing.assert_allclose(traj.xyz, expected.xyz, atol=atol)
    np.testing.assert_allclose(traj.time, np.arange(0, 101, 20) * 0.5e-3, atol=1e-6)  # ps
    assert json.loads((tmp_path / fmt / "run.json").read_text())["trajectory"]["file"] == file


def test_cuda_graph_settings_are_set_on_the_force_and_recorded(aspirin, models, tmp_path):
    out = tmp_path / "run"
    summary = run(models["stable"], aspirin, out, config(steps=20, platform="CPU", cuda_graphs=True,
                                                         cuda_graph_warmup_steps=3))
    assert summary["stable"] and summary["platform"] == "CPU"  # the properties act on CUDA only
    record = json.loads((out / "run.json").read_text())
    assert record["torchforce_properties"] == {"useCUDAGraphs": "true", "CUDAGraphWarmupSteps": "3"}
    assert record["torchforce_properties_requested"] == record["torchforce_properties"]
    assert record["config"]["cuda_graphs"] is True
    with pytest.raises(ValueError, match="cuda_graphs needs backend 'torchforce'"):
        config(cuda_graphs=True, backend="pythonforce")


def test_minimisation_runs_first_and_is_recorded(aspirin, models, tmp_path):
    start = aspirin.positions_angstrom + np.random.default_rng(0).normal(scale=0.05, size=(21, 3))
    out = tmp_path / "run"
    summary = run_simulation(models["stable"], aspirin.atomic_numbers, start, out, config(steps=20, minimize=True),
                             progress=False)
    minimization = json.loads((out / "run.json").read_text())["minimization"]
    assert summary["minimization"] == minimization
    assert minimization["potential_energy_before_kJ_per_mol"] > 50.0
    assert minimization["potential_energy_after_kJ_per_mol"] < 0.2 * minimization["potential_energy_before_kJ_per_mol"]
    assert minimization["rms_displacement_angstrom"] > 0.01
    # frame 0 is the minimised structure: bond lengths back near the toy springs' rest lengths (aspirin's);
    # topology.pdb keeps the given start
    traj = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    i, j = elements.find_bonds(aspirin.atomic_numbers, aspirin.positions_angstrom).T

    rest = np.linalg.norm(aspirin.positions_angstrom[j] - aspirin.positions_angstrom[i], axis=1)

    def bond_error(x):
        return np.abs(np.linalg.norm(x[j] - x[i], axis=1) - rest).max()

    assert bond_error(traj.xyz[0] * 10.0) < 0.2 * bond_error(start)
    moved = np.linalg.norm(traj.xyz[0] * 10 - start, axis=1)
    assert np.sqrt((moved ** 2).mean()) == pytest.approx(minimization["rms_displacement_angstrom"], abs=1e-3)
    np.testing.assert_allclose(mdtraj.load(str(out / "topology.pdb")).xyz[0] * 10, start, atol=1e-3)
    states = read_state_csv(out / "state.csv")
    assert states["potential_energy_kJ_per_mol"][0] == pytest.approx(minimization["potential_energy_after_kJ_per_mol"])


def test_finished_run_is_not_run_again(aspirin, models, tmp_path):
    out = tmp_path / "run"
    first = run(models["stable"], aspirin, out, config(steps=40))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = run(models["stable"], aspirin, out, config(steps=40))
    assert second == first
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_more_steps_extend_a_finished_run_as_if_it_had_run_through(aspirin, models, tmp_path):
    short, extended, straight = tmp_path / "short", tmp_path / "extended", tmp_path / "straight"
    first = run(models["stable"], aspirin, extended, config(steps=100))
    assert first["steps_completed"] == 100
    summary = run(models["stable"], aspirin, extended, config(steps=200))
    assert summary["steps_completed"] == summary["steps_requested"] == 200
    assert summary["resumed_from_step"] == 100 and summary["steps_this_session"] == 100
    record = json.loads((extended / "run.json").read_text())
    assert record["config"]["steps"] == 200
    assert [(h["change"], h["from"], h["to"], h["checkpoint_step"]) for h in record["history"]] == [("steps", 100, 200, 100)]
    reference = run(models["stable"], aspirin, straight, config(steps=200))
    a, b = read_state_csv(extended / "state.csv"), read_state_csv(straight / "state.csv")
    np.testing.assert_array_equal(a["step"], np.arange(0, 201, 20))
    np.testing.assert_array_equal(a["potential_energy_kJ_per_mol"], b["potential_energy_kJ_per_mol"])
    np.testing.assert_array_equal(mdtraj.load(str(extended / "trajectory.dcd"), top=str(extended / "topology.pdb")).xyz,
                                  mdtraj.load(str(straight / "trajectory.dcd"), top=str(straight / "topology.pdb")).xyz)
    assert reference["frames_written"] == summary["frames_written"] == 11
    # fewer steps than recorded is a change, refused; the same count returns the summary
    with pytest.raises(ResumeMismatchError, match="config.steps: recorded 200, now 100 \\(steps may only grow"):
        run(models["stable"], aspirin, extended, config(steps=100))
    assert run(models["stable"], aspirin, extended, config(steps=200)) == summary
    del short


def test_a_resumed_context_warms_the_model_up_before_stepping(aspirin, models, tmp_path):
    """TorchScript runs a model's first call through another graph, whose forces differ in the last bits. Without
    the runner's warm-up evaluations this resume (from step 160, seen in a killed run) drifted from the uninterrupted
    run: float64 positions at step 400 differed (found by the random-kill test; MODEL_WARMUP_EVALUATIONS = 0 fails)."""
    cfg = config(steps=400, report_interval_steps=10, checkpoint_interval_steps=40)
    final_positions(models, aspirin, tmp_path / "resumed", replace(cfg, steps=160))
    resumed, resumed_end = final_positions(models, aspirin, tmp_path / "resumed", cfg)
    assert resumed["resumed_from_step"] == 160
    _, reference_end = final_positions(models, aspirin, tmp_path / "straight", cfg)
    np.testing.assert_array_equal(resumed_end, reference_end)


def test_blowup_model_collapses_and_the_summary_names_the_bond_and_keeps_the_last_frames(aspirin, models, tmp_path):
    out = tmp_path / "run"
    # the released spring energy heats the molecule past 2000 K about when the bond breaks: a high temperature
    # limit leaves the bond criterion to fire
    # 0.1 fs steps: the stretched bond (rest length +1 Å) takes a few tens of steps to pass 0.5 Å
    cfg = config(temperature_K=300.0, timestep_fs=0.1, steps=400, report_interval_steps=20, monitor_interval_steps=2,
                 collapse_frames_kept=6, temperature_limit_K=1e6)
    summary = run(models["blowup"], aspirin, out, cfg)
    assert summary["stable"] is False
    assert summary["collapse_reason"] == "bond_deviation"
    step = summary["collapse_step"]
    assert 20 < step < 400 and step % 2 == 0
    assert summary["steps_completed"] == step  # stopped at once
    assert summary["collapse_time_ps"] == pytest.approx(step * 0.1e-3)
    bond = summary["first_broken_bond"]
    assert bond["atoms"] == list(STRETCHED_BOND) and bond["elements"] == ["C", "H"]
    assert bond["length_angstrom"] - bond["reference_length_angstrom"] > 0.5
    assert bond["reference_length_angstrom"] == pytest.approx(
        np.linalg.norm(aspirin.positions_angstrom[14] - aspirin.positions_angstrom[0]))
    # the trajectory keeps its grid: frames at multiples of 20 steps up to the collapse
    n_frames = step // 20 + 1
    assert summary["frames_written"] == summary["state_rows_written"] == n_frames
    assert mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb")).n_frames == n_frames
    np.testing.assert_array_equal(read_state_csv(out / "state.csv")["step"], np.arange(n_frames) * 20)
    # the last 6 checked frames, every 2 steps, end with the collapsed one, where the bond is broken
    kept = summary["collapse_frames"]
    assert kept["file"] == "collapse_frames.dcd" and kept["steps"] == list(range(step - 10, step + 1, 2))
    frames = mdtraj.load(str(out / "collapse_frames.dcd"), top=str(out / "topology.pdb"))
    assert frames.n_frames == 6
    lengths = 10 * mdtraj.compute_distances(frames, [STRETCHED_BOND])[:, 0]
    assert lengths[-1] == pytest.approx(bond["length_angstrom"], abs=1e-4)
    deviations = np.abs(lengths - bond["reference_length_angstrom"])
    np.testing.assert_allclose(kept["max_bond_deviation_angstrom"], deviations, atol=1e-4)
    assert deviations[-1] > 0.5 >= deviations[-2]  # the approach to the collapse, finer than the 20-step frames
    assert all(e is not None and np.isfinite(e) for e in kept["potential_energy_kJ_per_mol"][-1:])
    # a collapsed run is finished: calling again, even with more steps, returns its summary
    assert run(models["blowup"], aspirin, out, cfg) == summary
    assert run(models["blowup"], aspirin, out, replace(cfg, steps=800)) == summary


@pytest.mark.parametrize("change, named", [
    ({"config": {"temperature_K": 400.0}}, "config.temperature_K"),
    ({"config": {"timestep_fs": 1.0}}, "config.timestep_fs"),
    ({"config": {"seed": 12}}, "config.seed"),
    ({"config": {"integrator": "nose_hoover"}}, "config.integrator"),
    ({"config": {"trajectory_format": "xtc"}}, "config.trajectory_format"),
    ({"config": {"min_nonbonded_distance_angstrom": 0.5}}, "config.min_nonbonded_distance_angstrom"),
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


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="monitor_interval_steps \\(15\\) must divide report_interval_steps \\(20\\)"):
        config(monitor_interval_steps=15)
    with pytest.raises(ValueError, match="integrator must be one of \\['langevin_middle', 'nose_hoover', 'verlet'\\]"):
        config(integrator="brownian")
    with pytest.raises(ValueError, match="trajectory_format must be one of"):
        config(trajectory_format="netcdf")
    with pytest.raises(ValueError, match="friction_per_ps must be >= 0 \\(> 0 for nose_hoover\\)"):
        config(integrator="nose_hoover", friction_per_ps=0.0)


# --- killed runs ----------------------------------------------------------------------------------

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


def start_child(models, aspirin, out: Path, cfg: SimulationConfig, kill_at_step: int = -1) -> subprocess.Popen:
    args = {"model": str(models["stable"]), "z": aspirin.atomic_numbers.tolist(),
            "positions": aspirin.positions_angstrom.tolist(), "out": str(out), "config": asdict(cfg),
            "kill_at_step": kill_at_step}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def final_positions(models, aspirin, out: Path, cfg: SimulationConfig) -> tuple[dict, np.ndarray]:
    """Run (or resume) to the end; the summary and the last reported positions in nm (float64)."""
    last = {}
    summary = run_simulation(models["stable"], aspirin.atomic_numbers, aspirin.positions_angstrom, out, cfg,
                             progress=False, on_report=lambda record: last.update(positions=record.positions_nm))
    return summary, last["positions"]


def load_trajectory(out: Path, cfg: SimulationConfig) -> mdtraj.Trajectory:
    path = out / {"dcd": "trajectory.dcd", "xtc": "trajectory.xtc", "hdf5": "trajectory.h5"}[cfg.trajectory_format]
    return mdtraj.load(str(path)) if path.suffix == ".h5" else mdtraj.load(str(path), top=str(out / "topology.pdb"))


def assert_same_run(models, aspirin, interrupted: Path, uninterrupted: Path, cfg: SimulationConfig) -> dict:
    """Finish the interrupted run, run the same config uninterrupted, and hold them to bitwise equality."""
    resumed, resumed_end = final_positions(models, aspirin, interrupted, cfg)
    reference, reference_end = final_positions(models, aspirin, uninterrupted, cfg)
    assert reference["resumed_from_step"] is None
    assert resumed["stable"] and resumed["steps_completed"] == cfg.steps
    n_rows = cfg.steps // cfg.report_interval_steps + 1
    states = read_state_csv(interrupted / "state.csv")
    np.testing.assert_array_equal(states["step"], np.arange(n_rows) * cfg.report_interval_steps)  # each row once, in order
    expected_states = read_state_csv(uninterrupted / "state.csv")
    for column in ("potential_energy_kJ_per_mol", "kinetic_energy_kJ_per_mol"):
        np.testing.assert_array_equal(states[column], expected_states[column])
    traj, expected = load_trajectory(interrupted, cfg), load_trajectory(uninterrupted, cfg)
    assert traj.n_frames == expected.n_frames == resumed["frames_written"] == n_rows  # each frame once, in order
    np.testing.assert_array_equal(traj.xyz, expected.xyz)
    if resumed["resumed_from_step"] is not None and resumed["resumed_from_step"] < cfg.steps:
        assert resumed_end is not None
    np.testing.assert_array_equal(resumed_end, reference_end)  # the final positions, float64, bit for bit
    return resumed


def test_run_killed_after_a_checkpoint_resumes_with_every_frame_once_and_the_same_trajectory(aspirin, models, tmp_path):
    cfg = config(steps=300, report_interval_steps=10, checkpoint_interval_steps=100)
    interrupted = tmp_path / "interrupted"
    child = start_child(models, aspirin, interrupted, cfg, kill_at_step=150)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    # killed at step 150: the committed checkpoint is step 100, but frames and rows up to 150 are on disk
    assert json.loads((interrupted / "checkpoint.json").read_text())["step"] == 100
    assert not (interrupted / "summary.json").exists()
    assert read_state_csv(interrupted / "state.csv")["step"][-1] == 150
    assert mdtraj.load(str(interrupted / "trajectory.dcd"), top=str(interrupted / "topology.pdb")).n_frames == 16
    resumed = assert_same_run(models, aspirin, interrupted, tmp_path / "uninterrupted", cfg)
    assert resumed["resumed_from_step"] == 100 and resumed["steps_this_session"] == 200


def _rows(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n") - 1
    except FileNotFoundError:
        return -1


@pytest.mark.slow
@pytest.mark.parametrize("platform, fmt, seed", [("Reference", "dcd", 1), ("CPU", "xtc", 2), ("CPU", "hdf5", 3)])
def test_run_killed_at_a_random_moment_resumes_to_the_uninterrupted_result(aspirin, models, tmp_path, platform, fmt, seed):
    if fmt == "hdf5":
        pytest.importorskip("tables", reason="mdtraj's HDF5 format needs PyTables (pip install tables)")
    cfg = config(platform=platform, trajectory_format=fmt, steps=400, report_interval_steps=10,
                 checkpoint_interval_steps=40)
    interrupted = tmp_path / "interrupted"
    rng = np.random.default_rng(seed)
    kill_after_row = int(rng.integers(5, 32))  # of 41 rows: anywhere from the first checkpoint to well before the end
    delay_s = float(rng.uniform(0.0, 0.004))  # then a moment that falls anywhere in stepping, writing or checkpointing
    child = start_child(models, aspirin, interrupted, cfg)
    try:
        deadline = time.monotonic() + 120
        while _rows(interrupted / "state.csv") < kill_after_row:
            assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        time.sleep(delay_s)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not (interrupted / "summary.json").exists()
    checkpoint_step = json.loads((interrupted / "checkpoint.json").read_text())["step"]
    assert 0 <= checkpoint_step < cfg.steps
    resumed = assert_same_run(models, aspirin, interrupted, tmp_path / "uninterrupted", cfg)
    assert resumed["resumed_from_step"] == checkpoint_step


def test_pythonforce_backend_follows_the_torchforce_trajectory(aspirin, models, tmp_path):
    cfg = config(steps=60, report_interval_steps=20)
    torchforce = run(models["stable"], aspirin, tmp_path / "torchforce", cfg)
    pythonforce = run(models["stable"], aspirin, tmp_path / "pythonforce", replace(cfg, backend="pythonforce"))
    assert torchforce["stable"] and pythonforce["stable"] and pythonforce["backend"] == "pythonforce"
    a = read_state_csv(tmp_path / "torchforce" / "state.csv")
    b = read_state_csv(tmp_path / "pythonforce" / "state.csv")
    np.testing.assert_allclose(b["potential_energy_kJ_per_mol"], a["potential_energy_kJ_per_mol"], rtol=1e-8)


def test_openmm_reporters_of_ones_own_are_called_on_schedule(aspirin, models, tmp_path):
    """run_simulation runs on openmm.app.Simulation: a StateDataReporter of the user's reports every 25 steps,
    and openmlff's own writers are OpenMM reporters too (the same frames as before)."""
    import io

    import openmm.app as app

    from openmlff.md import MonitorReporter, StateCSVReporter, TrajectoryWriter

    log = io.StringIO()
    calls = []

    class Counter:
        def describeNextReport(self, simulation):
            return {"steps": 30 - simulation.currentStep % 30, "periodic": False, "include": ["positions"]}

        def report(self, simulation, state):
            calls.append(simulation.currentStep)

    summary = run(models["stable"], aspirin, tmp_path / "run", config(steps=200),
                  reporters=[app.StateDataReporter(log, 25, step=True, potentialEnergy=True), Counter()])
    assert summary.stable and summary.steps_completed == 200 and summary["stable"] is True
    rows = [line for line in log.getvalue().splitlines() if not line.startswith("#")]
    assert [int(r.split(",")[0]) for r in rows] == list(range(25, 201, 25))
    assert calls == list(range(30, 201, 30))
    assert summary.frames_written == 11 and summary.state_rows_written == 11  # steps 0, 20, ..., 200
    for cls in (StateCSVReporter, TrajectoryWriter, MonitorReporter):
        assert callable(getattr(cls, "describeNextReport")) and callable(getattr(cls, "report"))


def test_run_summary_round_trips_and_reads_like_the_json(aspirin, models, tmp_path):
    from openmlff.md import RunDirectory, RunSummary

    summary = run(models["stable"], aspirin, tmp_path / "run", config(steps=40))
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary == on_disk and dict(summary) == on_disk and set(summary) == set(on_disk)
    assert RunSummary.from_json(tmp_path / "run" / "summary.json") == summary
    assert RunDirectory(tmp_path / "run").read_summary().ns_per_day == summary.ns_per_day
    with pytest.raises(ValueError, match="not a run summary"):
        RunSummary.from_dict({"steps_completed": 3}, "x.json")


def test_own_reporters_see_the_collapsed_step_before_the_monitor_stops_the_run(aspirin, models, tmp_path):
    """A reporter that wants no positions (StateDataReporter asks for energy only) is still called before the
    monitor at the step where the run collapses: OpenMM would otherwise call it after the monitor, never."""
    seen = []

    class EnergyOnly:
        def describeNextReport(self, simulation):
            return {"steps": 5 - simulation.currentStep % 5, "periodic": None, "include": ["energy"]}

        def report(self, simulation, state):
            seen.append(simulation.currentStep)

    cfg = config(steps=400, report_interval_steps=10, monitor_interval_steps=5)
    summary = run(models["blowup"], aspirin, tmp_path / "run", cfg, reporters=[EnergyOnly()])
    assert not summary.stable and summary.collapse_step % 5 == 0
    assert seen[-1] == summary.collapse_step
