"""Molecular dynamics with exported models in OpenMM: platforms, System, integrators, monitor, writers, runner.

Typical use:

    from openmlff.structures import load_structure
    from openmlff.md import SimulationConfig, run_simulation
    s = load_structure("aspirin")
    summary = run_simulation("model.pt", s.atomic_numbers, s.positions_angstrom, "runs/aspirin-500K-seed0",
                             SimulationConfig(temperature_K=500, steps=600_000, seed=0), topology=s.topology)

Names resolve lazily (each from the module in _EXPORTS), so that reading a run directory
(md/rundir.py, md/state_table.py, md/dcd.py) imports neither torch nor OpenMM.
"""

from importlib import import_module

#: module (relative to this package) -> the names this package hands out from it
_EXPORTS = {
    "..integrations.ase_calculator": ("ExportedModelCalculator",),
    ".config": ("SimulationConfig", "TRAJECTORY_FILES", "TRAJECTORY_FORMATS", "default_temperature_limit_K"),
    ".integrators": ("INTEGRATORS", "make_integrator"),
    ".monitor": ("BrokenBond", "CheckedFrame", "ClosePair", "CollapseDetected", "CollapseEvent", "MonitorReporter",
                 "StabilityMonitor"),
    ".platforms": ("PlatformError", "available_platforms", "select_platform"),
    ".state_table": ("STATE_COLUMNS", "read_state_csv"),
    ".reporters": ("Checkpointer", "ScheduledReporter", "StateCSVReporter", "StepRecord", "StepRecords"),
    ".rundir": ("RunBusyError", "RunDirectory", "RunSummary", "hdf5_partial_path"),
    "..core.resume": ("ResumeMismatchError",),
    ".runner": ("read_run_summary", "run_simulation"),
    "..potentials.exported": ("BACKENDS", "MODEL_METADATA_FILE", "ModelFileError", "TorchModelComputation",
                              "build_system", "check_model_atoms", "build_replica_system", "file_sha256",
                              "read_model_metadata", "torchforce_properties", "write_replica_module"),
    ".replicas": ("replica_directories", "run_replicas"),
    ".dcd": ("read_dcd_frames", "read_dcd_layout", "truncate_dcd"),
    ".trajectory": ("DCDTrajectoryWriter", "HDF5TrajectoryWriter", "TrajectoryMark", "TrajectoryWriter",
                    "XTCTrajectoryWriter", "open_trajectory"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'openmlff.md' has no attribute {name!r}")
    return getattr(import_module(_MODULE_OF[name], __name__), name)
