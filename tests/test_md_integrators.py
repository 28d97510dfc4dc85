"""openmlff.md.integrators through run_simulation: Verlet conserves energy, Nosé–Hoover holds the temperature,
and every integrator resumes from its checkpoint exactly (real OpenMM on the Reference platform, toy model)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from openmlff.md import INTEGRATORS, SimulationConfig, make_integrator, read_state_csv, run_simulation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_models import write_toy_model  # noqa: E402


def config(**changes) -> SimulationConfig:
    base = SimulationConfig(temperature_K=300.0, timestep_fs=0.5, steps=200, seed=5, platform="Reference",
                            report_interval_steps=20, monitor_interval_steps=10, checkpoint_interval_steps=1000,
                            torch_threads=1)
    return replace(base, **changes)


def run(toy_model, aspirin, out, cfg, on_report=None) -> dict:
    return run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, out, cfg,
                          topology=aspirin.topology, progress=False, on_report=on_report)


def test_verlet_conserves_total_energy(toy_model, aspirin, tmp_path):
    # 2000 steps of 0.25 fs (0.5 ps, ~40 periods of the fastest C-H vibration, ~13 fs)
    summary = run(toy_model, aspirin, tmp_path / "nve", config(integrator="verlet", timestep_fs=0.25, steps=2000))
    assert summary["stable"] and summary["integrator"] == "verlet"
    states = read_state_csv(tmp_path / "nve" / "state.csv")
    total, kinetic = states["total_energy_kJ_per_mol"], states["kinetic_energy_kJ_per_mol"]
    # energy flows between kinetic and potential (the start is the potential's minimum) ...
    assert kinetic.max() - kinetic.min() > 30.0
    # ... while the total stays within 0.25 kJ/mol of its start, 0.5 % of the mean kinetic energy (measured: 0.12)
    assert np.abs(total - total[0]).max() < 0.25
    assert np.abs(total - total[0]).max() < 0.005 * kinetic.mean()
    record = json.loads((tmp_path / "nve" / "run.json").read_text())
    assert record["integrator"]["openmm_class"] == "VerletIntegrator" and record["integrator"]["ensemble"] == "NVE"


def test_langevin_does_not_conserve_energy_which_the_verlet_bound_would_catch(toy_model, aspirin, tmp_path):
    run(toy_model, aspirin, tmp_path / "nvt", config(timestep_fs=0.25, steps=400, friction_per_ps=5.0))
    total = read_state_csv(tmp_path / "nvt" / "state.csv")["total_energy_kJ_per_mol"]
    assert np.abs(total - total[0]).max() > 1.0


def test_nose_hoover_holds_the_target_temperature(toy_model, aspirin, tmp_path):
    # Verlet from the same start settles near 230 K (measured): half the initial kinetic energy goes into the
    # springs. The Nosé-Hoover chain (collision frequency 20/ps) brings it back to 300 K.
    summary = run(toy_model, aspirin, tmp_path / "nh", config(integrator="nose_hoover", friction_per_ps=20.0, steps=3000))
    assert summary["stable"] and summary["integrator"] == "nose_hoover"
    temperature = read_state_csv(tmp_path / "nh" / "state.csv")["temperature_K"]
    second_half = temperature[len(temperature) // 2:]
    assert abs(second_half.mean() - 300.0) < 30.0, second_half.mean()
    record = json.loads((tmp_path / "nh" / "run.json").read_text())
    assert record["integrator"]["openmm_class"] == "NoseHooverIntegrator"


@pytest.mark.parametrize("integrator", list(INTEGRATORS))
def test_each_integrator_resumes_from_its_checkpoint_exactly(toy_model, aspirin, tmp_path, integrator):
    """A run stopped at step 100 and extended to 200 equals a straight 200-step run: the checkpoint carries
    the whole integrator state (Langevin random numbers, the Nosé–Hoover chain)."""
    cfg = config(integrator=integrator, friction_per_ps=10.0)
    last = {}

    def keep(name):
        return lambda record: last.update({name: record.positions_nm})

    run(toy_model, aspirin, tmp_path / "resumed", replace(cfg, steps=100))
    resumed = run(toy_model, aspirin, tmp_path / "resumed", cfg, on_report=keep("resumed"))
    assert resumed["resumed_from_step"] == 100
    run(toy_model, aspirin, tmp_path / "straight", cfg, on_report=keep("straight"))
    np.testing.assert_array_equal(last["resumed"], last["straight"])  # float64 positions at step 200, bit for bit
    a, b = read_state_csv(tmp_path / "resumed" / "state.csv"), read_state_csv(tmp_path / "straight" / "state.csv")
    np.testing.assert_array_equal(a["step"], np.arange(0, 201, 20))
    for column in ("potential_energy_kJ_per_mol", "kinetic_energy_kJ_per_mol"):
        np.testing.assert_array_equal(a[column], b[column])
    xyz = [mdtraj.load(str(tmp_path / d / "trajectory.dcd"), top=str(tmp_path / d / "topology.pdb")).xyz
           for d in ("resumed", "straight")]
    np.testing.assert_array_equal(xyz[0], xyz[1])


def test_nose_hoover_chain_state_is_in_the_checkpoint(toy_model, aspirin):
    """Directly: the heat bath's energy after loading a checkpoint is the one it had when the checkpoint was made."""
    import openmm

    from openmlff.md import build_system, select_platform

    platform, properties = select_platform("Reference")
    contexts = []
    for _ in range(2):
        integrator = make_integrator("nose_hoover", 300.0, 20.0, 0.5, seed=1)
        contexts.append((openmm.Context(build_system(aspirin.atomic_numbers, toy_model), integrator, platform, properties),
                         integrator))
    (first, first_integrator), (second, second_integrator) = contexts
    first.setPositions(aspirin.positions_angstrom / 10)
    first.setVelocitiesToTemperature(300.0, 1)
    first_integrator.step(200)
    bath = first_integrator.computeHeatBathEnergy()
    assert abs(bath._value) > 1e-3  # the chain has moved
    second.loadCheckpoint(first.createCheckpoint())
    assert second_integrator.computeHeatBathEnergy() == bath


def test_make_integrator_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown integrator 'brownian'"):
        make_integrator("brownian", 300.0, 1.0, 0.5, seed=1)
