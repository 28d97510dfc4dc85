"""`openmlff analyze` on trajectories openmlff did not write (openmlff.analysis.trajectory_files): ASE .traj,
extended XYZ and mdtraj's formats, the same bond criterion against the reference data, refusals naming the file."""

from __future__ import annotations

import json

import ase
import ase.io
import mdtraj
import numpy as np
import pytest
from ase.io.trajectory import Trajectory

from openmlff.analysis import analyze_run
from openmlff.analysis.run_files import RunFileError
from openmlff.cli import main
from openmlff.data import load_dataset
from openmlff.structures.builtin import structure_from_atoms

INTERVAL_PS = 0.01
BROKEN_ATOM, ITS_PARTNER = 13, 9  # an H of aspirin's hydroxyl (O9-H13), pulled 3 Å away in the last frame


@pytest.fixture(scope="module")
def reference(test_data):
    return load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")


@pytest.fixture(scope="module")
def positions(reference):
    rng = np.random.default_rng(0)
    R = reference.R[:20] + rng.normal(0.0, 0.02, (20,) + reference.R.shape[1:])
    R[-1, BROKEN_ATOM] += [3.0, 0.0, 0.0]
    return R


@pytest.fixture(scope="module")
def written(reference, positions, tmp_path_factory):
    """The same 20 frames in every format."""
    folder = tmp_path_factory.mktemp("trajectories")
    atoms = [ase.Atoms(numbers=reference.z, positions=p) for p in positions]
    with Trajectory(str(folder / "md.traj"), "w") as traj:
        for a in atoms:
            traj.write(a)
    for k, a in enumerate(atoms):
        a.info["time_ps"] = INTERVAL_PS * k
    ase.io.write(str(folder / "md.extxyz"), atoms, format="extxyz")
    top = mdtraj.Topology.from_openmm(structure_from_atoms("m", reference.z, reference.R[0]).topology)
    traj = mdtraj.Trajectory(positions / 10.0, top, time=np.arange(20) * INTERVAL_PS)
    traj.save_dcd(str(folder / "md.dcd"))
    traj.save_xtc(str(folder / "md.xtc"))
    traj.save_hdf5(str(folder / "md.h5"))
    traj.save_netcdf(str(folder / "md.nc"))
    traj[0].save_pdb(str(folder / "top.pdb"))
    return folder


@pytest.mark.parametrize("name, interval", [("md.traj", INTERVAL_PS), ("md.extxyz", None), ("md.dcd", INTERVAL_PS),
                                            ("md.xtc", None), ("md.h5", None), ("md.nc", None)])
def test_every_format_gives_the_same_analysis_and_finds_the_broken_bond(written, reference, positions, name,
                                                                        interval):
    doc = analyze_run(written / name, data=reference, frame_interval_ps=interval).document
    run = doc["run"]
    assert run["frames"] == 20 and run["last_frame_time_ps"] == pytest.approx(19 * INTERVAL_PS, rel=1e-5)
    assert run["stable"] is False and run["n_broken_bonds"] == 1
    assert sorted(run["first_broken_bond"]["atoms"]) == [ITS_PARTNER, BROKEN_ATOM]
    assert run["collapse_time_ps"] == pytest.approx(19 * INTERVAL_PS, rel=1e-5)
    assert doc["bonds"]["matches_monitor_reference"] is True  # the reference data's mean bond lengths
    assert doc["distance_distribution"]["mae"] is not None and doc["reference_data"]["frames"] == reference.n_frames
    assert doc["diagnosis"]["evaluated"] is False and "--model" in doc["diagnosis"]["reason"]
    expected = mdtraj.rmsd(mdtraj.Trajectory(positions / 10.0, mdtraj.Topology.from_openmm(
        structure_from_atoms("m", reference.z, reference.R[0]).topology)), mdtraj.Trajectory(
        positions[:1] / 10.0, mdtraj.Topology.from_openmm(structure_from_atoms("m", reference.z,
                                                                               reference.R[0]).topology)))
    assert doc["rmsd_to_start_nm"]["final"] == pytest.approx(float(expected[-1]), abs=1e-4)


def test_a_topology_file_names_the_atoms_of_a_coordinates_only_format(written, reference):
    doc = analyze_run(written / "md.dcd", data=reference, topology=written / "top.pdb",
                      frame_interval_ps=INTERVAL_PS).document
    assert doc["run"]["n_broken_bonds"] == 1


def test_a_file_without_frame_times_asks_for_the_interval(written, reference):
    for name in ("md.traj", "md.dcd"):
        with pytest.raises(RunFileError, match=rf"{name}: .*--frame-interval-ps"):
            analyze_run(written / name, data=reference)


def test_a_trajectory_of_other_atoms_is_refused_naming_the_first_differing_atom(reference, positions, tmp_path):
    numbers = reference.z.copy()
    numbers[3], numbers[7] = numbers[7], numbers[3]
    path = tmp_path / "swapped.extxyz"
    ase.io.write(str(path), [ase.Atoms(numbers=numbers, positions=p, info={"time_ps": 0.01 * k})
                             for k, p in enumerate(positions[:3])], format="extxyz")
    with pytest.raises(RunFileError, match=r"swapped\.extxyz: atom 3 is O \(Z=8\), the reference data .* has C "
                                           r"\(Z=6\) there"):
        analyze_run(path, data=reference)


def test_the_cli_analyses_a_trajectory_file_and_writes_beside_it(written, test_data, capsys):
    data = test_data / "datasets" / "rmd17_aspirin_100.npz"
    assert main(["analyze", str(written / "md.dcd"), "--data", str(data), "--frame-interval-ps", "0.01",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "broke at 0.19 ps: O9-H13" in out
    doc = json.loads((written / "md.dcd_analysis" / "analysis.json").read_text())
    assert doc["run"]["source"] == str((written / "md.dcd").resolve())
    assert main(["analyze", str(written / "md.dcd"), "--quiet"]) == 1  # no reference data: one line
    assert "needs reference data (--data)" in capsys.readouterr().err
