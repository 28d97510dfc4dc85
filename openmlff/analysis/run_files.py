"""Reading an MD run directory (openmlff.md.runner) for analysis, refusing damaged files by name.

A run directory holds run.json (inputs), a trajectory (frames every `frame_interval_steps` steps from step 0; DCD or
XTC with topology.pdb beside it, or HDF5 with the topology inside, as run.json's "trajectory" block names them) and,
once the run has ended, summary.json. A collapse found between two trajectory frames (the monitor checks more often
than frames are written) is only in collapse_frames.dcd, whose steps summary.json lists: `load_run` appends the
frames of that file that come after the trajectory's last frame, so the analysis sees the collapse. mdtraj silently
drops a cut last frame of a DCD file, so a DCD file's length is checked against its header first
(`check_dcd_complete`); for every format the frames read are checked against the frames the run says it wrote
(summary.json, or checkpoint.json while it runs). A missing, empty or truncated trajectory is an error naming the
file.
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
from ..core.errors import InputError
from ..md.dcd import read_dcd_layout
from ..md.rundir import RunDirectory, RunSummary
from ..core.units import FS_IN_PS, NM_IN_ANGSTROM
from .observables import topology_atomic_numbers


class RunFileError(InputError):
    """A file of a run directory is missing, empty, truncated or does not fit the run; the message names it."""


@dataclass
class RunData:
    """What an analysis needs from a run directory.

    trajectory: the frames (mdtraj, positions in nm): the trajectory file's, then the collapse frames
    after it; frame_steps (n_frames,): the MD step of each; n_trajectory_frames: how many come from
    the trajectory file. atomic_numbers (n_atoms,) and start_positions_angstrom (n_atoms, 3) are
    run.json's; summary is summary.json, or None while the run has not ended.
    """

    directory: Path
    record: dict
    summary: RunSummary | None
    trajectory: mdtraj.Trajectory
    frame_steps: np.ndarray
    n_trajectory_frames: int
    atomic_numbers: np.ndarray
    start_positions_angstrom: np.ndarray
    frame_interval_steps: int
    timestep_fs: float
    #: run.json's "environment" (a periodic or solvated run, md/environment.py), else None.
    environment: dict | None = None
    #: The whole system's frames (water and ions too) of a solvated run loaded with keep_solvent, else None.
    solvated_trajectory: mdtraj.Trajectory | None = None

    @property
    def frame_times_ps(self) -> np.ndarray:
        """Simulated time of each frame in ps."""
        return self.frame_steps * self.timestep_fs * FS_IN_PS

    @property
    def model_path(self) -> Path | None:
        """The run's model file; None for a classical force field or a reference method (run.json's model.name)."""
        path = self.record["model"].get("path")
        return None if path is None else Path(path)

    @property
    def model_metadata(self) -> dict:
        return dict(self.record["model"].get("metadata") or {})


def check_dcd_complete(path) -> int:
    """Number of frames of a DCD file written by OpenMM; RunFileError naming it if empty or truncated: the bytes
    after the header are not a whole number of frames, or fewer than the header's frame count (a run killed while
    writing, or a file cut in a copy)."""
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
        raise RunFileError(f"{path}: truncated inside the header ({size} bytes, "
                           f"the header needs {layout.header_bytes})")
    complete, extra = divmod(body, layout.frame_bytes)
    if extra or complete < layout.n_frames:
        raise RunFileError(
            f"{path}: truncated trajectory: the header says {layout.n_frames} frames of {layout.n_atoms} atoms, "
            f"the file holds {complete} complete frames" + (f" and {extra} bytes of a cut frame" if extra else ""))
    if complete == 0:
        raise RunFileError(f"{path}: the trajectory holds no frames")
    return int(complete)


def load_run(run_dir, keep_solvent: bool = False) -> RunData:
    """Read run.json, summary.json (if the run has ended), the topology and the trajectory of a run directory;
    RunFileError naming the file when one is missing or damaged (module docstring) or the topology's atoms differ
    from run.json's. In a periodic or solvated run `trajectory` is the molecule alone (the model's atoms, no box);
    with keep_solvent the whole system's frames are also in `solvated_trajectory`."""
    paths = RunDirectory(Path(run_dir))
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
        trajectory_path = paths.directory / record["trajectory"]["file"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunFileError(f"{paths.run_json}: not a run record written by openmlff.md.runner ({exc!r})") from None
    summary = paths.read_summary()
    traj = read_trajectory(trajectory_path, record["trajectory"].get("topology"))
    expected = _frames_written(paths.directory, summary)
    if expected is not None and traj.n_frames < expected:
        raise RunFileError(f"{trajectory_path}: truncated trajectory: holds {traj.n_frames} frames, the run "
                           f"wrote {expected} ({'summary.json' if summary else 'checkpoint.json'})")
    environment = record.get("environment")
    system_zs = zs if environment is None else np.asarray(environment["atomic_numbers"], dtype=np.int64)
    topology_zs = topology_atomic_numbers(traj.topology)
    if not np.array_equal(topology_zs, system_zs):
        raise RunFileError(f"{trajectory_path}: the topology's elements {topology_zs.tolist()} differ from the atomic "
                           f"numbers in {paths.run_json} {system_zs.tolist()}")
    solvated = None
    if environment is not None:
        solvated = traj if keep_solvent else None
        traj = traj.atom_slice(np.asarray(environment["ml_atoms"], dtype=np.int64))
        traj.unitcell_vectors = None  # the molecule's atoms are continuous (unwrapped): distances need no images
    steps = np.arange(traj.n_frames, dtype=np.int64) * interval
    n_trajectory_frames = traj.n_frames
    collapse = summary.collapse_frames if summary is not None else None
    if collapse:
        # a periodic run's collapse frames hold the molecule alone (the monitor's atoms)
        extra = read_trajectory(paths.directory / collapse["file"], collapse.get("topology"),
                                molecule=traj.topology if environment is not None else None)
        collapse_steps = np.asarray(collapse["steps"], dtype=np.int64)
        if extra.n_frames != collapse_steps.size:
            raise RunFileError(f"{paths.directory / collapse['file']}: holds {extra.n_frames} frames, summary.json "
                               f"lists {collapse_steps.size} steps for it")
        later = np.flatnonzero(collapse_steps > steps[-1])
        if later.size:
            traj = traj.join(extra[later], check_topology=False)
            steps = np.concatenate([steps, collapse_steps[later]])
    return RunData(directory=paths.directory, record=record, summary=summary, trajectory=traj, frame_steps=steps,
                   n_trajectory_frames=n_trajectory_frames, atomic_numbers=zs, start_positions_angstrom=start,
                   frame_interval_steps=interval, timestep_fs=timestep_fs, environment=environment,
                   solvated_trajectory=solvated)


def read_trajectory(path, topology_name: str | None = None, molecule: mdtraj.Topology | None = None
                    ) -> mdtraj.Trajectory:
    """A run's trajectory file with mdtraj: DCD or XTC with the topology file `topology_name` beside it
    (default topology.pdb), or with the Topology `molecule` when given, HDF5 (.h5) on its own. RunFileError
    naming the file if one is missing, empty, truncated (DCD) or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: trajectory file not found")
    if os.path.getsize(path) == 0:
        raise RunFileError(f"{path}: trajectory file is empty (0 bytes)")
    kwargs = {}
    if molecule is not None:
        kwargs["top"] = molecule
    elif path.suffix.lower() != ".h5":
        topology_path = path.parent / topology_name if topology_name else RunDirectory(path.parent).topology_pdb
        if not topology_path.is_file():
            raise RunFileError(f"{topology_path}: topology not found; the trajectory {path} holds no atoms or "
                               "elements and cannot be read without it")
        kwargs["top"] = str(topology_path)
    n_frames = check_dcd_complete(path) if path.suffix.lower() == ".dcd" else None
    try:
        traj = mdtraj.load(str(path), **kwargs)
    except Exception as exc:  # mdtraj raises OSError, ValueError and others for damaged files
        raise RunFileError(f"{path}: cannot read the trajectory ({type(exc).__name__}: {exc})") from None
    if traj.n_frames == 0:
        raise RunFileError(f"{path}: the trajectory holds no frames")
    if n_frames is not None and traj.n_frames != n_frames:
        raise RunFileError(f"{path}: mdtraj read {traj.n_frames} frames, the file holds {n_frames}")
    return traj


def _frames_written(directory: Path, summary: RunSummary | None) -> int | None:
    """Frames the run reports to have written: summary.json's count, else the last checkpoint's, else None."""
    if summary is not None:
        return int(summary.frames_written)
    try:
        frames = json.loads(RunDirectory(directory).checkpoint_json.read_text()).get("frames_written")
    except (FileNotFoundError, IsADirectoryError, json.JSONDecodeError):  # no checkpoint.json, or a damaged one
        return None
    return int(frames) if isinstance(frames, int) else None


def dataset_trajectory(dataset: Dataset, topology: mdtraj.Topology, frames=None) -> mdtraj.Trajectory:
    """The positions of a Dataset (Å) as an mdtraj Trajectory (nm) on `topology`, to analyse reference data
    with the same functions as a simulation. RunFileError naming the dataset if its atoms differ."""
    zs = topology_atomic_numbers(topology)
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


