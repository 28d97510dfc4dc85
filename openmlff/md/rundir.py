"""The MD run directory: its file layout, its one-writer lock, its input record (run.json) and the check
that a resume has the same inputs, and its summary (docs/architecture.md "MD run directory").

Every module that reads or writes a run folder names its files through RunDirectory and reads the
summary as a RunSummary; what each file holds is described in openmlff.md.runner.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..core import elements
from ..core.atomic_io import atomic_write_json
from ..core.errors import InputError
from ..core.locks import BusyError, FolderLock
from ..core.resume import check_resumable
from ..core.versions import runtime_versions, utc_now
from .config import EXTENSIBLE_FIELDS, RESUMABLE_CHANGES, TRAJECTORY_FILES, SimulationConfig
from .integrators import INTEGRATORS

TOPOLOGY_FILE = "topology.pdb"
CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_PREFIX = "checkpoint_step"
#: The files of a run with a committee (md/trust.py): its force spread so far, the frames past the threshold.
TRUST_STATE_FILE = "trust_state.npz"
UNTRUSTED_FRAMES_FILE = "untrusted_frames.npz"


class RunBusyError(BusyError):
    """Another process is writing this run directory (a second `simulate`, or a campaign worker)."""


def hdf5_partial_path(path) -> Path:
    """Where an HDF5 trajectory's frames are kept while the run goes on: trajectory.h5 -> trajectory_partial.dcd."""
    path = Path(path)
    return path.with_name(f"{path.stem}_partial.dcd")


@dataclass(frozen=True, eq=False)
class RunSummary(Mapping):
    """summary.json of an ended MD run (units in the names; times in ps, lengths in Å).

    Also a read-only mapping equal to the JSON dict (`summary["stable"]`), as openmlff 0.1 returned. collapse_*:
    None for a stable run; the dicts are described in docs/architecture.md "MD run directory"; ns_per_day and
    wall_time_s: MD wall time behind the kept steps, summed over sessions (setup and lost work excluded).
    """

    stable: bool
    steps_completed: int
    steps_requested: int
    simulated_time_ps: float
    collapse_step: int | None = None
    collapse_time_ps: float | None = None
    collapse_reason: str | None = None
    collapse_message: str | None = None
    first_broken_bond: dict | None = None
    n_broken_bonds: int = 0
    closest_nonbonded_pair: dict | None = None
    collapse_frames: dict | None = None
    frames_written: int = 0
    state_rows_written: int = 0
    trajectory: str = "trajectory.dcd"
    ns_per_day: float | None = None
    wall_time_s: float = 0.0
    setup_time_s: float = 0.0
    platform: str = ""
    backend: str = ""
    integrator: str = ""
    resumed_from_step: int | None = None
    steps_this_session: int = 0
    bonds_monitored: int = 0
    minimization: dict | None = None
    finished_at: str = ""
    #: With a committee (md/trust.py): the largest force spread of the run, when the first untrusted report
    #: came, whether the run stopped there, and the file of the untrusted frames.
    max_force_uncertainty_kcal_per_mol_per_A: float | None = None
    first_untrusted_time_ps: float | None = None
    stopped_untrusted: bool = False
    untrusted_frames: dict | None = None

    @property
    def collapsed(self) -> bool:
        return self.collapse_step is not None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, document: dict, where: str = "summary") -> "RunSummary":
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("stable", "steps_completed", "steps_requested", "simulated_time_ps")
                   if k not in document]
        if missing or not isinstance(document.get("stable"), bool):
            raise InputError(f"{where}: not a run summary (expected the keys stable (true/false), steps_completed, "
                             f"steps_requested, simulated_time_ps; missing {missing})")
        return cls(**{k: v for k, v in document.items() if k in known})

    @classmethod
    def from_json(cls, path) -> "RunSummary":
        try:
            document = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(document, str(path))

    # the mapping view: the keys of summary.json
    def __getitem__(self, key: str):
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class _RunFile:
    """A file of a run folder, by name: RunDirectory(d).state_csv is d / "state.csv"."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: RunDirectory | None, owner=None) -> Path:
        return self if run is None else run.directory / self.name


@dataclass(frozen=True)
class RunDirectory:
    """The files of one MD run folder (trajectory_format picks the trajectory's name)."""

    directory: Path
    trajectory_format: str = "dcd"

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory))

    run_json = _RunFile("run.json")
    summary_json = _RunFile("summary.json")
    topology_pdb = _RunFile(TOPOLOGY_FILE)
    state_csv = _RunFile("state.csv")
    collapse_frames = _RunFile("collapse_frames.dcd")
    trust_state = _RunFile(TRUST_STATE_FILE)
    untrusted_frames = _RunFile(UNTRUSTED_FRAMES_FILE)
    #: The relaxed start of a --solvate run (md/environment.py), kept so that every session starts from it.
    solvated_start = _RunFile("solvated_start.npz")
    checkpoint_json = _RunFile(CHECKPOINT_JSON)

    @property
    def trajectory(self) -> Path:
        return self.directory / TRAJECTORY_FILES[self.trajectory_format]

    def checkpoint_file(self, step: int) -> Path:
        return self.directory / f"{CHECKPOINT_PREFIX}{int(step):012d}.chk"

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.directory.glob(f"{CHECKPOINT_PREFIX}*.chk"))

    def lock(self) -> FolderLock:
        """The one-writer lock of this run (re-entrant in a process); RunBusyError names the holder."""
        return FolderLock(self.directory, "MD run directory", RunBusyError)

    def read_summary(self) -> RunSummary | None:
        """summary.json, or None while the run has not ended."""
        return RunSummary.from_json(self.summary_json) if self.summary_json.is_file() else None

    def checkpoint_step(self) -> int | None:
        """The step of the committed checkpoint, or None (none yet, or unreadable)."""
        try:
            return int(json.loads(self.checkpoint_json.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


# --- run.json: what was asked for, checking a resume against it, extending a run ----------------

def array_sha256(array: np.ndarray | None) -> str | None:
    """SHA-256 of an array's float64 bytes (None for None): how run.json records starts and reference frames."""
    return None if array is None else hashlib.sha256(np.ascontiguousarray(array, np.float64).tobytes()).hexdigest()


def run_record(model: dict, zs, start_angstrom, reference, config: SimulationConfig,
               platform_name: str, platform_properties: dict) -> dict:
    """run.json's document; `model` is the potential's record (openmlff.potentials.Potential.record)."""
    kind = INTEGRATORS[config.integrator]
    return {
        "created": utc_now(),
        "model": model,
        "structure": {
            "atomic_numbers": zs.tolist(),
            "symbols": elements.symbols(zs),
            "positions_angstrom": start_angstrom.tolist(),
            "positions_sha256": array_sha256(start_angstrom),
        },
        "reference_positions": None if reference is None else {
            "n_frames": int(reference.shape[0]) if reference.ndim == 3 else 1,
            "sha256": array_sha256(reference),
        },
        "config": asdict(config),
        "temperature_limit_K": config.resolved_temperature_limit_K,
        "openmm_seed": config.openmm_seed,
        "integrator": {"name": config.integrator, "openmm_class": kind.openmm_class, "ensemble": kind.ensemble,
                       "description": kind.description},
        "platform": {"name": platform_name, "properties_requested": dict(platform_properties)},
        "torchforce_properties_requested": config.torch_properties,
        "trajectory": {"file": TRAJECTORY_FILES[config.trajectory_format], "format": config.trajectory_format,
                       "topology": TOPOLOGY_FILE, "frame_interval_steps": config.report_interval_steps,
                       "first_frame_step": 0,
                       **({"partial_file": hdf5_partial_path(TRAJECTORY_FILES["hdf5"]).name}
                          if config.trajectory_format == "hdf5" else {})},
        "versions": runtime_versions(),
        "history": [],
    }


def _resume_identity(record: dict) -> dict:
    """The inputs that must be equal to resume a run, keyed by the name used in error messages."""
    return {
        "model sha256": record["model"]["sha256"],
        "model files": (record["model"].get("metadata") or {}).get("files"),  # models of other codes: what they load
        "atomic_numbers": record["structure"]["atomic_numbers"],
        "starting positions (sha256)": record["structure"]["positions_sha256"],
        "reference positions (sha256)": (record["reference_positions"] or {}).get("sha256"),
        "platform": record["platform"]["name"],
        "platform properties": record["platform"]["properties_requested"],
        "config": {f.name: record["config"].get(f.name) for f in fields(SimulationConfig)},
        "trust": record.get("trust"),  # absent (None) in runs without a committee, and in older run.json files
        "replicas": record.get("replicas"),  # a member of a batch (md/replicas.py) resumes only through its batch
    }


def check_same_inputs(run_json: Path, recorded: dict, record: dict) -> None:
    """ResumeMismatchError naming every input that differs from run.json (openmlff.core.resume.check_resumable)."""
    check_resumable(_resume_identity(recorded), _resume_identity(record), where=str(run_json),
                    may_change=[f"config.{n}" for n in RESUMABLE_CHANGES],
                    may_grow=[f"config.{n}" for n in EXTENSIBLE_FIELDS])


def record_extension(paths: RunDirectory, recorded: dict, steps: int) -> None:
    """Raise the run's step count in run.json (with a history entry), then drop the shorter run's summary."""
    recorded.setdefault("history", []).append({
        "time": utc_now(), "change": "steps", "from": recorded["config"]["steps"], "to": int(steps),
        "checkpoint_step": paths.checkpoint_step()})
    recorded["config"]["steps"] = int(steps)
    atomic_write_json(paths.run_json, recorded)
    paths.summary_json.unlink(missing_ok=True)

