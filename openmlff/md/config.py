"""SimulationConfig: every setting of one MD run, named once (docs/architecture.md "MD run directory").

The fields are the `simulate` command's options (`timestep_fs` -> `--timestep-fs`; the older short
names stay as aliases) and the keys of a campaign spec's [md] table, with the same defaults
(openmlff.core.config). A config validates itself on construction: ConfigError names the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import check, check_finite, setting
from ..potentials.model_ref import BACKENDS
from .integrators import INTEGRATORS

# This module imports neither torch nor OpenMM, so that a run directory's settings are read without them.

#: Collapse criteria's defaults (md/monitor.py applies them): a bond beyond ±0.5 Å of its reference length,
#: two non-bonded atoms closer than 0.7 Å, a temperature above max(2000 K, 4 x the thermostat's).
DEFAULT_BOND_DEVIATION_LIMIT_ANGSTROM = 0.5
DEFAULT_MIN_NONBONDED_DISTANCE_ANGSTROM = 0.7
DEFAULT_TEMPERATURE_LIMIT_K = 2000.0
#: Checked frames kept for a look at the approach to a collapse.
DEFAULT_FRAMES_KEPT = 10
#: Trajectory formats and the file each writes in a run directory (md/trajectory.py writes them).
TRAJECTORY_FILES = {"dcd": "trajectory.dcd", "xtc": "trajectory.xtc", "hdf5": "trajectory.h5"}
TRAJECTORY_FORMATS = tuple(TRAJECTORY_FILES)

#: Config fields that may differ when a run is resumed (they do not change the trajectory).
RESUMABLE_CHANGES = ("torch_threads", "checkpoint_interval_steps", "checkpoint_interval_s")
#: Config fields that may grow on resume (extending the run); recorded in run.json's history.
EXTENSIBLE_FIELDS = ("steps",)
#: Checkpoints: every this many steps, and at the first monitor check after this many seconds of wall
#: time since the last one, whichever comes first; so a killed run loses at most a few minutes.
DEFAULT_CHECKPOINT_INTERVAL_STEPS = 1000
DEFAULT_CHECKPOINT_INTERVAL_S = 180.0


def default_temperature_limit_K(temperature_K: float) -> float:
    """Temperature above which a run counts as collapsed: max(2000 K, 4 x the thermostat temperature)."""
    return max(DEFAULT_TEMPERATURE_LIMIT_K, 4.0 * float(temperature_K))


@dataclass
class SimulationConfig:
    """Settings of one MD run (units in the names; each field's help says what it does).

    OpenMM reads a seed of 0 as 'choose one at random', so OpenMM is given seed + 1. Of the fields,
    only RESUMABLE_CHANGES may differ when a run is resumed, and `steps` may grow (extending it).
    """

    temperature_K: float = setting(300.0, "thermostat temperature in K (verlet: of the initial velocities)",
                                   aliases=("--temperature",))
    timestep_fs: float = setting(0.5, "integration timestep in fs", aliases=("--timestep",))
    steps: int = setting(20000, "MD steps of the run (raise it to extend a run)")
    integrator: str = setting("langevin_middle", "langevin_middle (NVT), nose_hoover (NVT) or verlet (NVE)")
    friction_per_ps: float = setting(1.0, "Langevin friction or Nosé-Hoover collision frequency in 1/ps",
                                     aliases=("--friction",))
    seed: int = setting(0, "seed of the initial velocities and the Langevin noise")
    minimize: bool = setting(False, "minimise the energy (OpenMM LocalEnergyMinimizer) before drawing velocities")
    platform: str | None = setting(None, "OpenMM platform: CUDA, OpenCL, CPU or Reference (default: the fastest "
                                         "available, CUDA > OpenCL > CPU)")
    platform_precision: str | None = setting(None, "platform precision: single, mixed (default on GPUs) or double",
                                             aliases=("--precision",))
    cuda_graphs: bool = setting(False, "TorchForce useCUDAGraphs (acts on CUDA only)")
    cuda_graph_warmup_steps: int = setting(10, "TorchForce CUDAGraphWarmupSteps", aliases=("--cuda-graph-warmup",))
    report_interval_steps: int = setting(100, "steps between trajectory frames and state rows (full checks: "
                                              "energy and forces too)", aliases=("--report-interval",))
    monitor_interval_steps: int = setting(10, "steps between cheap stability checks (positions and velocities); "
                                               "must divide the report interval", aliases=("--monitor-interval",))
    checkpoint_interval_steps: int = setting(DEFAULT_CHECKPOINT_INTERVAL_STEPS, "steps between checkpoints",
                                             aliases=("--checkpoint-interval",))
    checkpoint_interval_s: float = setting(DEFAULT_CHECKPOINT_INTERVAL_S, "also a checkpoint at the first check "
                                           "after this many seconds of wall time")
    trajectory_format: str = setting("dcd", "dcd, xtc or hdf5")
    bond_deviation_limit_angstrom: float = setting(DEFAULT_BOND_DEVIATION_LIMIT_ANGSTROM,
                                                   "collapse when a bond departs this far from its reference "
                                                   "length, in Å", aliases=("--bond-deviation",))
    min_nonbonded_distance_angstrom: float | None = setting(DEFAULT_MIN_NONBONDED_DISTANCE_ANGSTROM,
                                                            "collapse when non-bonded atoms come closer, in Å")
    temperature_limit_K: float | None = setting(None, "collapse above this temperature in K (default: "
                                                      "max(2000 K, 4 x temperature_K))",
                                                aliases=("--temperature-limit",))
    collapse_frames_kept: int = setting(DEFAULT_FRAMES_KEPT, "checked frames written to "
                                        "collapse_frames.dcd after a collapse")
    solvate_padding_nm: float | None = setting(None, "solvate the molecule in a cube of TIP3P-FB water, OpenMM "
                                               "Modeller's padding in nm (edge = the molecule's diameter + padding, "
                                               "at least 2 x padding: its periodic images are at least padding "
                                               "apart); the model on the molecule, amber14 on the water (mixed "
                                               "ML/MM, PME; md/environment.py)", aliases=("--solvate",))
    pressure_bar: float | None = setting(None, "NPT: a Monte Carlo barostat at this pressure in bar (periodic and "
                                               "solvated runs)", aliases=("--pressure",))
    barostat_interval_steps: int | None = setting(None, "steps between Monte Carlo box moves (default 25)")
    nonbonded_cutoff_nm: float | None = setting(None, "PME real-space cutoff of solvated runs in nm (default 1.0)")
    backend: str = setting("torchforce", "torchforce (openmm-torch), pythonforce (openmm.PythonForce) or compiled "
                                         "(openmm.PythonForce of the model compiled by Inductor on this machine; "
                                         "openmlff model files, cached in $OPENMLFF_CACHE_DIR)")
    torch_threads: int | None = setting(None, "torch threads (default: openmlff.core.threads' choice, 1 for molecules "
                                              "below 2000 atoms)", aliases=("--threads",))

    def __post_init__(self) -> None:
        check_finite(self)
        for name in ("temperature_K", "timestep_fs", "report_interval_steps", "monitor_interval_steps",
                     "checkpoint_interval_steps", "checkpoint_interval_s", "bond_deviation_limit_angstrom",
                     "cuda_graph_warmup_steps"):
            value = getattr(self, name)
            check(self, value > 0, name, f"must be positive, got {value}")
        check(self, self.steps >= 1, "steps", f"must be a positive number of steps (a run of none would count as "
                                              f"stable), got {self.steps}")
        check(self, self.integrator in INTEGRATORS, "integrator",
              f"must be one of {list(INTEGRATORS)}, got {self.integrator!r}")
        check(self, self.friction_per_ps >= 0 and not (self.integrator == "nose_hoover" and self.friction_per_ps == 0),
              "friction_per_ps", f"must be >= 0 (> 0 for nose_hoover), got {self.friction_per_ps}")
        check(self, 0 <= self.seed < 2**31 - 1, "seed", f"must be in [0, 2**31 - 2], got {self.seed}")
        check(self, self.report_interval_steps % self.monitor_interval_steps == 0, "monitor_interval_steps",
              f"({self.monitor_interval_steps}) must divide report_interval_steps ({self.report_interval_steps})")
        check(self, self.trajectory_format in TRAJECTORY_FORMATS, "trajectory_format",
              f"must be one of {list(TRAJECTORY_FORMATS)}, got {self.trajectory_format!r}")
        check(self, self.backend in BACKENDS, "backend", f"must be one of {list(BACKENDS)}, got {self.backend!r}")
        check(self, not self.cuda_graphs or self.backend == "torchforce", "cuda_graphs", "needs backend 'torchforce'")
        for name in ("temperature_limit_K", "min_nonbonded_distance_angstrom", "solvate_padding_nm", "pressure_bar",
                     "barostat_interval_steps", "nonbonded_cutoff_nm"):
            value = getattr(self, name)
            check(self, value is None or value > 0, name, f"must be positive or None, got {value}")
        check(self, self.collapse_frames_kept >= 0, "collapse_frames_kept",
              f"must be >= 0, got {self.collapse_frames_kept}")
        check(self, self.pressure_bar is None or self.integrator != "verlet", "pressure_bar",
              "NPT needs a thermostat: use integrator langevin_middle or nose_hoover, not verlet")
        check(self, self.torch_threads is None or self.torch_threads >= 1, "torch_threads",
              f"must be a positive integer or None, got {self.torch_threads}")

    @property
    def resolved_temperature_limit_K(self) -> float:
        limit = self.temperature_limit_K
        return default_temperature_limit_K(self.temperature_K) if limit is None else float(limit)

    @property
    def openmm_seed(self) -> int:
        return int(self.seed) + 1

    @property
    def torch_properties(self) -> dict[str, str] | None:
        """The TorchForce properties this config asks for (None for the PythonForce backend)."""
        if self.backend != "torchforce":
            return None
        from ..potentials.exported import torchforce_properties

        return torchforce_properties(self.cuda_graphs, self.cuda_graph_warmup_steps)
