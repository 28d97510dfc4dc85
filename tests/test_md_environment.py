"""Periodic and solvated MD (openmlff/md/environment.py): `--solvate` mixed ML/MM runs, NPT, boxes from PDB files,
the monitor on the molecule only, bit-identical resume, the amber14 control, and the analysis with or without water.

Real OpenMM Contexts with PME and rigid TIP3P-FB water around Ac-Ala3-NHMe; the ML part is a stable toy model
(tests/toy_models.py) or a tiny untrained ET (for the box handed to a real model's neighbour list).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest
from openmm import app, unit

pytest.importorskip("openmmml")

from openmlff.core.errors import InputError  # noqa: E402
from openmlff.md import SimulationConfig  # noqa: E402
from openmlff.md.state_table import read_state_csv  # noqa: E402
from openmlff.md.start import run_from_structure  # noqa: E402
from openmlff.structures import load_structure  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_models import write_toy_model  # noqa: E402

#: A small box: Modeller's padding 0.6 nm (edge 1.51 nm, about 70 waters), the PME cutoff below half its edge with
#: room for NPT.
SOLVATED = dict(timestep_fs=0.5, report_interval_steps=20, monitor_interval_steps=10, solvate_padding_nm=0.6,
                nonbonded_cutoff_nm=0.65)


@pytest.fixture(scope="module")
def peptide():
    return load_structure("ac-ala3-nhme")


@pytest.fixture(scope="module")
def peptide_toy(peptide, tmp_path_factory):
    return write_toy_model(tmp_path_factory.mktemp("env") / "ala3_toy.pt", peptide.atomic_numbers,
                           peptide.positions_angstrom)


@pytest.fixture(scope="module")
def npt_run(peptide_toy, tmp_path_factory):
    """The toy model on the peptide in water, NPT at 1 bar (box moves every 5 steps), 200 steps."""
    out = tmp_path_factory.mktemp("env") / "npt"
    config = SimulationConfig(steps=200, pressure_bar=1.0, barostat_interval_steps=5, checkpoint_interval_steps=50,
                              **SOLVATED)
    return out, config, run_from_structure(peptide_toy, "ac-ala3-nhme", out, config, progress=False)


def test_solvated_npt_run_is_mixed_and_watches_the_molecule(npt_run, peptide):
    out, config, summary = npt_run
    assert summary.stable and summary.steps_completed == 200
    record = json.loads((out / "run.json").read_text())
    env = record["environment"]
    assert env["kind"] == "solvated" and env["n_waters"] > 50 and env["n_ions"] == 0  # the peptide is neutral
    assert env["n_atoms"] == peptide.n_atoms + 3 * env["n_waters"]
    assert env["ml_atoms"] == list(range(peptide.n_atoms))
    assert env["force_field"] == ["amber14-all.xml", "amber14/tip3pfb.xml"] and env["pressure_bar"] == 1.0
    relax = env["solvent_relaxation"]  # Modeller's overlapping waters were relaxed around the fixed molecule
    assert relax["mm_energy_after_kJ_per_mol"] < relax["mm_energy_before_kJ_per_mol"] - 1000
    assert record["structure"]["atomic_numbers"] == peptide.atomic_numbers.tolist()
    np.testing.assert_allclose(record["structure"]["positions_angstrom"], peptide.positions_angstrom)
    # the monitor sees the peptide's 41 bonds, not the waters' (rigid, SETTLE)
    assert summary.bonds_monitored == len(peptide.bonds()) == 41
    traj = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    assert traj.n_atoms == env["n_atoms"] and traj.n_frames == 11
    assert traj.unitcell_lengths is not None
    assert not np.allclose(traj.unitcell_lengths[0], traj.unitcell_lengths[-1])  # the barostat moved the box
    np.testing.assert_allclose(traj.unitcell_lengths[0], np.diag(env["box_nm"]), rtol=1e-6)
    # water stays rigid at TIP3P-FB's O-H length (0.101181 nm in amber14/tip3pfb.xml)
    waters = [r for r in traj.topology.residues if r.is_water]
    o, h = waters[0].atom(0).index, waters[0].atom(1).index
    np.testing.assert_allclose(mdtraj.compute_distances(traj, [[o, h]])[:, 0], 0.101181, atol=2e-5)
    temperature = read_state_csv(out / "state.csv")["temperature_K"]
    # the whole box's temperature with rigid water's degrees of freedom: 3N - 3 per water - 3 (COM remover)
    assert 150 < temperature[0] < 450 and np.all(temperature < 600)


def test_ml_force_is_the_model_on_the_molecule(npt_run, peptide_toy, peptide):
    """The run's System rebuilt from its files: the openmlff force alone equals the model on the peptide's atoms."""
    out, config, _ = npt_run
    from openmlff.md import build_system
    from openmlff.md.environment import build_environment_system, prepare_environment
    from openmlff.potentials import get_potential
    from openmlff.structures import read_structure_file

    start = read_structure_file(out / "topology.pdb")
    env = prepare_environment(start, replace(config, solvate_padding_nm=None))
    assert env.kind == "solvated" and env.ml_atoms.tolist() == list(range(peptide.n_atoms))
    system = build_environment_system(get_potential(peptide_toy), env, replace(config, pressure_bar=None))
    for force in system.getForces():
        force.setForceGroup(31 if force.getName().startswith("openmlff model") else 0)
    cpu = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), cpu)
    context.setPositions(env.positions_angstrom / 10.0)
    state = context.getState(getEnergy=True, getForces=True, groups={31})
    alone = openmm.Context(build_system(peptide.atomic_numbers, peptide_toy), openmm.VerletIntegrator(0.0005), cpu)
    alone.setPositions(env.positions_angstrom[:peptide.n_atoms] / 10.0)
    expected = alone.getState(getEnergy=True, getForces=True)
    assert state.getPotentialEnergy()._value == pytest.approx(expected.getPotentialEnergy()._value, rel=1e-9)
    forces = state.getForces(asNumpy=True)._value
    np.testing.assert_allclose(forces[:peptide.n_atoms], expected.getForces(asNumpy=True)._value, rtol=1e-6, atol=1e-6)
    assert np.abs(forces[peptide.n_atoms:]).max() == 0
    # the peptide's own amber14 bonds are gone (openmm-ml removes MM terms inside the ML region)
    bonds = next(f for f in system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    assert all(bonds.getBondParameters(k)[0] >= peptide.n_atoms for k in range(bonds.getNumBonds()))


def test_solvated_npt_run_resumes_bit_identical(npt_run, peptide_toy, tmp_path):
    """100 steps, then extended to 200 in a new session (checkpoint, barostat and all): the same rows and frames."""
    out, config, _ = npt_run
    split = tmp_path / "split"
    split.mkdir()
    # a run keeps its relaxed start (solvated_start.npz) for its later sessions: the split run gets the whole one's
    (split / "solvated_start.npz").write_bytes((out / "solvated_start.npz").read_bytes())
    run_from_structure(peptide_toy, "ac-ala3-nhme", split, replace(config, steps=100),
                       progress=False)
    summary = run_from_structure(peptide_toy, "ac-ala3-nhme", split, config,
                                 progress=False)
    assert summary.resumed_from_step == 100 and summary.stable
    assert json.loads((split / "run.json").read_text())["platform"]["properties_requested"]["DeterministicForces"] \
        == "true"
    whole, parts = read_state_csv(out / "state.csv"), read_state_csv(split / "state.csv")
    for column in ("step", "potential_energy_kJ_per_mol", "kinetic_energy_kJ_per_mol"):
        np.testing.assert_array_equal(whole[column], parts[column])
    a = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    b = mdtraj.load(str(split / "trajectory.dcd"), top=str(split / "topology.pdb"))
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.unitcell_lengths, b.unitcell_lengths)


def test_collapse_in_water_names_the_molecules_bond(peptide, tmp_path):
    """A model that blows one C-H bond apart: the monitor (on the molecule only) names it; collapse frames hold the
    molecule."""
    bond = next((i, j) for i, j in peptide.bonds() if {peptide.atomic_numbers[i], peptide.atomic_numbers[j]} == {1, 6})
    model = write_toy_model(tmp_path / "bad.pt", peptide.atomic_numbers, peptide.positions_angstrom,
                            stretch_bond=tuple(int(a) for a in bond))
    summary = run_from_structure(model, "ac-ala3-nhme", tmp_path / "run", SimulationConfig(steps=400, **SOLVATED),
                                 progress=False)
    assert not summary.stable and summary.collapse_reason == "bond_deviation"
    assert sorted(summary.first_broken_bond["atoms"]) == sorted(int(a) for a in bond)
    from openmlff.md.dcd import read_dcd_layout

    assert read_dcd_layout(tmp_path / "run" / "collapse_frames.dcd").n_atoms == peptide.n_atoms  # the molecule's
    from openmlff.analysis import load_run

    run = load_run(tmp_path / "run")  # the molecule's trajectory, then its collapse frames
    assert run.trajectory.n_atoms == peptide.n_atoms and run.frame_steps[-1] == summary.collapse_step


def test_amber14_control_in_the_same_box(npt_run, tmp_path):
    """`--model amber14 --solvate`: the same box all-MM (the classical control); the peptide keeps its bonds."""
    _, config, _ = npt_run
    summary = run_from_structure("amber14", "ac-ala3-nhme", tmp_path / "mm", replace(config, steps=100),
                                 progress=False)
    assert summary.stable
    record = json.loads((tmp_path / "mm" / "run.json").read_text())
    assert record["model"]["kind"] == "classical" and record["environment"]["kind"] == "solvated"
    assert record["torchforce_properties"] is None  # no model force in the System


def test_solvated_pdb_file_runs_as_given(npt_run, peptide_toy, tmp_path):
    """A PDB with CRYST1 and waters: solvated from the file (no relaxation), the molecule found as the non-water."""
    out, config, _ = npt_run
    summary = run_from_structure(peptide_toy, out / "topology.pdb", tmp_path / "from_pdb",
                                 replace(config, solvate_padding_nm=None, pressure_bar=None, steps=40), progress=False)
    env = json.loads((tmp_path / "from_pdb" / "run.json").read_text())["environment"]
    assert summary.stable and env["kind"] == "solvated" and env["solvent_relaxation"] is None
    assert env["ml_atoms"] == list(range(42)) and env["pressure_bar"] is None
    original = json.loads((out / "run.json").read_text())["environment"]
    np.testing.assert_allclose(env["box_nm"], original["box_nm"], atol=1e-4)  # CRYST1 keeps 0.001 Å


def test_periodic_molecule_split_by_the_box_is_made_whole(tmp_path, test_data):
    """A molecule wrapped into its box in pieces (a PDB with CRYST1): the model (a real ET, whose neighbour list takes
    minimum images) gives the energy of the whole molecule in vacuum, and the monitor finds every bond."""
    from openmlff.data import load_dataset
    from openmlff.md import build_system
    from untrained_model import write_untrained_et

    dataset = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")
    model = write_untrained_et(tmp_path / "et.pt", dataset)
    aspirin = load_structure("aspirin")
    edge_angstrom = 25.0
    shifted = aspirin.positions_angstrom - aspirin.positions_angstrom.mean(axis=0)  # centred on a box corner
    wrapped = shifted % edge_angstrom
    assert np.ptp(wrapped, axis=0).max() > 20  # really in pieces
    topology = app.Topology()
    topology.setPeriodicBoxVectors(np.eye(3) * edge_angstrom / 10.0 * unit.nanometer)
    residue = topology.addResidue("MOL", topology.addChain())
    atoms = [topology.addAtom(f"{a.element.symbol}{a.index}", a.element, residue) for a in aspirin.topology.atoms()]
    for bond in aspirin.topology.bonds():
        topology.addBond(atoms[bond[0].index], atoms[bond[1].index])
    pdb = tmp_path / "boxed.pdb"
    with open(pdb, "w") as handle:
        app.PDBFile.writeFile(topology, wrapped / 10.0 * unit.nanometer, handle)
    summary = run_from_structure(model, pdb, tmp_path / "run", SimulationConfig(steps=20, report_interval_steps=10),
                                 progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["environment"]["kind"] == "periodic" and summary.bonds_monitored == len(aspirin.bonds())
    start = np.asarray(record["structure"]["positions_angstrom"])
    assert np.ptp(start, axis=0).max() < 10  # whole again
    vacuum = openmm.Context(build_system(aspirin.atomic_numbers, model), openmm.VerletIntegrator(0.0005),
                            openmm.Platform.getPlatformByName("CPU"))
    vacuum.setPositions(start / 10.0)
    expected = vacuum.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    first = read_state_csv(tmp_path / "run" / "state.csv")["potential_energy_kJ_per_mol"][0]
    assert first == pytest.approx(expected, rel=1e-6)
    assert summary.steps_completed == 20


@pytest.mark.slow
def test_bad_environment_options_are_refused(peptide_toy, toy_model, aspirin, tmp_path):
    with pytest.raises(InputError, match="amber14"):  # no ff14SB template for aspirin: no ML/MM coupling
        run_from_structure(toy_model, "aspirin", tmp_path / "a", SimulationConfig(steps=10, solvate_padding_nm=0.6),
                           progress=False)
    with pytest.raises(InputError, match="periodic system"):
        run_from_structure(peptide_toy, "ac-ala3-nhme", tmp_path / "b", SimulationConfig(steps=10, pressure_bar=1.0),
                           progress=False)
    with pytest.raises(InputError, match="hdf5"):
        run_from_structure(peptide_toy, "ac-ala3-nhme", tmp_path / "c",
                           SimulationConfig(steps=10, trajectory_format="hdf5", **SOLVATED), progress=False)
    with pytest.raises(InputError, match="too small for a PME cutoff"):  # a 1.51 nm box: twice 0.7 nm + 10 % for NPT
        run_from_structure(peptide_toy, "ac-ala3-nhme", tmp_path / "d",
                           SimulationConfig(steps=10, **{**SOLVATED, "nonbonded_cutoff_nm": 0.7}, pressure_bar=1.0),
                           progress=False)
    with pytest.raises(Exception, match="pressure_bar"):
        SimulationConfig(pressure_bar=1.0, integrator="verlet")
    from openmlff.md.replicas import run_replicas

    with pytest.raises(InputError, match="vacuum"):
        run_replicas(toy_model, aspirin.atomic_numbers, np.stack([aspirin.positions_angstrom] * 2), tmp_path / "r",
                     SimulationConfig(steps=10, solvate_padding_nm=0.6))
    assert not (tmp_path / "b" / "run.json").exists()


@pytest.mark.slow
def test_cli_solvate_and_analysis_with_and_without_water(npt_run, peptide_toy, tmp_path):
    """`openmlff simulate --solvate PADDING_NM --pressure BAR`, then `openmlff analyze` (--water strip | keep)."""
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "openmlff", "simulate", "--model", str(peptide_toy), "--structure",
                           "ac-ala3-nhme", "--solvate", "0.6", "--nonbonded-cutoff-nm", "0.65", "--pressure", "1",
                           "--temperature", "300", "--timestep", "0.5", "--steps", "60", "--report-interval", "20",
                           "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "60/60 steps, stable" in done.stdout
    npt_out = npt_run[0]
    for water in ("strip", "keep"):
        done = subprocess.run([sys.executable, "-m", "openmlff", "analyze", str(npt_out), "--water", water,
                               "--no-errors", "--quiet", "--out", str(tmp_path / water)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    strip = json.loads((tmp_path / "strip" / "analysis.json").read_text())
    keep = json.loads((tmp_path / "keep" / "analysis.json").read_text())
    assert strip["run"]["atoms"] == keep["run"]["atoms"] == 42 and "solvation" not in strip
    assert strip["environment"]["kind"] == "solvated" and strip["bonds"]["n_broken"] == 0
    solvation = keep["solvation"]
    assert 0.6 < solvation["density_g_per_cm3"]["mean"] < 1.3  # a small, young box, near water's 1 g/cm^3
    assert solvation["first_shell_waters"]["min"] > 5
    assert "O-O(water)" in solvation["water_rdf"]["pairs"] and (tmp_path / "keep" / "water_rdf.csv").is_file()
    assert "water:" in done.stdout


def test_dataset_frame_is_solvated_with_the_peptides_residues(test_data, tmp_path):
    """A start from a dataset frame (no residues): amber14's residues are found for the coupling, and the monitor's
    bond reference stays the dataset's mean bond lengths."""
    from openmlff.data import load_dataset
    from openmlff.md.start import run_from_dataset_frame

    dataset = load_dataset(test_data / "datasets" / "md22_Ac-Ala3-NHMe_5.npz")
    model = write_toy_model(tmp_path / "toy.pt", dataset.z, dataset.R[0])
    summary = run_from_dataset_frame(model, dataset, 0, tmp_path / "run", SimulationConfig(steps=20, **SOLVATED),
                                     progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary.stable and record["environment"]["ml_atoms"] == list(range(42))
    assert record["reference_positions"]["n_frames"] == 5
    residues = {r.name for r in app.PDBFile(str(tmp_path / "run" / "topology.pdb")).topology.residues()}
    assert {"ACE", "ALA", "NME", "HOH"} <= residues
