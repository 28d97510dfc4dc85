"""Molecular dynamics with exported models in OpenMM: platforms, topology, System, monitor, reporters, runner.

Typical use:

    from openmlff.md import SimulationConfig, load_structure, run_simulation
    topology, z, positions = load_structure("aspirin.xyz")
    summary = run_simulation("model.pt", z, positions, "runs/aspirin-500K-seed0",
                             SimulationConfig(temperature_K=500, steps=600_000, seed=0), topology=topology)
"""

from .monitor import (
    BrokenBond, CollapseEvent, StabilityMonitor, default_temperature_limit_K,
)
from .platforms import PlatformError, available_platforms, select_platform, set_torch_threads
from .reporters import (
    STATE_COLUMNS, Checkpointer, DCDTrajectoryReporter, StateCSVReporter, StepRecord, read_state_csv,
    truncate_dcd,
)
from .runner import (
    ResumeMismatchError, RunPaths, SimulationConfig, read_run_summary, run_simulation,
)
from .system import (
    BACKENDS, MODEL_METADATA_FILE, ModelFileError, TorchModelComputation, build_system, check_model_atoms,
    file_sha256, read_model_metadata,
)
from .topology import (
    Structure, load_structure, topology_atomic_numbers, topology_from_atomic_numbers, write_topology_pdb,
)

__all__ = [
    "BACKENDS", "MODEL_METADATA_FILE", "STATE_COLUMNS",
    "BrokenBond", "Checkpointer", "CollapseEvent", "DCDTrajectoryReporter", "ModelFileError", "PlatformError",
    "ResumeMismatchError", "RunPaths", "SimulationConfig", "StabilityMonitor", "StateCSVReporter", "StepRecord",
    "Structure", "TorchModelComputation",
    "available_platforms", "build_system", "check_model_atoms", "default_temperature_limit_K", "file_sha256",
    "load_structure", "read_model_metadata", "read_run_summary", "read_state_csv", "run_simulation",
    "select_platform", "set_torch_threads", "topology_atomic_numbers", "topology_from_atomic_numbers",
    "truncate_dcd", "write_topology_pdb",
]
