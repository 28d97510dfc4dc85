"""CSV tables: columns of equal length, each named with its unit in brackets (e.g. 'force_mae [kcal/mol/Å]').

Floats are written with Python's repr (shortest text that reads back the same float64), so a
table read back gives the same numbers. Files are written atomically.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..core.atomic_io import atomic_write_text
from ..core.errors import InputError


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return "" if value is None else str(value)


def write_table(path, columns: dict) -> Path:
    """Write {column name: 1-D sequence} as a CSV file (header row, one row per index); ValueError if lengths differ."""
    names = list(columns)
    values = [list(np.asarray(columns[name], dtype=object).reshape(-1)) for name in names]
    lengths = {name: len(v) for name, v in zip(names, values)}
    if len(set(lengths.values())) > 1:
        raise InputError(f"{path}: columns have different lengths {lengths}; a table needs one value per row in each")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([_cell(v) for v in row] for row in zip(*values))
    return atomic_write_text(path, buffer.getvalue())


def read_table(path) -> dict[str, np.ndarray]:
    """A CSV written by write_table as {column name: array} (float64 where every cell is a number, else str)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError(f"{path}: empty CSV file, expected a header row")
    header, body = rows[0], rows[1:]
    out = {}
    for k, name in enumerate(header):
        cells = [row[k] for row in body]
        try:
            out[name] = np.asarray([float(c) for c in cells], dtype=np.float64)
        except ValueError:
            out[name] = np.asarray(cells, dtype=str)
    return out
