"""Writing the correlation of force metrics with MD stability (`openmlff correlate DIR`) to JSON and CSV.

The correlation document is a dict with any of these keys (the writer writes what is present):

    units                  {"force", "fnm", "energy"} of the metrics
    horizon_ps             the horizon of the stability measures
    model_metrics          {model: {metric: value}}; metric_units {metric: unit}
    stability_per_model    {model: openmlff.stability.runs.stability_of_runs(...)}
    stability_per_start    {model: openmlff.stability.correlation.per_start_outcomes(...)}
    model_level            openmlff.stability.correlation.model_level_correlation(...)
    conformation_level     {model: openmlff.stability.correlation.conformation_level_correlation(...)}
    (anything else JSON-able, e.g. settings or the metric-set info)

openmlff.stability.correlation.campaign_correlation builds the whole document from a campaign's runs. Files:
correlation.json (the whole document, NaN written as null), model_level.csv, conformation_level.csv (one block of
rows per model, a "model" column first), stability_per_model.csv and stability_per_start.csv. CSV rows carry the
units in metric_unit / stability_unit columns and in the column names; the notes that explain the tables (sign
conventions, interval method) are in correlation.json next to the rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..core.atomic_io import atomic_write_json, jsonable
from ..stability.correlation import PAIRED_KEYS
from .tables import write_table

CORRELATION_JSON = "correlation.json"
MODEL_LEVEL_CSV = "model_level.csv"
CONFORMATION_LEVEL_CSV = "conformation_level.csv"
STABILITY_CSV = "stability_per_model.csv"
STABILITY_PER_START_CSV = "stability_per_start.csv"

RANK_COLUMNS = ("n", "spearman_rho", "spearman_ci_low", "spearman_ci_high", "spearman_p", "kendall_tau",
                "kendall_ci_low", "kendall_ci_high", "kendall_p", "n_bootstrap_valid")
MODEL_LEVEL_COLUMNS = ("metric", "metric_unit", "stability_measure", "stability_unit") + RANK_COLUMNS + tuple(
    f"versus_reference_{key}" for key in PAIRED_KEYS)
CONFORMATION_LEVEL_COLUMNS = ("model", "metric", "metric_unit", "stability_measure", "stability_unit", "n_starts",
                              "n_runs", "n_collapsed", "roc_auc", "roc_auc_ci_low", "roc_auc_ci_high") + RANK_COLUMNS
#: stability_per_model.csv: column name -> key of the stability dict.
STABILITY_COLUMNS = {
    "n_runs": "n_runs", "n_collapsed": "n_collapsed", "share_stable": "share_stable",
    "median_time_to_collapse [ps]": "median_time_to_collapse_ps", "median_is_lower_bound": "median_is_lower_bound",
    "mean_time_to_collapse [ps]": "mean_time_to_collapse_ps",
    "km_median_time_to_collapse [ps]": "km_median_time_to_collapse_ps", "horizon [ps]": "horizon_ps",
}
#: stability_per_start.csv: column name -> key of the per-start entry (plus its model and start).
STABILITY_PER_START_COLUMNS = {"model": "model", "start": "start", "n_runs": "n_runs", "n_collapsed": "n_collapsed",
                               "collapse_rate": "collapse_rate",
                               "mean_time_to_collapse [ps]": "mean_time_to_collapse_ps"}


def _nan_for_none(value):
    return math.nan if value is None else value


def _columns(rows: list[dict], names) -> dict[str, list]:
    """Table columns from row dicts, `names` the keys or {column name: key} (None as NaN, so numeric columns read
    back as numbers)."""
    names = names if isinstance(names, dict) else {name: name for name in names}
    return {name: [_nan_for_none(row.get(key)) for row in rows] for name, key in names.items()}


def write_correlation_tables(result: dict, out_dir) -> dict[str, Path]:
    """Write the correlation document `result` (module docstring) into out_dir; returns {file name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    model_level = result.get("model_level")
    if model_level:
        written[MODEL_LEVEL_CSV] = write_table(out_dir / MODEL_LEVEL_CSV, _columns(model_level["rows"], MODEL_LEVEL_COLUMNS))
    conformation = result.get("conformation_level") or {}
    rows = [dict(row, model=model) for model, table in conformation.items() for row in table["rows"]]
    if rows:
        written[CONFORMATION_LEVEL_CSV] = write_table(out_dir / CONFORMATION_LEVEL_CSV,
                                                      _columns(rows, CONFORMATION_LEVEL_COLUMNS))
    stability = [dict(s, model=model) for model, s in (result.get("stability_per_model") or {}).items()]
    if stability:
        written[STABILITY_CSV] = write_table(out_dir / STABILITY_CSV,
                                             _columns(stability, {"model": "model", **STABILITY_COLUMNS}))
    per_start = [dict(entry, model=model, start=start) for model, starts in
                 (result.get("stability_per_start") or {}).items() for start, entry in starts.items()]
    if per_start:
        written[STABILITY_PER_START_CSV] = write_table(out_dir / STABILITY_PER_START_CSV,
                                                       _columns(per_start, STABILITY_PER_START_COLUMNS))
    document = dict(result, files=sorted([CORRELATION_JSON, *written]))
    written[CORRELATION_JSON] = atomic_write_json(out_dir / CORRELATION_JSON, jsonable(document, finite=True))
    return written


def read_correlation(out_dir) -> dict:
    """correlation.json of a folder written by write_correlation_tables (null where the value was NaN)."""
    path = Path(out_dir) / CORRELATION_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; write it with `openmlff correlate` first")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def rows_as_arrays(rows: list[dict], names) -> dict[str, np.ndarray]:
    """Columns of row dicts as arrays (float where numeric, None as NaN), e.g. to compare with a CSV read back."""
    out = {}
    for name in names:
        values = [_nan_for_none(row.get(name)) for row in rows]
        try:
            out[name] = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            out[name] = np.asarray(values, dtype=str)
    return out
