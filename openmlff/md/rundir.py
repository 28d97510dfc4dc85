"""The MD run directory: its file layout and its one-writer lock (docs/architecture.md "MD run directory").

Every module that reads or writes a run folder names its files through RunDirectory; the contents
of each file are described in openmlff.md.runner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..locks import BusyError, FolderLock, is_locked
from .trajectory import TRAJECTORY_FILES

CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_PREFIX = "checkpoint_step"


class RunBusyError(BusyError):
    """Another process is writing this run directory (a second `simulate`, or a campaign worker)."""


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

    def read_summary(self) -> dict | None:
        """summary.json, or None while the run has not ended."""
        return json.loads(self.summary_json.read_text()) if self.summary_json.is_file() else None

    def checkpoint_step(self) -> int | None:
        """The step of the committed checkpoint, or None (none yet, or unreadable)."""
        try:
            return int(json.loads(self.checkpoint_json.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
