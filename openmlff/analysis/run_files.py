"""Reading an MD run directory (openmlff.md.runner) for analysis, refusing damaged files by name.

A run directory holds run.json (inputs), topology.pdb + trajectory.dcd (frames every
`frame_interval_steps` steps from step 0) and, once the run has ended, summary.json. mdtraj
silently drops a cut last frame of a DCD file, so the file's length is checked against its
header first (`check_dcd_complete`): a truncated or empty trajectory is an error naming it.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import mdtraj
import numpy as np

from ..data.dataset import Dataset
from ..md.reporters import read_dcd_layout
from ..md.runner import RunPaths
from ..units import FS_IN_PS, NM_IN_ANGSTROM


class RunFileError(ValueError):
    """A file of a run directory is missing, empty, truncated or does not fit the run; the message names it."""


@dataclass
class RunData:
    """What an analysis needs from a run directory.

    trajectory: the frames (mdtraj, positions in nm); atomic_numbers (n_atoms,) and
    start_positions_angstrom (n_atoms, 3) from run.json; frame_interval_steps and timestep_fs
    give each frame's step and time; summary is summary.json, or None while the run has not ended.
    """

    directory: Path
    record: dict
    summary: dict | None
    trajectory: mdtraj.Trajectory
    atomic_numbers: np.ndarray
    start_positions_angstrom: np.ndarray
    frame_interval_steps: int
    timestep_fs: float

    @property
    def frame_steps(self) -> np.ndarray:
        """MD step of each frame (frame k is step k * frame_interval_steps)."""
        return np.arange(self.trajectory.n_frames, dtype=np.int64) * self.frame_interval_steps

    @property
    def frame_times_ps(self) -> np.ndarray:
        """Simulated time of each frame in ps."""
        return self.frame_steps * self.timestep_fs * FS_IN_PS

    @property
    def model_path(self) -> Path:
        return Path(self.record["model"]["path"])

    @property
    def model_metadata(self) -> dict:
        return dict(self.record["model"].get("metadata") or {})


def check_dcd_complete(path) -> int:
    """Number of frames of a DCD file written by OpenMM; RunFileError naming it if empty or truncated.

    Truncated: the bytes after the header are not a whole number of frames, or fewer frames
    than the header's frame count (a run killed while writing, or a file cut in a copy).
    """
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: trajectory file not found")
    size = os.path.getsize(path)
    if size == 0:
        raise RunFileError(f"{path}: trajectory file is empty (0 bytes)")
    try:
        layout = read_dcd_layout(path)
    except (ValueError, OSError, struct.error) as exc:  # struct.error: shorter than the header's fields
        raise RunFileError(f"{path}: not a readable DCD trajectory ({exc})") from None
    body = size - layout.header_bytes
    if body < 0:
        raise RunFileError(f"{path}: truncated inside the header ({size} bytes, the header needs {layout.header_bytes})")
    complete, extra = divmod(body, layout.frame_bytes)
    if extra or complete < layout.n_frames:
        raise RunFileError(
            f"{path}: truncated trajectory: the header says {layout.n_frames} frames of {layout.n_atoms} atoms, "
            f"the file holds {complete} complete frames" + (f" and {extra} bytes of a cut frame" if extra else ""))
    if complete == 0:
        raise RunFileError(f"{path}: the trajectory holds no frames")
    return int(complete)


def load_run(run_dir) -> RunData:
    """Read run.json, summary.json (if the run has ended), topology.pdb and trajectory.dcd of a run directory.

    RunFileError naming the file when run.json or topology.pdb is missing, the trajectory is
    missing, empty or truncated, or the topology's atoms differ from run.json's atomic numbers.
    """
    paths = RunPaths(Path(run_dir))
    if not paths.directory.is_dir():
        raise RunFileError(f"{paths.directory}: run directory not found")
    if not paths.run_json.is_file():
        raise RunFileError(f"{paths.run_json}: not found; {paths.directory} is not an openmlff MD run directory")
    try:
        record = json.loads(paths.run_json.read_text())
        zs = np.asarray(record["structure"]["atomic_numbers"], dtype=np.int64)
        start = np.asarray(record["structure"]["positions_angstrom"], dtype=np.float64)
        interval = int(record["trajectory"]["frame_interval_steps"])
        timestep_fs = float(record["config"]["timestep_fs"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunFileError(f"{paths.run_json}: not a run record written by openmlff.md.runner ({exc!r})") from None
    trajectory_path = paths.directory / record["trajectory"].get("file", paths.trajectory.name)
    topology_path = paths.directory / record["trajectory"].get("topology", paths.topology_pdb.name)
    if not topology_path.is_file():
        raise RunFileError(f"{topology_path}: topology not found; the trajectory {trajectory_path.name} holds no "
                           "atoms or elements and cannot be read without it")
    n_frames = check_dcd_complete(trajectory_path)
    traj = mdtraj.load(str(trajectory_path), top=str(topology_path))
    if traj.n_frames != n_frames:
        raise RunFileError(f"{trajectory_path}: mdtraj read {traj.n_frames} frames, the file holds {n_frames}")
    topology_zs = np.asarray([a.element.atomic_number if a.element is not None else 0 for a in traj.topology.atoms])
    if not np.array_equal(topology_zs, zs):
        raise RunFileError(f"{topology_path}: the topology's elements {topology_zs.tolist()} differ from the atomic "
                           f"numbers in {paths.run_json.name} {zs.tolist()}")
    summary = json.loads(paths.summary_json.read_text()) if paths.summary_json.is_file() else None
    return RunData(directory=paths.directory, record=record, summary=summary, trajectory=traj, atomic_numbers=zs,
                   start_positions_angstrom=start, frame_interval_steps=interval, timestep_fs=timestep_fs)


def dataset_trajectory(dataset: Dataset, topology: mdtraj.Topology, frames=None) -> mdtraj.Trajectory:
    """The positions of a Dataset (Å) as an mdtraj Trajectory (nm) on `topology`, to analyse reference data
    with the same functions as a simulation. RunFileError naming the dataset if its atoms differ."""
    zs = np.asarray([a.element.atomic_number if a.element is not None else 0 for a in topology.atoms])
    if not np.array_equal(zs, dataset.z):
        raise RunFileError(f"{dataset.source}: the dataset's atomic numbers {dataset.z.tolist()} differ from the "
                           f"trajectory's {zs.tolist()}; expected the same atoms in the same order")
    R = dataset.R if frames is None else dataset.R[np.asarray(frames)]
    return mdtraj.Trajectory(xyz=(R / NM_IN_ANGSTROM).astype(np.float32), topology=topology)


def evenly_spaced_frames(n_frames: int, max_frames: int) -> np.ndarray:
    """Indices 0, s, 2s, ... with s = max(1, n_frames // max_frames): the subsample openmlff.md.start
    uses for the monitor's reference bond lengths (at most about max_frames frames)."""
    step = max(1, int(n_frames) // int(max_frames))
    return np.arange(0, int(n_frames), step)
