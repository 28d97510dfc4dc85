"""Trajectory files of an MD run, in DCD, XTC or HDF5: written frame by frame, reopened at a checkpoint.

Every format is one mdtraj reads: DCD and XTC with the topology PDB beside them
(`mdtraj.load("trajectory.xtc", top="topology.pdb")`), HDF5 on its own (the topology is inside,
and so are each frame's time, energies and temperature). Positions are written in nm.

A run that is killed has written frames after its last checkpoint; the resumed run reopens the
file cut back to what the checkpoint recorded (a `TrajectoryMark`: frames, and bytes where the
format allows cutting by bytes), so the file ends up with every frame exactly once, in order.

  DCD   fixed-size frames (openmm.app.DCDFile); cut by frame count, header count fixed.
  XTC   compressed frames of varying size (openmm.app.XTCFile, 0.001 nm precision); cut at the
        byte size recorded at the checkpoint, then the frame count is checked.
  HDF5  mdtraj.formats.HDF5TrajectoryFile (needs PyTables, `tables`), written when the run ends.
        HDF5 does not survive a kill during a write: files killed at random moments of
        continuous writing were unreadable 1 time in 20 when flushed every 20 frames, and a run
        killed during a batch append at a checkpoint left an unreadable file. So frames go to a
        DCD file beside it while the run goes on (trajectory_partial.dcd, cut back like any DCD
        on resume), turned into the HDF5 file at the end (atomic rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
from openmm import unit

from ..core.atomic_io import atomic_write
from ..core.errors import InputError
from ..core.units import FS_IN_PS, NM_IN_ANGSTROM
from .config import TRAJECTORY_FORMATS
from .dcd import read_dcd_frames, truncate_dcd
from .reporters import FileBacked, ScheduledReporter, StepRecord
from .rundir import hdf5_partial_path


@dataclass(frozen=True)
class TrajectoryMark:
    """How far a trajectory file had been written at a checkpoint: frames, and the file size in bytes."""

    frames: int
    bytes: int | None = None


class TrajectoryWriter(ScheduledReporter):
    """Base of the format writers (OpenMM reporters, see reporters.py): `report` appends a frame every
    interval_steps (not one whose positions are not finite: a collapse), `mark` says how far the file is written.
    Subclasses open a new file, or the existing one cut back to `resume_at` (ValueError if it holds less).
    """

    def __init__(self, path, topology: app.Topology, timestep_fs: float, interval_steps: int,
                 first_step: int = 0) -> None:
        self.path = Path(path)
        self.topology = topology
        self.timestep_fs = float(timestep_fs)
        self.interval_steps = int(interval_steps)
        self.first_step = int(first_step)
        self.frames_written = 0

    def accepts(self, record: StepRecord) -> bool:
        return bool(np.isfinite(record.positions_nm).all())  # a collapsed frame with NaN positions is not kept

    def write(self, record: StepRecord) -> None:
        """Append the record's positions (which must be finite) as the next frame."""
        self._write(record)
        self.frames_written += 1

    def mark(self) -> TrajectoryMark:
        """Frames written and the file's size in bytes (call after flush)."""
        return TrajectoryMark(self.frames_written, os.path.getsize(self.path) if self.path.exists() else 0)

    def flush(self, sync: bool = False) -> None:
        """Push written frames to the operating system; with sync, to the disk."""
        if sync and self.path.exists():
            with open(self.path, "rb") as fh:
                os.fsync(fh.fileno())

    def close(self) -> None:
        pass

    def finish(self) -> None:
        """Called once when the run ends, before summary.json: formats written at the end write here."""

    def _write(self, record: StepRecord) -> None:
        raise NotImplementedError

    @property
    def _dt(self) -> unit.Quantity:
        return self.timestep_fs * FS_IN_PS * unit.picoseconds


def open_trajectory(trajectory_format: str, path, topology: app.Topology, timestep_fs: float, interval_steps: int,
                    first_step: int = 0, resume_at: TrajectoryMark | None = None) -> TrajectoryWriter:
    """A writer for 'dcd', 'xtc' or 'hdf5' (see the module docstring); ValueError for another format."""
    writers = {"dcd": DCDTrajectoryWriter, "xtc": XTCTrajectoryWriter, "hdf5": HDF5TrajectoryWriter}
    if trajectory_format not in writers:
        raise InputError(f"unknown trajectory format {trajectory_format!r}; expected one of {list(TRAJECTORY_FORMATS)}")
    return writers[trajectory_format](path, topology, timestep_fs, interval_steps, first_step=first_step,
                                      resume_at=resume_at)


# --- DCD ------------------------------------------------------------------------------------------

class DCDTrajectoryWriter(FileBacked, TrajectoryWriter):
    """DCD frames through openmm.app.DCDFile (frame k is step first_step + k * interval_steps)."""

    def __init__(self, path, topology, timestep_fs, interval_steps, first_step=0, resume_at=None) -> None:
        super().__init__(path, topology, timestep_fs, interval_steps, first_step)
        if resume_at is not None:
            truncate_dcd(self.path, resume_at.frames)
            self.frames_written = resume_at.frames
        self._file = open(self.path, "w+b" if resume_at is None else "r+b")
        self._dcd = app.DCDFile(self._file, topology, self._dt, firstStep=first_step, interval=interval_steps,
                                append=resume_at is not None)

    def _write(self, record: StepRecord) -> None:
        self._dcd.writeModel(record.positions_nm, periodicBoxVectors=_box(record))


# --- XTC ------------------------------------------------------------------------------------------

class XTCTrajectoryWriter(TrajectoryWriter):
    """XTC frames through openmm.app.XTCFile, which opens, appends and closes the file for each frame."""

    def __init__(self, path, topology, timestep_fs, interval_steps, first_step=0, resume_at=None) -> None:
        from openmm.app.internal.xtc_utils import get_xtc_nframes

        super().__init__(path, topology, timestep_fs, interval_steps, first_step)
        if resume_at is not None:  # cut at the checkpoint's byte size, then check the frame count
            if resume_at.bytes is None:
                raise InputError(f"{self.path}: an XTC file is cut at a byte size, but the checkpoint records none")
            size = os.path.getsize(self.path) if self.path.exists() else 0
            if size < resume_at.bytes:
                raise InputError(f"{self.path}: holds {size} bytes, but the checkpoint says {resume_at.bytes} were "
                                 "written")
            with open(self.path, "r+b") as fh:
                fh.truncate(resume_at.bytes)
                os.fsync(fh.fileno())
            found = get_xtc_nframes(str(self.path).encode()) if resume_at.bytes else 0
            if found != resume_at.frames:
                raise InputError(f"{self.path}: holds {found} frames after cutting it at {resume_at.bytes} bytes, "
                                 f"but the checkpoint says {resume_at.frames}")
            self.frames_written = resume_at.frames
        if not self.frames_written:
            self.path.unlink(missing_ok=True)  # XTCFile refuses to overwrite a file
        self._xtc = app.XTCFile(str(self.path), topology, self._dt, firstStep=first_step, interval=interval_steps,
                                append=self.frames_written > 0)

    def _write(self, record: StepRecord) -> None:
        self._xtc.writeModel(record.positions_nm, periodicBoxVectors=_box(record))


def _box(record: StepRecord):
    """The record's box as OpenMM's box vectors (None: the writer takes the topology's, or writes none)."""
    return None if record.box_nm is None else [openmm.Vec3(*row) for row in record.box_nm] * unit.nanometer


# --- HDF5 ---------------------------------------------------------------------------------------

def _hdf5_file_class():
    try:
        import tables  # noqa: F401  (mdtraj's HDF5 format needs PyTables)
    except ImportError as exc:
        raise ImportError("trajectory_format 'hdf5' needs PyTables: pip install tables") from exc
    from mdtraj.formats import HDF5TrajectoryFile

    return HDF5TrajectoryFile


class HDF5TrajectoryWriter(TrajectoryWriter):
    """mdtraj HDF5 trajectory (topology and each frame's time in ps inside), written by `finish` from the partial
    DCD kept while the run goes on (`hdf5_partial_path`; see the module docstring). Extending a finished run
    rebuilds the partial file from the HDF5 file first."""

    def __init__(self, path, topology, timestep_fs, interval_steps, first_step=0, resume_at=None) -> None:
        super().__init__(path, topology, timestep_fs, interval_steps, first_step)
        self._file_class = _hdf5_file_class()
        self.partial_path = hdf5_partial_path(self.path)
        if resume_at is not None and not self.partial_path.exists():
            if not self.path.exists():
                raise InputError(f"{self.path}: neither the HDF5 trajectory nor {self.partial_path.name} exists, but "
                                 f"the checkpoint says {resume_at.frames} frames were written")
            self._rebuild_partial(resume_at.frames)
        self._frames = DCDTrajectoryWriter(self.partial_path, topology, timestep_fs, interval_steps, first_step,
                                           None if resume_at is None else TrajectoryMark(resume_at.frames))
        self.frames_written = self._frames.frames_written

    def write(self, record: StepRecord) -> None:
        self._frames.write(record)
        self.frames_written = self._frames.frames_written

    def mark(self) -> TrajectoryMark:
        return self._frames.mark()

    def flush(self, sync: bool = False) -> None:
        self._frames.flush(sync)

    def close(self) -> None:
        self._frames.close()

    def finish(self) -> None:
        """Write the HDF5 file from the partial DCD (atomically), then remove the partial file."""
        self._frames.flush(sync=True)
        self._frames.close()

        def write(tmp: str) -> None:
            import mdtraj

            with _new_hdf5(self._file_class, tmp) as h5:
                h5.topology = mdtraj.Topology.from_openmm(self.topology)
                k = 0
                while True:
                    xyz_angstrom = read_dcd_frames(self.partial_path, k, _CHUNK_FRAMES)
                    if len(xyz_angstrom) == 0:
                        break
                    steps = self.first_step + self.interval_steps * np.arange(k, k + len(xyz_angstrom))
                    h5.write(coordinates=xyz_angstrom / np.float32(NM_IN_ANGSTROM),
                             time=(steps * self.timestep_fs * FS_IN_PS).astype(np.float32))
                    k += len(xyz_angstrom)

        atomic_write(self.path, write)
        self.partial_path.unlink()

    def _rebuild_partial(self, n_frames: int) -> None:
        """The partial DCD from the first n_frames of the HDF5 file (a finished run being extended)."""
        def write(tmp: str) -> None:
            with self._file_class(str(self.path), "r") as h5:
                if len(h5) < n_frames:
                    raise InputError(f"{self.path}: holds {len(h5)} frames, but the checkpoint says {n_frames} were written")
                coordinates = h5.read(n_frames=n_frames).coordinates
            writer = DCDTrajectoryWriter(tmp, self.topology, self.timestep_fs, self.interval_steps, self.first_step)
            for xyz_nm in coordinates:
                writer._dcd.writeModel(xyz_nm)
            writer.close()

        atomic_write(self.partial_path, write)


#: Frames read from the partial DCD at a time when the HDF5 file is written.
_CHUNK_FRAMES = 10_000


def _new_hdf5(file_class, path: str):
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The .h5 extension is recommended")  # a temporary file's name
        return file_class(path, "w")
