"""state.csv, a run's table of reported steps: its columns, its reader, and cutting it back to a checkpoint.

Read without torch or OpenMM (campaign status, analysis); md/reporters.py's StateCSVReporter writes it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..core.atomic_io import atomic_write_bytes
from ..core.errors import InputError

#: Columns of state.csv, in order (energies kJ/mol, time ps, temperature K, speed ns/day, time left s).
STATE_COLUMNS = (
    "step", "time_ps", "potential_energy_kJ_per_mol", "kinetic_energy_kJ_per_mol",
    "total_energy_kJ_per_mol", "temperature_K", "speed_ns_per_day", "estimated_time_left_s",
)
#: The extra column of state.csv in a run with a committee (md/trust.py): the largest force spread over the atoms.
UNCERTAINTY_COLUMN = "max_force_uncertainty_kcal_per_mol_per_A"


def truncate_csv_rows(path, n_rows: int, columns) -> None:
    """Keep the header and the first `n_rows` data rows of a CSV file (rewritten atomically); ValueError naming
    the file if its header differs from `columns` or it has fewer rows."""
    path = Path(path)
    with open(path, newline="") as fh:
        lines = fh.read().splitlines(keepends=True)
    if not lines or next(csv.reader([lines[0]])) != list(columns):
        raise InputError(f"{path}: header is not {list(columns)}")
    complete = [line for line in lines[1:] if line.endswith("\n")]  # a row cut by a kill has no newline
    if len(complete) < n_rows:
        raise InputError(f"{path}: holds {len(complete)} rows, but the checkpoint says {n_rows} were written")
    atomic_write_bytes(path, "".join([lines[0]] + complete[:n_rows]).encode())


def read_state_csv(path) -> dict[str, np.ndarray]:
    """state.csv as columns of numpy arrays keyed by STATE_COLUMNS ('step' as int64)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    table = np.asarray(body, dtype=np.float64).reshape(len(body), len(header))
    out = {name: table[:, k] for k, name in enumerate(header)}
    if "step" in out:
        out["step"] = out["step"].astype(np.int64)
    return out
