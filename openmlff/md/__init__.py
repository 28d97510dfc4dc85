"""Molecular dynamics with exported models in OpenMM: platforms, System, integrators, monitor, writers, runner.

Typical use:

    from openmlff.structures import load_structure
    from openmlff.md import SimulationConfig, run_simulation
    s = load_structure("aspirin")
    summary = run_simulation("model.pt", s.atomic_numbers, s.positions_angstrom, "runs/aspirin-500K-seed0",
                             SimulationConfig(temperature_K=500, steps=600_000, seed=0), topology=s.topology)
"""

from .ase_calculator import ExportedModelCalculator
from .config import SimulationConfig
from .integrators import INTEGRATORS, make_integrator
from .monitor import (
    BrokenBond, CheckedFrame, ClosePair, CollapseDetected, CollapseEvent, MonitorReporter, StabilityMonitor,
    default_temperature_limit_K,
)
from .platforms import PlatformError, available_platforms, select_platform
from .reporters import (
    STATE_COLUMNS, Checkpointer, ScheduledReporter, StateCSVReporter, StepRecord, StepRecords, read_state_csv,
)
from .rundir import ResumeMismatchError, RunBusyError, RunDirectory, RunSummary
from .runner import read_run_summary, run_simulation
from ..potentials.exported import (
    BACKENDS, MODEL_METADATA_FILE, ModelFileError, TorchModelComputation, build_system, check_model_atoms,
    build_replica_system, file_sha256, read_model_metadata, torchforce_properties, write_replica_module,
)
from .replicas import replica_directories, run_replicas
from .trajectory import (
    TRAJECTORY_FILES, TRAJECTORY_FORMATS, DCDTrajectoryWriter, HDF5TrajectoryWriter, TrajectoryMark,
    TrajectoryWriter, XTCTrajectoryWriter, hdf5_partial_path, open_trajectory, read_dcd_frames, read_dcd_layout,
    truncate_dcd,
)

__all__ = [
    "BACKENDS", "INTEGRATORS", "MODEL_METADATA_FILE", "STATE_COLUMNS", "TRAJECTORY_FILES", "TRAJECTORY_FORMATS",
    "BrokenBond", "CheckedFrame", "Checkpointer", "ClosePair", "CollapseDetected", "CollapseEvent", "DCDTrajectoryWriter",
    "ExportedModelCalculator", "HDF5TrajectoryWriter", "ModelFileError", "PlatformError", "ResumeMismatchError",
    "MonitorReporter", "RunBusyError", "RunDirectory", "RunSummary", "ScheduledReporter", "SimulationConfig",
    "StabilityMonitor", "StateCSVReporter", "StepRecord", "StepRecords", "TorchModelComputation",
    "TrajectoryMark", "TrajectoryWriter", "XTCTrajectoryWriter", "available_platforms", "build_replica_system",
    "build_system",
    "check_model_atoms", "default_temperature_limit_K", "file_sha256", "hdf5_partial_path", "make_integrator",
    "open_trajectory", "read_dcd_frames", "read_dcd_layout", "read_model_metadata", "read_run_summary",
    "read_state_csv", "replica_directories", "run_replicas", "run_simulation", "select_platform",
    "torchforce_properties", "truncate_dcd", "write_replica_module",
]
