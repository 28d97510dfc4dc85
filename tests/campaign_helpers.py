"""Helpers of the campaign tests (test_campaign.py, test_campaign_batches.py): a spec file, a finished run's check."""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import numpy as np

from openmlff.campaign import read_attempts
from openmlff.md.state_table import read_state_csv

REPO_ROOT = Path(__file__).resolve().parents[1]
STRETCHED_BOND = (0, 14)  # aspirin C0-H14: the blow-up model breaks it within a few fs
REPORT_INTERVAL = 20


def write_spec(folder: Path, models: dict, data: Path, frames=(3, 7), seeds=(0, 1), steps: int = 200,
               name: str = "grid", suffix: str = ".json", **md) -> Path:
    spec = {"name": name, "models": {k: str(v) for k, v in models.items()},
            "starts": {"data": str(data), "frames": list(frames)}, "seeds": list(seeds), "temperatures_K": [500],
            "md": {"steps": steps, "report_interval_steps": REPORT_INTERVAL, "checkpoint_interval_steps": 100,
                   "platform": "Reference", **md}}
    path = folder / f"{name}{suffix}"
    path.write_text(json.dumps(spec, indent=1))
    return path


def check_run_done_once(run_dir: Path, starts: int = 1, new_runs: int = 1) -> dict:
    """A finished run: `starts` attempts, `new_runs` of them found no run.json; every state row and frame once."""
    summary = json.loads((run_dir / "summary.json").read_text())
    attempts = [a for a in read_attempts(run_dir) if a["event"] == "start"]
    assert len(attempts) == starts, (run_dir.name, attempts)
    assert sum(a["new_run"] for a in attempts) == new_runs, (run_dir.name, attempts)
    steps = read_state_csv(run_dir / "state.csv")["step"]
    assert len(steps) == summary["state_rows_written"]
    np.testing.assert_array_equal(steps, REPORT_INTERVAL * np.arange(len(steps)))  # each reported step once
    last = summary["collapse_step"] if summary["collapse_step"] is not None else summary["steps_completed"]
    assert steps[-1] == REPORT_INTERVAL * (last // REPORT_INTERVAL)
    traj = mdtraj.load(str(run_dir / "trajectory.dcd"), top=str(run_dir / "topology.pdb"))
    assert traj.n_frames == summary["frames_written"] == len(steps)
    return summary
