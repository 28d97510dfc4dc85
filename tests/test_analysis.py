"""openmlff.analysis: observables by hand on tiny molecules, and whole-run analysis of real short MD runs of aspirin
(toy TorchScript models on the Reference platform: a stable one and one that breaks the C0-H14 bond), the collapse
diagnosis, the model's training frames, the `openmlff analyze` command and the errors for damaged inputs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from openmlff.core import elements
from openmlff.analysis import (
    AnalysisConfig, RunFileError, analyze_run, backbone_dihedrals_deg, bond_length_deviations_angstrom,
    compute_distance_distribution, compute_element_rdfs, diagnose_collapse, distance_distribution_mae, error_ranks,
    find_reference_data, first_broken_bonds, first_frames_beyond_limit, load_run, monitored_bonds,
    radius_of_gyration_nm, rmsd_to_first_frame_nm,
)
from openmlff.cli import main as cli_main
from openmlff.data import load_dataset, make_split
from openmlff.md import SimulationConfig, read_dcd_layout, run_simulation
from openmlff.md.start import run_from_dataset_frame
from openmlff.metrics.evaluation import evaluate_model
from openmlff.report import read_table, write_run_analysis
from openmlff.structures import load_structure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_models import write_toy_model  # noqa: E402
from untrained_model import write_untrained_et  # noqa: E402

#: The bond the blow-up toy model stretches: aspirin's C0-H14 (an aromatic C-H).
STRETCHED_BOND = (0, 14)


def molecule(symbols, xyz_nm) -> mdtraj.Trajectory:
    """A one-residue mdtraj Trajectory of the given atoms and frames (positions in nm)."""
    top = mdtraj.Topology()
    residue = top.add_residue("MOL", top.add_chain())
    for k, s in enumerate(symbols):
        top.add_atom(f"{s}{k}", mdtraj.element.get_by_symbol(s), residue)
    return mdtraj.Trajectory(np.asarray(xyz_nm, dtype=np.float32).reshape(-1, len(symbols), 3), top)


def pair_at(distances_nm) -> mdtraj.Trajectory:
    """Two carbon atoms on the x axis, one frame per distance."""
    d = np.asarray(distances_nm, dtype=np.float64)
    xyz = np.zeros((d.size, 2, 3))
    xyz[:, 1, 0] = d
    return molecule(["C", "C"], xyz)


# --- observables by hand -----------------------------------------------------------------------------

def test_distance_distribution_by_hand():
    # Bins of 0.01 nm from 0 to 0.3 nm. The reference has one frame at 0.105 nm (bin 10) and one at
    # 0.115 nm (bin 11): h_ref = 50 /nm in each. The simulation stays at 0.105 nm: h = 100 /nm in bin 10.
    # MAE = (|100 - 50| + |0 - 50|) * 0.01 = 1.0.
    r, h_sim = compute_distance_distribution(pair_at([0.105, 0.105]), (0.0, 0.3), 0.01)
    _, h_ref = compute_distance_distribution(pair_at([0.105, 0.115]), (0.0, 0.3), 0.01)
    assert r.size == 30 and r[10] == pytest.approx(0.105)
    assert h_sim[10] == pytest.approx(100.0) and h_sim.sum() == pytest.approx(100.0)
    assert h_ref[10] == pytest.approx(50.0) and h_ref[11] == pytest.approx(50.0)
    assert distance_distribution_mae(h_sim, h_ref, 0.01) == pytest.approx(1.0)
    assert distance_distribution_mae(h_sim, h_sim, 0.01) == 0.0
    # A pair beyond the range keeps its share in the normalisation: half of the density is missing.
    _, h_far = compute_distance_distribution(pair_at([0.105, 0.5]), (0.0, 0.3), 0.01)
    assert h_far.sum() * 0.01 == pytest.approx(0.5)
    assert distance_distribution_mae(h_far, h_sim, 0.01) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same r_range"):
        distance_distribution_mae(h_sim, h_sim[:-1], 0.01)


def test_distance_distribution_of_identical_trajectories_is_zero_error(runs):
    traj = load_run(runs["stable"]).trajectory
    _, h = compute_distance_distribution(traj, (0.0, 1.5), 0.01)
    _, h_again = compute_distance_distribution(traj[::-1], (0.0, 1.5), 0.01)  # same frames, other order
    assert distance_distribution_mae(h, h_again, 0.01) == pytest.approx(0.0, abs=1e-12)
    assert h.sum() * 0.01 == pytest.approx(1.0)  # every pair of aspirin is within 1.5 nm


def test_rdf_normalisation_by_hand():
    # One C-C pair at 0.105 nm; g in its bin [0.10, 0.11) = V / shell volume with V = 4/3 pi r_max^3:
    # (0.2^3) / (0.11^3 - 0.10^3) for r_max = 0.2 nm.
    r, g = compute_element_rdfs(pair_at([0.105]), (0.0, 0.2), 0.01)
    assert list(g) == ["C-C"]
    assert g["C-C"][10] == pytest.approx(0.2**3 / (0.11**3 - 0.10**3), rel=1e-5)
    assert np.count_nonzero(g["C-C"]) == 1


def test_rmsd_and_radius_of_gyration_by_hand():
    # C at the origin and O 0.12 nm away: centre of mass at m_O d / M; Rg = d sqrt(m_C m_O) / M
    # (mass-weighted), d / 2 with equal weights.
    m_c, m_o = elements.masses([6, 8])
    d = 0.12
    frame0 = np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]])
    rotated = frame0 @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) + 0.3  # rotated, moved
    traj = molecule(["C", "O"], [frame0, rotated])
    assert radius_of_gyration_nm(traj) == pytest.approx([d * np.sqrt(m_c * m_o) / (m_c + m_o)] * 2, rel=1e-6)
    assert radius_of_gyration_nm(traj, mass_weighted=False) == pytest.approx([d / 2] * 2, rel=1e-6)
    rmsd = rmsd_to_first_frame_nm(traj)
    assert rmsd[0] == 0.0 and rmsd[1] == pytest.approx(0.0, abs=1e-6)  # same shape after superposition
    stretched = molecule(["C", "O"], [frame0, [[0.0, 0.0, 0.0], [d + 0.02, 0.0, 0.0]]])
    # each atom 0.01 nm off; mdtraj.rmsd works in float32 (QCP), good to ~1e-5 nm here
    assert rmsd_to_first_frame_nm(stretched)[1] == pytest.approx(0.01, abs=5e-5)


def _dihedral_deg(p0, p1, p2, p3) -> float:
    """Dihedral angle by the IUPAC convention, with atan2 (independent of mdtraj)."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return float(np.degrees(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w))))


def test_phi_psi_of_ac_ala3_nhme():
    s = load_structure("ac-ala3-nhme")
    traj = mdtraj.Trajectory(s.positions_angstrom[None] / 10.0, mdtraj.Topology.from_openmm(s.topology))
    angles = backbone_dihedrals_deg(traj)
    assert angles["phi_residues"] == angles["psi_residues"] == ["ALA2", "ALA3", "ALA4"]
    names = [[traj.topology.atom(int(a)).name for a in quad] for quad in angles["phi_atoms"]]
    assert names == [["C", "N", "CA", "C"]] * 3
    for name in ("phi", "psi"):
        for k, quad in enumerate(angles[f"{name}_atoms"]):
            expected = _dihedral_deg(*(s.positions_angstrom[int(a)] for a in quad))
            assert angles[f"{name}_deg"][0, k] == pytest.approx(expected, abs=1e-3)
    aspirin = load_structure("aspirin")
    none = backbone_dihedrals_deg(mdtraj.Trajectory(aspirin.positions_angstrom[None] / 10.0,
                                                    mdtraj.Topology.from_openmm(aspirin.topology)))
    assert none["phi_residues"] == [] and none["phi_deg"].shape == (1, 0)


# --- bonds and diagnosis by hand ---------------------------------------------------------------------

def test_bond_deviations_and_order_of_breaking_by_hand():
    # H-C-O in a line: bonds (0,1) 1.09 Å and (1,2) 1.43 Å.
    z = np.array([1, 6, 8])
    start = np.array([[-1.09, 0.0, 0.0], [0.0, 0.0, 0.0], [1.43, 0.0, 0.0]])
    bonds, ref = monitored_bonds(z, start)
    assert bonds.tolist() == [[0, 1], [1, 2]] and ref == pytest.approx([1.09, 1.43])
    frames = np.stack([start, start + [[-0.2, 0, 0], [0, 0, 0], [0, 0, 0]],
                       start + [[-0.7, 0, 0], [0, 0, 0], [0.6, 0, 0]]])
    traj = molecule(["H", "C", "O"], frames / 10.0)
    dev = bond_length_deviations_angstrom(traj, bonds, ref)
    assert dev == pytest.approx(np.array([[0, 0], [0.2, 0], [0.7, 0.6]]), abs=1e-5)
    assert first_frames_beyond_limit(dev, 0.5).tolist() == [2, 2]
    broken = first_broken_bonds(dev, bonds, z, 0.5)
    assert [b["atoms"] for b in broken] == [[0, 1], [1, 2]]  # same frame: larger deviation first
    assert broken[0]["elements"] == ["H", "C"] and broken[0]["deviation_angstrom"] == pytest.approx(0.7, abs=1e-5)
    # By first frame before deviation: bond 2 breaks in frame 1 with 0.6 Å, bonds 0 and 1 in frame 2.
    synthetic = np.array([[0.0, 0.0, 0.0], [0.1, -0.2, 0.6], [0.8, -0.9, 0.6]])
    order = first_broken_bonds(synthetic, [[0, 1], [1, 2], [0, 2]], z, 0.5)
    assert [b["bond"] for b in order] == [2, 1, 0]
    assert first_broken_bonds(synthetic, [[0, 1], [1, 2], [0, 2]], z, 0.5, max_bonds=1)[0]["bond"] == 2
    assert first_frames_beyond_limit(np.zeros((3, 2)), 0.5).tolist() == [-1, -1]


def test_diagnosis_ranks_by_hand():
    z = np.array([6, 1, 8, 1])  # C, H, O, H
    atoms = {"z": z, "force_mae": [3.0, 1.0, 2.0, 1.0], "force_max": [9.0, 4.0, 6.0, 3.0],
             "fnm_mae": [0.25, 0.99, 0.125, 0.5], "fnm_max": [0.75, 3.97, 0.375, 2.98],
             "units": {"force": "eV/Å", "fnm": "(eV/Å)/Da"}}
    assert error_ranks([3.0, 1.0, 2.0, 1.0]).tolist() == [1, 3, 2, 3]  # ties share the rank
    bond = {"bond": 0, "atoms": [0, 1], "elements": ["C", "H"], "first_frame": 4}
    diag = diagnose_collapse([bond], atoms, z, worst_share=0.25)
    c, h = diag["bonds"][0]["atom_errors"]
    assert (c["element"], c["fnm_mae_rank"], c["force_mae_rank"]) == ("C", 3, 1)
    assert (h["element"], h["fnm_mae_rank"], h["force_mae_rank"]) == ("H", 1, 3)
    assert h["mass_da"] == pytest.approx(elements.masses([1])[0]) and h["fnm_max"] == 3.97
    # ceil(0.25 * 4) = 1 worst atom: the H of the bond, not its C.
    assert h["among_worst_fnm_atoms"] and not c["among_worst_fnm_atoms"]
    assert diag["broken_bond_atoms_among_worst_fnm"] == {"atoms": [0, 1], "among_worst": 1}
    assert [a["index"] for a in diag["worst_fnm_atoms"]] == [1, 3, 0, 2]
    assert diag["units"]["mass"] == "Da" and diag["units"]["fnm"] == "(eV/Å)/Da"
    with pytest.raises(ValueError, match="other atoms"):
        diagnose_collapse([bond], atoms, [6, 1, 8, 6])


def test_first_broken_hydrogens_ranks_each_among_the_hydrogens():
    from openmlff.analysis.diagnosis import atom_error_summary, first_broken_hydrogens
    from openmlff.report.campaign_page import diagnosis_entry

    z = np.array([6, 1, 8, 1, 1])  # C0, H1, O2, H3, H4; FNM MAE among the hydrogens: H1 > H4 > H3
    records = atom_error_summary({"z": z, "force_mae": [3.0, 1.0, 2.0, 1.0, 1.0], "force_max": [9.0, 4.0, 6.0, 3.0, 3.0],
                                  "fnm_mae": [0.25, 0.99, 0.125, 0.5, 0.7], "fnm_max": [0.75, 3.97, 0.375, 2.98, 3.0]}, z)
    ch, oh, co = ({"atoms": [0, 1], "elements": ["C", "H"]}, {"atoms": [2, 3], "elements": ["O", "H"]},
                  {"atoms": [0, 2], "elements": ["C", "O"]})
    rows = [diagnosis_entry(f"r{k}", {"first_broken_bond": bond}, model=model, atom_records=records)
            for k, (model, bond) in enumerate([("a", ch), ("a", ch), ("a", oh), ("a", None), ("b@900K", co)])]
    summary = first_broken_hydrogens(rows, {"a": records, "b": records})
    a, b = summary["a"], summary["b@900K"]
    assert (a["collapsed_runs"], a["with_bond"], a["with_hydrogen"]) == (4, 3, 3)
    assert a["hydrogen_fnm_mae_ranks_among_hydrogens"] == [1, 1, 3] and a["median_rank"] == 1.0
    assert a["n_hydrogens"] == 3 and a["chance_median_rank"] == 2.0
    assert (b["with_bond"], b["with_hydrogen"], b["median_rank"]) == (1, 0, None)


# --- real runs ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_path(test_data) -> Path:
    return test_data / "datasets" / "rmd17_aspirin_100.npz"


@pytest.fixture(scope="module")
def et_model(tmp_path_factory, reference_path) -> Path:
    return write_untrained_et(tmp_path_factory.mktemp("et") / "et.pt", load_dataset(reference_path))


@pytest.fixture(scope="module")
def runs(aspirin, tmp_path_factory) -> dict[str, Path]:
    """A stable 300-step run (frame every 10 steps) and a blow-up run that breaks C0-H14 between two frames
    (monitor every 2 steps, so its collapse is in collapse_frames.dcd), both at 500 K on the Reference platform."""
    root = tmp_path_factory.mktemp("runs")
    z, pos = aspirin.atomic_numbers, aspirin.positions_angstrom
    stable = write_toy_model(root / "toy.pt", z, pos)
    blowup = write_toy_model(root / "blowup.pt", z, pos, stretch_bond=STRETCHED_BOND, stretch_angstrom=1.0)
    base = dict(temperature_K=500.0, timestep_fs=0.5, steps=300, seed=1, platform="Reference", torch_threads=1,
                report_interval_steps=10, checkpoint_interval_steps=300)
    out = {}
    for name, model, extra in (("stable", stable, {}),
                               ("blowup", blowup, dict(monitor_interval_steps=2, temperature_limit_K=1.0e5))):
        summary = run_simulation(model, z, pos, root / name, SimulationConfig(**base, **extra),
                                 topology=aspirin.topology, progress=False)
        assert summary["stable"] is (name == "stable")
        out[name] = root / name
    return out


def test_analyze_stable_run(runs, reference_path, et_model, tmp_path):
    analysis = analyze_run(runs["stable"], data=reference_path, model=et_model)
    doc, tables = analysis.document, analysis.tables
    summary = json.loads((runs["stable"] / "summary.json").read_text())
    assert doc["run"]["frames"] == summary["frames_written"] == 31 and doc["run"]["stable"] is True
    assert doc["bonds"]["n_bonds"] == 21 and doc["bonds"]["n_broken"] == 0
    assert max(doc["bonds"]["max_abs_deviation_angstrom"]) < 0.5
    series = tables["timeseries.csv"]
    assert series["time [ps]"][1] == pytest.approx(10 * 0.5e-3) and series["rmsd_to_start [nm]"][0] == 0.0
    assert series["rmsd_to_start [nm]"][-1] > 0
    assert 0.0 < doc["distance_distribution"]["mae"] < 2.0
    hr = tables["distance_distribution.csv"]
    by_hand = np.abs(hr["h_simulation [1/nm]"] - hr["h_reference [1/nm]"]).sum() * 0.01  # default bin width, nm
    assert doc["distance_distribution"]["bin_width_nm"] == 0.01
    assert doc["distance_distribution"]["mae"] == pytest.approx(by_hand)
    assert doc["dihedrals"] is None  # aspirin has no peptide backbone
    diag = doc["diagnosis"]
    assert diag["evaluated"] and not diag["collapsed"] and diag["bonds"] == []
    assert diag["evaluated_frames"] == 100 and "all frames" in diag["frames_origin"]
    assert doc["model"]["is_run_model"] is False  # the ET is not the toy model that ran

    files = write_run_analysis(analysis, tmp_path / "out", plots=False)
    written = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert written["files"]["plots"] == [] and "timeseries.csv" in written["files"]["tables"]
    back = read_table(tmp_path / "out" / "timeseries.csv")
    np.testing.assert_array_equal(back["radius_of_gyration [nm]"], series["radius_of_gyration [nm]"])
    assert len(files["tables"]) == len(tables)


def test_bond_reference_is_the_monitor_s_for_a_run_started_from_the_data(aspirin, reference_path, tmp_path):
    data = load_dataset(reference_path)
    model = write_toy_model(tmp_path / "toy.pt", aspirin.atomic_numbers, data.R[0])
    run_from_dataset_frame(model, data, 0, tmp_path / "run",
                           SimulationConfig(temperature_K=300.0, steps=20, seed=4, platform="Reference",
                                            torch_threads=1, report_interval_steps=10, checkpoint_interval_steps=20),
                           progress=False)
    no_errors = AnalysisConfig(evaluate_errors=False)
    bonds = analyze_run(tmp_path / "run", data=reference_path, config=no_errors).document["bonds"]
    assert bonds["matches_monitor_reference"] is True and "mean over 100 frames" in bonds["reference_lengths_from"]
    _, by_hand = monitored_bonds(data.z, data.R[0], data.R)
    assert bonds["reference_lengths_angstrom"] == pytest.approx(by_hand.tolist())
    # Other reference data than the run's: used, and flagged as not the monitor's.
    other = analyze_run(tmp_path / "run", data=data.subset(np.arange(50)), config=no_errors)
    assert other.document["bonds"]["matches_monitor_reference"] is False


def test_diagnosis_names_the_stretched_bond(runs, reference_path, et_model):
    summary = json.loads((runs["blowup"] / "summary.json").read_text())
    assert summary["first_broken_bond"]["atoms"] == list(STRETCHED_BOND)
    analysis = analyze_run(runs["blowup"], data=reference_path, model=et_model)
    doc = analysis.document
    # The collapse happened between trajectory frames: the frames of collapse_frames.dcd after it are analysed.
    assert doc["run"]["frames_from_collapse_frames"] > 0
    assert doc["run"]["frames"] == doc["run"]["frames_from_trajectory"] + doc["run"]["frames_from_collapse_frames"]
    assert analysis.tables["timeseries.csv"]["step"][-1] == summary["collapse_step"]
    first = doc["bonds"]["first_broken_bonds"][0]
    assert first["atoms"] == list(STRETCHED_BOND) and first["elements"] == ["C", "H"]
    assert first["first_time_ps"] == pytest.approx(summary["collapse_time_ps"])
    assert first["deviation_angstrom"] == pytest.approx(summary["first_broken_bond"]["deviation_angstrom"], abs=1e-4)
    assert doc["bonds"]["first_broken_bond_agrees_with_monitor"] is True

    diag = doc["diagnosis"]
    assert diag["collapsed"] and diag["evaluated"]
    bond = diag["bonds"][0]
    assert bond["atoms"] == list(STRETCHED_BOND)
    # The errors reported for C0 and H14 are the model's atom-wise errors on the reference data.
    atoms = evaluate_model(et_model, load_dataset(reference_path), include_frames=False)["atoms"]
    for record in bond["atom_errors"]:
        i = record["index"]
        for key in ("force_mae", "force_max", "fnm_mae", "fnm_max"):
            assert record[key] == pytest.approx(atoms[key][i])
        assert record["fnm_mae_rank"] == 1 + sum(v > atoms["fnm_mae"][i] for v in atoms["fnm_mae"])
    assert [r["element"] for r in bond["atom_errors"]] == ["C", "H"]
    assert bond["atom_errors"][1]["mass_da"] == pytest.approx(1.008, abs=1e-3)
    assert analysis.tables["atom_errors.csv"]["in_broken_bond"].tolist() == [i in STRETCHED_BOND for i in range(21)]


def test_model_training_frames_from_metadata(runs, reference_path, tmp_path):
    data = load_dataset(reference_path)
    split = {"seed": 3, "n_train": 60, "n_val": 20, "n_test": 20}
    training = {"data_provenance": {"source_file": str(reference_path)}, "data_fingerprint_sha256": data.fingerprint(),
                "split": split, "checkpoint": str(tmp_path / "model.ckpt")}
    model = write_untrained_et(tmp_path / "trained_on_100.pt", data, metadata={"training": training})
    meta = {"training": training}
    # No checkpoint file: the split is recomputed from the recorded seed and sizes.
    ref = find_reference_data(meta)
    assert ref.dataset.source.endswith("rmd17_aspirin_100.npz") and ref.is_training_data is True
    np.testing.assert_array_equal(ref.training_frames, make_split(100, 60, 20, 20, seed=3).train)
    assert "recomputed" in ref.training_frames_origin
    # A checkpoint trained on these data: its stored split wins.
    torch.save({"format": 1, "architecture": "et", "hyperparameters": {}, "config": {},
                "data_fingerprint": data.fingerprint(), "split": {"train": [5, 1, 7], "val": [], "test": []}},
               tmp_path / "model.ckpt")
    ref = find_reference_data(meta)
    assert ref.training_frames.tolist() == [5, 1, 7] and "checkpoint" in ref.training_frames_origin
    assert ref.training_dataset().n_frames == 3
    # Other data: all frames, and it says so.
    other = find_reference_data(meta, data=data.subset(np.arange(10)))
    assert other.training_frames is None and other.is_training_data is False
    assert "not the model's" in other.training_frames_origin
    # The analysis finds the training data and split through the model alone.
    doc = analyze_run(runs["stable"], model=model, config=AnalysisConfig(n_first_broken_bonds=3)).document
    assert doc["reference_data"]["origin"].startswith("the model's training data")
    assert doc["diagnosis"]["evaluated_frames"] == 3


def test_analyze_command_writes_json_tables_and_plots(runs, reference_path, et_model, tmp_path, capsys):
    out = tmp_path / "analysis"
    code = cli_main(["analyze", str(runs["blowup"]), "--data", str(reference_path), "--model", str(et_model),
                     "--out", str(out), "--plots", "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "C0-H14" in printed.out and "FNM MAE" in printed.out
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["diagnosis"]["bonds"][0]["atoms"] == list(STRETCHED_BOND)
    for name in ("timeseries.csv", "bond_deviations.csv", "distance_distribution.csv", "rdf.csv", "atom_errors.csv",
                 "bond_deviations.png", "distance_distribution.png", "rdf.png", "rmsd_rg.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "rdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "C0-H14 deviation [Å]" in read_table(out / "bond_deviations.csv")


def test_ramachandran_of_a_peptide_run(tmp_path):
    s = load_structure("ac-ala3-nhme")
    model = write_toy_model(tmp_path / "toy.pt", s.atomic_numbers, s.positions_angstrom)
    run_simulation(model, s.atomic_numbers, s.positions_angstrom, tmp_path / "run",
                   SimulationConfig(temperature_K=300.0, steps=60, seed=2, platform="Reference", torch_threads=1,
                                    report_interval_steps=10, checkpoint_interval_steps=60),
                   topology=s.topology, progress=False)
    analysis = analyze_run(tmp_path / "run")
    assert analysis.document["dihedrals"]["phi"]["residues"] == ["ALA2", "ALA3", "ALA4"]
    table = analysis.tables["dihedrals.csv"]
    assert len(table["phi ALA3 [deg]"]) == 7 and np.all(np.abs(table["psi ALA4 [deg]"]) <= 180)
    files = write_run_analysis(analysis, tmp_path / "out", plots=True)
    assert tmp_path / "out" / "ramachandran.png" in files["plots"]
    assert analysis.document["diagnosis"]["evaluated"] is False  # no reference data: said, not failed
    assert "no reference data" in analysis.document["diagnosis"]["reason"]


# --- damaged or mismatched input ---------------------------------------------------------------------

@pytest.fixture
def damaged_copy(runs, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(runs["stable"], copy)
    return copy


@pytest.mark.parametrize("cut", ["bytes", "frame"])
def test_truncated_trajectory_is_refused_naming_the_file(damaged_copy, cut):
    dcd = damaged_copy / "trajectory.dcd"
    size = dcd.stat().st_size
    n_cut = 100 if cut == "bytes" else read_dcd_layout(dcd).frame_bytes
    with open(dcd, "r+b") as fh:
        fh.truncate(size - n_cut)
    with pytest.raises(RunFileError, match=r"trajectory\.dcd: truncated"):
        load_run(damaged_copy)


def test_empty_trajectory_missing_topology_and_missing_run_json_are_refused(damaged_copy):
    (damaged_copy / "topology.pdb").unlink()
    with pytest.raises(RunFileError, match=r"topology\.pdb: topology not found"):
        load_run(damaged_copy)
    (damaged_copy / "trajectory.dcd").write_bytes(b"")
    with pytest.raises(RunFileError, match=r"trajectory\.dcd: trajectory file is empty"):
        load_run(damaged_copy)
    (damaged_copy / "run.json").unlink()
    with pytest.raises(RunFileError, match=r"run\.json: not found"):
        load_run(damaged_copy)


def test_reference_data_of_other_atoms_is_refused_naming_the_file(runs, test_data):
    other = test_data / "datasets" / "md22_Ac-Ala3-NHMe_5.npz"
    with pytest.raises(RunFileError, match=r"md22_Ac-Ala3-NHMe_5\.npz: the dataset's atomic numbers"):
        analyze_run(runs["stable"], data=other, config=AnalysisConfig(evaluate_errors=False))


def test_analyze_command_reports_a_damaged_file(damaged_copy, capsys):
    (damaged_copy / "trajectory.dcd").write_bytes(b"")
    assert cli_main(["analyze", str(damaged_copy), "--no-errors"]) == 1
    err = capsys.readouterr().err
    assert "openmlff analyze: error:" in err and "trajectory.dcd" in err and "empty" in err
