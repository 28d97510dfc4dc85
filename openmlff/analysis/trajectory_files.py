"""Trajectories that openmlff did not write: ASE .traj, extended XYZ, and the formats mdtraj reads, as a RunData.

`load_trajectory_file(path, reference)` reads the frames (ASE for .traj and .xyz/.extxyz; mdtraj for DCD, XTC,
TRR, NetCDF (.nc), HDF5 (.h5), LAMMPS trajectories and the rest, with `topology` (a PDB, ...) or else the
reference data's atoms as the topology) and makes the RunData that `analyze_run` reads for its own runs:
the first frame is the start, the bond criterion compares with the reference data's mean bond lengths (as
`openmlff simulate --data` does), and there is no model unless the caller gives one. Frame times come from
`frame_interval_ps` when given, else from the file when it stores them (XTC, TRR, NetCDF, HDF5: mdtraj's
`time`, uniform; extended XYZ: a `time_ps` key on every comment line); otherwise the file is refused, asking
for the interval. A trajectory whose atoms differ from the reference's is refused naming the first differing
atom. Reading runs no code: ASE's .traj is its own JSON-and-arrays format, the others are coordinate files.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mdtraj
import numpy as np

from ..core import elements
from ..data.dataset import Dataset
from ..core.errors import InputError
from ..md.start import MAX_REFERENCE_FRAMES
from ..core.units import FS_IN_PS, NM_IN_ANGSTROM
from .observables import topology_atomic_numbers
from ..md.rundir import array_sha256
from .run_files import RunData, RunFileError, evenly_spaced_frames

#: Read with ASE; every other suffix goes to mdtraj.
ASE_SUFFIXES = (".traj", ".xyz", ".extxyz")
#: run.json's "source" of a RunData made from a trajectory file.
SOURCE = "trajectory file"


def load_trajectory_file(path, reference: Dataset, topology=None, frame_interval_ps: float | None = None,
                         bond_deviation_limit_angstrom: float | None = None) -> RunData:
    """The frames of `path` as a RunData (see the module docstring); RunFileError naming the file when it cannot be
    read, holds no frames, has other atoms than `reference`, or has no frame times and no `frame_interval_ps`."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: trajectory file not found")
    if frame_interval_ps is not None and not (np.isfinite(frame_interval_ps) and frame_interval_ps > 0):
        raise InputError(f"--frame-interval-ps must be a positive number of ps, got {frame_interval_ps}")
    if path.suffix.lower() in ASE_SUFFIXES:
        positions_angstrom, zs, times_ps = _read_ase(path)
    else:
        positions_angstrom, zs, times_ps = _read_mdtraj(path, reference, topology)
    check_same_atoms(path, zs, reference)
    interval = _frame_interval_ps(path, times_ps, frame_interval_ps)
    from ..md.config import SimulationConfig
    from ..structures.builtin import structure_from_atoms

    limit = bond_deviation_limit_angstrom or SimulationConfig.bond_deviation_limit_angstrom
    reference_R = reference.R[evenly_spaced_frames(reference.n_frames, MAX_REFERENCE_FRAMES)]
    omm_topology = structure_from_atoms("molecule", zs, positions_angstrom[0]).topology
    traj = mdtraj.Trajectory(xyz=(positions_angstrom / NM_IN_ANGSTROM).astype(np.float32),
                             topology=mdtraj.Topology.from_openmm(omm_topology))
    record = {"source": SOURCE, "file": str(path.resolve()),
              "model": {"kind": None, "name": None, "path": None, "sha256": None, "metadata": {}},
              "structure": {"atomic_numbers": zs.tolist(), "positions_angstrom": positions_angstrom[0].tolist()},
              "reference_positions": {"sha256": array_sha256(reference_R), "source": reference.source},
              "config": {"timestep_fs": interval / FS_IN_PS, "bond_deviation_limit_angstrom": limit},
              "trajectory": {"file": str(path.resolve()), "frame_interval_steps": 1,
                             "frame_interval_ps": interval}}
    return RunData(directory=path.parent, record=record, summary=None, trajectory=traj,
                   frame_steps=np.arange(traj.n_frames, dtype=np.int64), n_trajectory_frames=traj.n_frames,
                   atomic_numbers=zs, start_positions_angstrom=positions_angstrom[0], frame_interval_steps=1,
                   timestep_fs=interval / FS_IN_PS)


def check_same_atoms(path, zs: np.ndarray, reference: Dataset) -> None:
    """RunFileError naming `path` and the first atom whose element differs from the reference's."""
    ref = np.asarray(reference.z, dtype=np.int64)
    if len(zs) != len(ref):
        raise RunFileError(f"{path}: the trajectory has {len(zs)} atoms, the reference data {reference.source} "
                           f"{len(ref)}; expected the same atoms in the same order")
    differ = np.flatnonzero(zs != ref)
    if differ.size:
        i = int(differ[0])
        raise RunFileError(f"{path}: atom {i} is {_name(zs[i])}, the reference data {reference.source} has "
                           f"{_name(ref[i])} there; expected the same atoms in the same order")


def _name(z: int) -> str:
    try:
        return f"{elements.symbol(int(z))} (Z={int(z)})"
    except ValueError:
        return f"Z={int(z)}"


def _read_ase(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    import ase.io

    try:
        frames = ase.io.read(str(path), index=":", format="traj" if path.suffix.lower() == ".traj" else "extxyz")
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds for a damaged file
        raise RunFileError(f"{path}: cannot read the trajectory with ASE ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise RunFileError(f"{path}: the trajectory holds no frames")
    zs = frames[0].numbers.astype(np.int64)
    for k, atoms in enumerate(frames):
        if not np.array_equal(atoms.numbers, zs):
            raise RunFileError(f"{path}: frame {k} has other atoms than frame 0")
    positions = np.stack([atoms.positions for atoms in frames]).astype(np.float64)
    if not np.isfinite(positions).all():
        raise RunFileError(f"{path}: holds non-finite positions")
    times = [atoms.info.get("time_ps") for atoms in frames]
    return positions, zs, (np.asarray(times, dtype=np.float64) if all(t is not None for t in times) else None)


def _read_mdtraj(path: Path, reference: Dataset, topology) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    kwargs = {}
    if path.suffix.lower() not in (".h5", ".pdb"):
        if topology is not None:
            if not Path(topology).is_file():
                raise RunFileError(f"{topology}: topology file not found")
            kwargs["top"] = str(topology)
        else:  # coordinates alone: the reference's atoms are the topology
            from ..structures.builtin import structure_from_atoms

            kwargs["top"] = mdtraj.Topology.from_openmm(
                structure_from_atoms("reference", reference.z, reference.R[0]).topology)
    try:
        with warnings.catch_warnings():  # mdtraj's multi-line advice to install netCDF4 (scipy reads NetCDF fine)
            warnings.filterwarnings("ignore", message=".*netCDF4.*")
            traj = mdtraj.load(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - mdtraj raises OSError, ValueError, ... for damaged or mismatched files
        raise RunFileError(f"{path}: cannot read the trajectory with mdtraj ({type(exc).__name__}: {exc})") from None
    if traj.n_frames == 0:
        raise RunFileError(f"{path}: the trajectory holds no frames")
    zs = topology_atomic_numbers(traj.topology)
    stores_time = path.suffix.lower() in (".xtc", ".trr", ".nc", ".ncdf", ".h5")
    return traj.xyz.astype(np.float64) * NM_IN_ANGSTROM, zs, (traj.time.astype(np.float64) if stores_time else None)


def _frame_interval_ps(path: Path, times_ps: np.ndarray | None, given: float | None) -> float:
    if given is not None:
        return float(given)
    if times_ps is None or len(times_ps) < 2:
        if times_ps is not None:  # one frame: no interval to tell, none needed
            return 1.0
        raise RunFileError(f"{path}: the file does not say the time between frames; give --frame-interval-ps")
    steps = np.diff(times_ps)
    if not (steps > 0).all() or not np.allclose(steps, steps[0], rtol=1e-4):
        raise RunFileError(f"{path}: the frame times are not evenly spaced ({steps.min():g} to {steps.max():g} ps); "
                           "give --frame-interval-ps")
    return round(float(steps.mean()), 6)  # files store times as float32: 0.0099999998 ps is 0.01 ps
