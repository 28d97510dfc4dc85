"""openmlff.md.trajectory: DCD, XTC and HDF5 writers, read back by mdtraj, reopened at a checkpoint mark
after more frames (and a frame cut in half, as a kill leaves it) were written."""

from __future__ import annotations

import mdtraj
import numpy as np
import pytest

from openmlff.md import StepRecord, TrajectoryMark, open_trajectory, read_dcd_frames
from openmlff.structures import load_structure, structure_to_pdb

FORMATS = ["dcd", "xtc", "hdf5"]
SUFFIX = {"dcd": ".dcd", "xtc": ".xtc", "hdf5": ".h5"}


def frames(aspirin, n: int) -> list[np.ndarray]:
    """n distinct frames in nm."""
    rng = np.random.default_rng(3)
    return [aspirin.positions_angstrom / 10 + rng.normal(scale=0.01, size=(21, 3)) for _ in range(n)]


def record(k: int, positions_nm: np.ndarray) -> StepRecord:
    return StepRecord(step=10 * k, time_ps=10 * k * 0.5e-3, positions_nm=positions_nm, potential_energy_kJ_per_mol=-k,
                      kinetic_energy_kJ_per_mol=k, temperature_K=300.0 + k, speed_ns_per_day=1.0)


def load(path, aspirin, tmp_path) -> mdtraj.Trajectory:
    if path.suffix == ".h5":
        return mdtraj.load(str(path))
    return mdtraj.load(str(path), top=str(structure_to_pdb(aspirin, tmp_path / "top.pdb")))


def tolerance(fmt: str) -> float:
    return 1e-3 if fmt == "xtc" else 1e-6  # XTC keeps 0.001 nm


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_reopened_at_a_mark_drops_later_frames_and_appends(aspirin, tmp_path, fmt):
    if fmt == "hdf5":
        pytest.importorskip("tables", reason="mdtraj's HDF5 format needs PyTables (pip install tables)")
    path = tmp_path / f"t{SUFFIX[fmt]}"
    xs = frames(aspirin, 9)
    writer = open_trajectory(fmt, path, aspirin.topology, 0.5, 10)
    for k in range(3):
        writer.report(record(k, xs[k]))
    writer.flush(sync=True)
    mark = writer.mark()
    assert mark.frames == 3 and mark.bytes == (writer.partial_path if fmt == "hdf5" else path).stat().st_size > 0
    for k in (3, 4):  # written after the checkpoint: lost to the kill
        writer.report(record(k, xs[k] + 1.0))
    writer.close()
    with open(writer.partial_path if fmt == "hdf5" else path, "ab") as fh:  # a frame cut in the middle by the kill
        fh.write(b"\x00" * 37)

    writer = open_trajectory(fmt, path, aspirin.topology, 0.5, 10, resume_at=mark)
    assert writer.frames_written == 3
    for k in range(3, 9):
        writer.report(record(k, xs[k]))
    writer.finish()
    writer.close()
    traj = load(path, aspirin, tmp_path)
    assert traj.n_frames == 9
    np.testing.assert_allclose(traj.xyz, np.asarray(xs, dtype=np.float32), atol=tolerance(fmt))
    if fmt != "dcd":  # mdtraj numbers DCD frames 0, 1, ... instead of reading their time
        np.testing.assert_allclose(traj.time, 10 * np.arange(9) * 0.5e-3, atol=1e-6)  # ps


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_refuses_a_file_shorter_than_the_mark(aspirin, tmp_path, fmt):
    if fmt == "hdf5":
        pytest.importorskip("tables", reason="mdtraj's HDF5 format needs PyTables (pip install tables)")
    path = tmp_path / f"t{SUFFIX[fmt]}"
    writer = open_trajectory(fmt, path, aspirin.topology, 0.5, 10)
    for k, x in enumerate(frames(aspirin, 2)):
        writer.report(record(k, x))
    writer.close()
    size = path.stat().st_size if fmt != "hdf5" else writer.partial_path.stat().st_size
    with pytest.raises(ValueError, match=r"t(_partial)?\.(dcd|xtc): holds (2 complete frames|\d+ bytes), but the checkpoint says"):
        open_trajectory(fmt, path, aspirin.topology, 0.5, 10, resume_at=TrajectoryMark(3, size + 100))


def test_hdf5_is_written_at_the_end_from_a_partial_dcd_and_rebuilt_to_extend(aspirin, tmp_path):
    pytest.importorskip("tables", reason="mdtraj's HDF5 format needs PyTables (pip install tables)")
    path = tmp_path / "t.h5"
    xs = frames(aspirin, 6)
    writer = open_trajectory("hdf5", path, aspirin.topology, 0.5, 10)
    for k in range(4):
        writer.report(record(k, xs[k]))
    writer.flush(sync=True)
    assert not path.exists() and writer.partial_path.name == "t_partial.dcd"
    partial = mdtraj.load(str(writer.partial_path), top=str(structure_to_pdb(aspirin, tmp_path / "top.pdb")))
    assert partial.n_frames == 4  # readable while the run goes on
    mark = writer.mark()
    writer.finish()
    writer.close()
    assert path.exists() and not writer.partial_path.exists()
    traj = mdtraj.load(str(path))
    assert traj.n_frames == 4 and traj.topology.n_bonds == 21
    # extending the finished run: the partial file is rebuilt from the HDF5 file, frames appended after it
    writer = open_trajectory("hdf5", path, aspirin.topology, 0.5, 10, resume_at=mark)
    for k in (4, 5):
        writer.report(record(k, xs[k]))
    writer.finish()
    writer.close()
    traj = mdtraj.load(str(path))
    np.testing.assert_allclose(traj.xyz, np.asarray(xs, dtype=np.float32), atol=1e-6)
    np.testing.assert_allclose(traj.time, 10 * np.arange(6) * 0.5e-3, atol=1e-6)


def test_dcd_frames_read_directly_equal_mdtraj_s(aspirin, tmp_path):
    path = tmp_path / "t.dcd"
    xs = frames(aspirin, 5)
    writer = open_trajectory("dcd", path, aspirin.topology, 0.5, 10)
    for k, x in enumerate(xs):
        writer.report(record(k, x))
    writer.close()
    expected = load(path, aspirin, tmp_path).xyz * 10.0  # Å
    np.testing.assert_allclose(read_dcd_frames(path), expected, rtol=1e-6)
    np.testing.assert_allclose(read_dcd_frames(path, 3, 10), expected[3:], rtol=1e-6)
    assert read_dcd_frames(path, 5).shape == (0, 21, 3)


def test_unknown_format_is_refused(aspirin, tmp_path):
    with pytest.raises(ValueError, match="unknown trajectory format 'pdb'; expected one of \\['dcd', 'xtc', 'hdf5'\\]"):
        open_trajectory("pdb", tmp_path / "t.pdb", aspirin.topology, 0.5, 10)
