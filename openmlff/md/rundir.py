"""The MD run directory: its file layout and its one-writer lock (docs/architecture.md "MD run directory").

Every module that reads or writes a run folder names its files through RunDirectory; the contents
of each file are described in openmlff.md.runner.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..atomic_io import atomic_write_json
from ..errors import InputError
from ..locks import BusyError, FolderLock, is_locked
from .trajectory import TRAJECTORY_FILES

CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_PREFIX = "checkpoint_step"


class RunBusyError(BusyError):
    """Another process is writing this run directory (a second `simulate`, or a campaign worker)."""


@dataclass(frozen=True, eq=False)
class RunSummary(Mapping):
    """summary.json of an ended MD run (units in the names; times in ps, lengths in Å).

    Also a read-only mapping with the same keys as the JSON file (`summary["stable"]`), so code and
    scripts written against the plain dict of openmlff 0.1 keep working, and it compares equal to
    that dict. collapse_*: None for a stable run; first_broken_bond / closest_nonbonded_pair /
    collapse_frames: dicts as described in docs/architecture.md "MD run directory"; ns_per_day and
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
        missing = [f.name for f in fields(cls) if f.name in ("stable", "steps_completed", "steps_requested",
                                                              "simulated_time_ps") and f.name not in document]
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


@dataclass(frozen=True)
class RunDirectory:
    """The files of one MD run folder (trajectory_format picks the trajectory's name)."""

    directory: Path
    trajectory_format: str = "dcd"

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory))

    @property
    def run_json(self) -> Path:
        return self.directory / "run.json"

    @property
    def summary_json(self) -> Path:
        return self.directory / "summary.json"

    @property
    def trajectory(self) -> Path:
        return self.directory / TRAJECTORY_FILES[self.trajectory_format]

    @property
    def topology_pdb(self) -> Path:
        return self.directory / "topology.pdb"

    @property
    def state_csv(self) -> Path:
        return self.directory / "state.csv"

    @property
    def collapse_frames(self) -> Path:
        return self.directory / "collapse_frames.dcd"

    @property
    def checkpoint_json(self) -> Path:
        return self.directory / CHECKPOINT_JSON

    def checkpoint_file(self, step: int) -> Path:
        return self.directory / f"{CHECKPOINT_PREFIX}{int(step):012d}.chk"

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.directory.glob(f"{CHECKPOINT_PREFIX}*.chk"))

    def lock(self) -> FolderLock:
        """The one-writer lock of this run (re-entrant in a process); RunBusyError names the holder."""
        return FolderLock(self.directory, "MD run directory", RunBusyError)

    def is_locked(self) -> bool:
        return is_locked(self.directory)

    def read_summary(self) -> RunSummary | None:
        """summary.json, or None while the run has not ended."""
        return RunSummary.from_json(self.summary_json) if self.summary_json.is_file() else None

    def checkpoint_step(self) -> int | None:
        """The step of the committed checkpoint, or None (none yet, or unreadable)."""
        try:
            return int(json.loads(self.checkpoint_json.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
