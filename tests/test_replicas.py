"""Replicas in one Context (openmlff/md/replicas.py): same forces as the molecule alone, a batch of one is the lone
run, deterministic dynamics match the lone run, a collapse ends one copy only, and a resumed batch equals an
uninterrupted one."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import openmm
import pytest

from openmlff.md import SimulationConfig, read_state_csv, run_simulation
from openmlff.md.replicas import run_replicas
from openmlff.core.resume import ResumeMismatchError
from openmlff.potentials.exported import build_replica_system, build_system, write_replica_module


def _forces(system, positions_nm):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions_nm)
    state = context.getState(getForces=True, getEnergy=True)
    return state.getPotentialEnergy()._value, np.asarray(state.getForces(asNumpy=True)._value)


def _starts(aspirin, n, scale=0.03, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([aspirin.positions_angstrom + rng.normal(0, scale, aspirin.positions_angstrom.shape)
                     for _ in range(n)])


def test_copy_forces_equal_the_molecule_alone(aspirin, tmp_path, test_data):
    """A real openmlff export (untrained ET, its own neighbour list): copies 3 Å apart, so pairs across copies would
    be inside the cutoff if the batch let them cross."""
    from untrained_model import write_untrained_et

    from openmlff.data import load_dataset

    dataset = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")
    model = write_untrained_et(tmp_path / "et.pt", dataset)
    wrapper = write_replica_module(model, dataset.n_atoms, tmp_path / "replicas.pt")
    starts = _starts(aspirin, 3) + np.arange(3)[:, None, None] * np.array([3.0, 0.0, 0.0])
    energy, forces = _forces(build_replica_system(dataset.z, wrapper, 3), starts.reshape(-1, 3) / 10.0)
    forces = forces.reshape(3, -1, 3)
    alone = [_forces(build_system(dataset.z, model), s / 10.0) for s in starts]
    np.testing.assert_allclose(forces, np.stack([f for _, f in alone]), rtol=1e-4, atol=1e-3)
    assert energy == pytest.approx(sum(e for e, _ in alone), rel=1e-6)


def _config(**overrides):
    return SimulationConfig(**{"temperature_K": 300, "steps": 400, "seed": 3, "report_interval_steps": 50,
                               "monitor_interval_steps": 10, "checkpoint_interval_steps": 200, "torch_threads": 1,
                               **overrides})


def test_batch_of_one_is_the_lone_run(aspirin, toy_model, tmp_path):
    cfg = _config()
    run_replicas(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom[None], tmp_path / "batch", cfg,
                 progress=False)
    run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "lone", cfg, progress=False)
    batch = read_state_csv(tmp_path / "batch" / "replica_000" / "state.csv")
    lone = read_state_csv(tmp_path / "lone" / "state.csv")
    for column in ("potential_energy_kJ_per_mol", "kinetic_energy_kJ_per_mol"):
        assert np.array_equal(batch[column], lone[column])


def test_verlet_replicas_follow_their_lone_runs(aspirin, toy_model, tmp_path):
    """Without thermostat noise a copy in a batch is its lone run (same seed draws the same velocities)."""
    cfg = _config(integrator="verlet")
    starts = _starts(aspirin, 3)
    summaries = run_replicas(toy_model, aspirin.atomic_numbers, starts, tmp_path / "batch", cfg, seeds=[5, 6, 7],
                             progress=False)
    assert all(s.stable and s.steps_completed == 400 for s in summaries)
    for k, seed in enumerate([5, 6, 7]):
        lone_dir = tmp_path / f"lone{k}"
        run_simulation(toy_model, aspirin.atomic_numbers, starts[k], lone_dir, _config(integrator="verlet", seed=seed),
                       progress=False)
        batch, lone = read_state_csv(tmp_path / "batch" / f"replica_{k:03d}" / "state.csv"), read_state_csv(
            lone_dir / "state.csv")
        np.testing.assert_allclose(batch["total_energy_kJ_per_mol"], lone["total_energy_kJ_per_mol"], atol=1e-6)
        np.testing.assert_allclose(batch["temperature_K"], lone["temperature_K"], atol=1e-6)
    record = json.loads((tmp_path / "batch" / "replica_001" / "run.json").read_text())
    assert record["replicas"] == {"batch_directory": "..", "index": 1, "count": 3}
    assert record["config"]["seed"] == 6


def test_a_collapse_ends_one_copy_and_the_batch_goes_on(aspirin, toy_model, tmp_path):
    starts = _starts(aspirin, 3, scale=0.01)
    from openmlff.core import elements

    # stretch the first bond of copy 1 by 1.5 Å: it flies apart within a few checks
    i, j = elements.find_bonds(aspirin.atomic_numbers, aspirin.positions_angstrom)[0]
    direction = starts[1, j] - starts[1, i]
    starts[1, j] += 1.5 * direction / np.linalg.norm(direction)
    summaries = run_replicas(toy_model, aspirin.atomic_numbers, starts, tmp_path / "batch", _config(),
                             reference_positions_angstrom=aspirin.positions_angstrom[None], progress=False)
    assert [s.stable for s in summaries] == [True, False, True]
    assert summaries[1].collapse_step < 400 and summaries[1].collapse_reason is not None  # mid-run: a rebuild
    assert summaries[0].steps_completed == summaries[2].steps_completed == 400
    document = json.loads((tmp_path / "batch" / "checkpoint.json").read_text())
    assert document["active"] == [0, 2] and document["rebuilds"] == 1
    with pytest.raises(ResumeMismatchError):  # a member resumes only through its batch
        run_simulation(toy_model, aspirin.atomic_numbers, starts[0], tmp_path / "batch" / "replica_000", _config(),
                       reference_positions_angstrom=aspirin.positions_angstrom[None], progress=False)


def test_a_batch_whose_copies_all_collapsed_is_not_run_again(aspirin, toy_model, tmp_path):
    from openmlff.core import elements

    starts = _starts(aspirin, 2, scale=0.01)
    i, j = elements.find_bonds(aspirin.atomic_numbers, aspirin.positions_angstrom)[0]
    starts[:, j] += 1.5 * (starts[:, j] - starts[:, i]) / np.linalg.norm(starts[:, j] - starts[:, i], axis=1)[:, None]
    args = (toy_model, aspirin.atomic_numbers, starts, tmp_path / "batch", _config())
    first = run_replicas(*args, reference_positions_angstrom=aspirin.positions_angstrom[None], progress=False)
    assert not any(s.stable for s in first)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "batch").rglob("*") if p.is_file() and ".lock" not in p.name
             and p.name != "replicas_model.pt"}
    again = run_replicas(*args, reference_positions_angstrom=aspirin.positions_angstrom[None], progress=False)
    assert [s.collapse_step for s in again] == [s.collapse_step for s in first]
    assert {p: p.stat().st_mtime_ns for p in files} == files


def test_a_resumed_batch_equals_an_uninterrupted_one(aspirin, toy_model, tmp_path):
    starts = _starts(aspirin, 2)
    run_replicas(toy_model, aspirin.atomic_numbers, starts, tmp_path / "whole", _config(), progress=False)
    run_replicas(toy_model, aspirin.atomic_numbers, starts, tmp_path / "parts", _config(steps=200), progress=False)
    summaries = run_replicas(toy_model, aspirin.atomic_numbers, starts, tmp_path / "parts", _config(), progress=False)
    assert [s.steps_completed for s in summaries] == [400, 400] and summaries[0].resumed_from_step == 200
    for k in range(2):
        whole = read_state_csv(tmp_path / "whole" / f"replica_{k:03d}" / "state.csv")
        parts = read_state_csv(tmp_path / "parts" / f"replica_{k:03d}" / "state.csv")
        for column in ("step", "potential_energy_kJ_per_mol", "kinetic_energy_kJ_per_mol"):
            assert np.array_equal(whole[column], parts[column]), column


def test_minimised_replicas_start_where_their_lone_runs_start(aspirin, toy_model, tmp_path):
    cfg = _config(integrator="verlet", minimize=True, steps=100)
    starts = _starts(aspirin, 2, scale=0.05)
    run_replicas(toy_model, aspirin.atomic_numbers, starts, tmp_path / "batch", cfg, seeds=[1, 2], progress=False)
    run_simulation(toy_model, aspirin.atomic_numbers, starts[1], tmp_path / "lone", _config(
        integrator="verlet", minimize=True, steps=100, seed=2), progress=False)
    batch = json.loads((tmp_path / "batch" / "replica_001" / "run.json").read_text())["minimization"]
    lone = json.loads((tmp_path / "lone" / "run.json").read_text())["minimization"]
    assert batch["potential_energy_after_kJ_per_mol"] == lone["potential_energy_after_kJ_per_mol"]
    np.testing.assert_allclose(read_state_csv(tmp_path / "batch" / "replica_001" / "state.csv")["total_energy_kJ_per_mol"],
                               read_state_csv(tmp_path / "lone" / "state.csv")["total_energy_kJ_per_mol"], atol=1e-6)


@pytest.mark.slow
def test_langevin_copies_sample_the_ensemble_of_lone_runs(aspirin, toy_model, tmp_path):
    """Same physics: 6 copies of one batch against 6 lone runs of the same seeds (Langevin, 400 K): per-run means of
    the temperature and the potential energy agree between the two groups (Welch's t-test), both sit at the
    equipartition temperature, and the pooled distributions agree (two-sample Kolmogorov-Smirnov on decorrelated
    samples). The test can fail: a batch whose copies shared one noise stream, or a thermostat coupled to the
    whole System rather than each particle, or one with the wrong temperature, is refused by these checks."""
    from scipy import stats

    n, seeds = 6, [11, 12, 13, 14, 15, 16]
    cfg = _config(temperature_K=400, steps=6000, report_interval_steps=50, checkpoint_interval_steps=6000,
                  friction_per_ps=5.0)  # the start (at the minimum, kinetic energy only) is forgotten in ~0.2 ps
    starts = _starts(aspirin, n, scale=0.01)
    run_replicas(toy_model, aspirin.atomic_numbers, starts, tmp_path / "batch", cfg, seeds=seeds, progress=False)
    for k, seed in enumerate(seeds):
        run_simulation(toy_model, aspirin.atomic_numbers, starts[k], tmp_path / f"lone{k}", replace(cfg, seed=seed),
                       progress=False)
    burn_in = 20  # rows (1000 steps, 0.5 ps)
    batch = [read_state_csv(tmp_path / "batch" / f"replica_{k:03d}" / "state.csv") for k in range(n)]
    lone = [read_state_csv(tmp_path / f"lone{k}" / "state.csv") for k in range(n)]
    for column in ("temperature_K", "potential_energy_kJ_per_mol"):
        batch_means = [rows[column][burn_in:].mean() for rows in batch]
        lone_means = [rows[column][burn_in:].mean() for rows in lone]
        assert stats.ttest_ind(batch_means, lone_means, equal_var=False).pvalue > 1e-3, (column, batch_means, lone_means)
        pooled_batch = np.concatenate([rows[column][burn_in::4] for rows in batch])
        pooled_lone = np.concatenate([rows[column][burn_in::4] for rows in lone])
        assert stats.ks_2samp(pooled_batch, pooled_lone).pvalue > 1e-3, column
    for group in (batch, lone):  # equipartition: <T> = 400 K within a few per cent (21 atoms, 63 degrees of freedom)
        assert np.mean([rows["temperature_K"][burn_in:].mean() for rows in group]) == pytest.approx(400, rel=0.04)
    assert not any(np.array_equal(batch[0]["temperature_K"], rows["temperature_K"]) for rows in batch[1:])
