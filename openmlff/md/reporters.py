"""What an MD run writes as it goes: trajectory frames (DCD), state rows (CSV) and checkpoints.

Shaped like OpenMM's app reporters: small objects with one `report()` method, fed one
StepRecord per reported step by the runner. Each writer can reopen its file for a resumed run,
dropping what was written after the checkpoint, so that a resumed run holds every frame and row
exactly once, in order. Checkpoints are committed atomically: the OpenMM checkpoint is written
under a new name, then a small JSON that names it replaces the previous one (write, then rename).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
from openmm import unit

from ..atomic_io import atomic_write_bytes, atomic_write_json
from ..units import FS_IN_PS, NM_IN_ANGSTROM

#: Columns of state.csv, in order (energies kJ/mol, time ps, temperature K, speed ns/day).
STATE_COLUMNS = (
    "step", "time_ps", "potential_energy_kJ_per_mol", "kinetic_energy_kJ_per_mol",
    "total_energy_kJ_per_mol", "temperature_K", "speed_ns_per_day",
)


@dataclass
class StepRecord:
    """The state of a run at one reported step: positions in nm, energies in kJ/mol, temperature in K."""

    step: int
    time_ps: float
    positions_nm: np.ndarray
    potential_energy_kJ_per_mol: float
    kinetic_energy_kJ_per_mol: float
    temperature_K: float
    speed_ns_per_day: float

    @property
    def total_energy_kJ_per_mol(self) -> float:
        return self.potential_energy_kJ_per_mol + self.kinetic_energy_kJ_per_mol

    @property
    def positions_angstrom(self) -> np.ndarray:
        return self.positions_nm * NM_IN_ANGSTROM


# --- DCD trajectory -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DCDLayout:
    """Byte layout of a DCD file as openmm.app.DCDFile writes it (CHARMM flavour, little-endian)."""

    n_frames: int  # the frame count in the header (NSET)
    n_atoms: int
    header_bytes: int
    frame_bytes: int


def read_dcd_layout(path) -> DCDLayout:
    """Header fields of a DCD file: frame count, atom count and the sizes needed to cut it at a frame.

    openmm.app.DCDFile(append=True) takes the frame count from the header (bytes 8-11), so the
    header and the file length must agree after a truncation.
    """
    with open(path, "rb") as fh:
        head = fh.read(100)
        if len(head) < 100 or struct.unpack("<i", head[:4])[0] != 84 or head[4:8] != b"CORD":
            raise ValueError(f"{path}: not a DCD file written by OpenMM (bad header)")
        n_frames = struct.unpack("<i", head[8:12])[0]
        has_box = struct.unpack("<i", head[48:52])[0] != 0
        title_bytes = struct.unpack("<i", head[92:96])[0]
        fh.seek(104 + title_bytes)
        n_atoms = struct.unpack("<i", fh.read(4))[0]
    header_bytes = 104 + title_bytes + 8  # title block, its end marker, then the 4-byte atom count record
    frame_bytes = (56 if has_box else 0) + 3 * (4 * n_atoms + 8)
    return DCDLayout(n_frames=n_frames, n_atoms=n_atoms, header_bytes=header_bytes, frame_bytes=frame_bytes)


def truncate_dcd(path, n_frames: int) -> None:
    """Cut a DCD file to its first `n_frames` frames, fixing the header's frame count and last step.

    ValueError naming the file if it holds fewer complete frames than asked for.
    """
    layout = read_dcd_layout(path)
    size = os.path.getsize(path)
    complete = (size - layout.header_bytes) // layout.frame_bytes
    if complete < n_frames:
        raise ValueError(f"{path}: holds {complete} complete frames, but the checkpoint says {n_frames} were written")
    with open(path, "r+b") as fh:
        fh.truncate(layout.header_bytes + n_frames * layout.frame_bytes)
        fh.seek(12)
        first_step, interval = struct.unpack("<ii", fh.read(8))
        fh.seek(8)
        fh.write(struct.pack("<i", n_frames))
        fh.seek(20)
        fh.write(struct.pack("<i", first_step + max(n_frames - 1, 0) * interval))
        fh.flush()
        os.fsync(fh.fileno())


class DCDTrajectoryReporter:
    """Writes positions as DCD frames (frame k is step first_step + k * interval_steps).

    keep_frames=None starts a new file; an integer reopens an existing file cut to that many frames
    (resume). mdtraj reads the result with the topology PDB: mdtraj.load(dcd, top=pdb).
    """

    def __init__(self, path, topology: app.Topology, timestep_fs: float, interval_steps: int,
                 first_step: int = 0, keep_frames: int | None = None) -> None:
        self.path = Path(path)
        dt = timestep_fs * FS_IN_PS * unit.picoseconds
        if keep_frames is None:
            self._file = open(self.path, "w+b")
            self._dcd = app.DCDFile(self._file, topology, dt, firstStep=first_step, interval=interval_steps)
            self.frames_written = 0
        else:
            truncate_dcd(self.path, keep_frames)
            self._file = open(self.path, "r+b")
            self._dcd = app.DCDFile(self._file, topology, dt, firstStep=first_step, interval=interval_steps, append=True)
            self.frames_written = keep_frames

    def report(self, record: StepRecord) -> None:
        """Append one frame (positions must be finite; DCDFile refuses NaN)."""
        self._dcd.writeModel(record.positions_nm)
        self.frames_written += 1

    def flush(self, sync: bool = False) -> None:
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


# --- state table --------------------------------------------------------------------------------

class StateCSVReporter:
    """Writes one row of STATE_COLUMNS per report to a CSV file, flushed at once (safe to tail).

    keep_rows=None starts a new file; an integer reopens an existing file cut to its header and
    first `keep_rows` rows (resume).
    """

    def __init__(self, path, keep_rows: int | None = None) -> None:
        self.path = Path(path)
        if keep_rows is None:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(STATE_COLUMNS)
            self._file.flush()
            self.rows_written = 0
        else:
            truncate_csv_rows(self.path, keep_rows, STATE_COLUMNS)
            self._file = open(self.path, "a", newline="")
            self._writer = csv.writer(self._file)
            self.rows_written = keep_rows

    def report(self, record: StepRecord) -> None:
        self._writer.writerow([
            record.step, repr(float(record.time_ps)), repr(float(record.potential_energy_kJ_per_mol)),
            repr(float(record.kinetic_energy_kJ_per_mol)), repr(float(record.total_energy_kJ_per_mol)),
            repr(float(record.temperature_K)), repr(float(record.speed_ns_per_day)),
        ])
        self._file.flush()
        self.rows_written += 1

    def flush(self, sync: bool = False) -> None:
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def truncate_csv_rows(path, n_rows: int, columns) -> None:
    """Keep the header and the first `n_rows` data rows of a CSV file (rewritten atomically).

    ValueError naming the file if its header differs from `columns` or it has fewer rows.
    """
    path = Path(path)
    with open(path, newline="") as fh:
        lines = fh.read().splitlines(keepends=True)
    if not lines or next(csv.reader([lines[0]])) != list(columns):
        raise ValueError(f"{path}: header is not {list(columns)}")
    complete = [line for line in lines[1:] if line.endswith("\n")]  # a row cut by a kill has no newline
    if len(complete) < n_rows:
        raise ValueError(f"{path}: holds {len(complete)} rows, but the checkpoint says {n_rows} were written")
    atomic_write_bytes(path, "".join([lines[0]] + complete[:n_rows]).encode())


def read_state_csv(path) -> dict[str, np.ndarray]:
    """state.csv as columns of numpy arrays keyed by STATE_COLUMNS ('step' as int64)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    table = np.asarray(body, dtype=np.float64).reshape(len(body), len(header))
    out = {name: table[:, k] for k, name in enumerate(header)}
    if "step" in out:
        out["step"] = out["step"].astype(np.int64)
    return out


# --- checkpoints --------------------------------------------------------------------------------

CHECKPOINT_JSON = "checkpoint.json"
_CHECKPOINT_PREFIX = "checkpoint_step"


class Checkpointer:
    """Atomic checkpoints of an OpenMM Context in a run directory.

    `save` writes context.createCheckpoint() (positions, velocities, integrator RNG state, step
    count) to a file named after the step, then commits by replacing checkpoint.json, which names
    that file, its SHA-256 and the caller's bookkeeping (step, frames and rows written); older
    checkpoint files are then removed. A kill at any moment leaves the previous commit intact.
    """

    def __init__(self, directory) -> None:
        self.directory = Path(directory)
        self.json_path = self.directory / CHECKPOINT_JSON

    def save(self, context: openmm.Context, step: int, info: dict) -> None:
        data = context.createCheckpoint()
        name = f"{_CHECKPOINT_PREFIX}{int(step):012d}.chk"
        atomic_write_bytes(self.directory / name, data)
        document = {"step": int(step), **info, "checkpoint_file": name,
                    "checkpoint_sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_json(self.json_path, document)
        for old in self.directory.glob(f"{_CHECKPOINT_PREFIX}*.chk"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def exists(self) -> bool:
        return self.json_path.is_file()

    def load(self) -> tuple[dict, bytes]:
        """The committed checkpoint: (its JSON document, the OpenMM checkpoint bytes); ValueError if corrupt."""
        document = json.loads(self.json_path.read_text())
        chk = self.directory / document["checkpoint_file"]
        if not chk.is_file():
            raise ValueError(f"{self.json_path}: names {chk.name}, which does not exist")
        data = chk.read_bytes()
        if hashlib.sha256(data).hexdigest() != document["checkpoint_sha256"]:
            raise ValueError(f"{chk}: SHA-256 differs from the one recorded in {self.json_path}")
        return document, data
