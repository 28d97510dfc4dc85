"""The metrics report of `openmlff metrics`: conformation clusters added to it, and its CSV tables.

The report is the dict of openmlff.cli.metrics_report (sections units, global, elements, atoms,
frames, model, data, evaluation). `add_conformation_clusters` adds k-means clusters of the
evaluated frames with their metrics and ratio of bad points (openmlff.metrics.conformations);
`metrics_tables` turns the report into the four tables elements.csv, atoms.csv, frames.csv and
clusters.csv, with units in the column names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..metrics.conformations import cluster_conformations, cluster_force_metrics
from ..metrics.force_metrics import FNM_KEYS, FORCE_KEYS, jsonable
from .tables import write_table

TABLE_NAMES = ("elements.csv", "atoms.csv", "frames.csv", "clusters.csv")


def add_conformation_clusters(report: dict, positions_angstrom, n_clusters: int | None = None, seed: int = 0) -> dict:
    """Add a "clusters" section and a per-frame "cluster" label to `report` (changed in place and returned).

    positions_angstrom (n_frames, n_atoms, 3): the evaluated frames, in the order of report["frames"].
    n_clusters None: chosen by the silhouette rule of openmlff.metrics.conformations. The section
    holds "info" (n_clusters, rule, sizes, descriptor, ...) and "metrics" (per-cluster force and FNM
    metrics and ratio_bad_points, against the global force MAE).
    """
    frames = report.get("frames")
    if not frames:
        raise InputError("the metrics report has no per-frame metrics; evaluate with include_frames=True")
    R = np.asarray(positions_angstrom, dtype=np.float64)
    if R.ndim != 3 or R.shape[0] != len(frames["force_mae"]):
        raise InputError(f"positions have shape {R.shape}, expected one frame (n_atoms, 3) per evaluated frame "
                         f"({len(frames['force_mae'])})")
    labels, _, info = cluster_conformations(R, n_clusters=n_clusters, seed=seed)
    metrics = cluster_force_metrics(frames, labels, report["global"]["force_mae"])
    frames["cluster"] = labels
    report["clusters"] = jsonable({
        "definition": "k-means on inverse pairwise distances; ratio_bad_points = share of the cluster's frames "
                      "whose force MAE exceeds the global force MAE",
        "info": info, "metrics": metrics})
    report["frames"] = jsonable(frames)
    return report


def _with_unit(key: str, units: dict) -> str:
    if key in FORCE_KEYS:
        return f"{key} [{units['force']}]"
    if key in FNM_KEYS:
        return f"{key} [{units['fnm']}]"
    return key


def metrics_tables(report: dict) -> dict[str, dict[str, list]]:
    """The report's tables: {"elements.csv": columns, "atoms.csv": ..., "frames.csv": ..., "clusters.csv": ...}
    (frames.csv and clusters.csv only when the report has those sections)."""
    units = report["units"]
    metric_keys = FORCE_KEYS + FNM_KEYS
    elements = report["elements"]
    tables = {"elements.csv": {
        "element": list(elements), "n_atoms": [elements[s]["n_atoms"] for s in elements],
        **{_with_unit(k, units): [elements[s][k] for s in elements] for k in metric_keys}}}
    atoms = report["atoms"]
    tables["atoms.csv"] = {"atom": atoms["index"], "element": atoms["element"], "z": atoms["z"],
                           **{_with_unit(k, units): atoms[k] for k in metric_keys}}
    frames = report.get("frames")
    if frames:
        n = len(frames["force_mae"])
        table = {"frame": list(range(n))}
        for key in ("dataset_frame", "cluster"):
            if key in frames:
                table[key] = frames[key]
        table.update({_with_unit(k, units): frames[k] for k in metric_keys})
        if "energy_error" in frames:
            table[f"energy_error [{units['energy']}]"] = frames["energy_error"]
        tables["frames.csv"] = table
    clusters = report.get("clusters")
    if clusters:
        m = clusters["metrics"]
        tables["clusters.csv"] = {
            "cluster": m["cluster"], "n_frames": m["n_frames"],
            **{_with_unit(k, units): m[k] for k in ("force_mae", "force_max", "fnm_mae", "fnm_max")},
            "ratio_bad_points": m["ratio_bad_points"],
            f"global_force_mae [{units['force']}]": [m["global_force_mae"]] * len(m["cluster"])}
    return tables


def write_metrics_tables(report: dict, folder) -> list[Path]:
    """Write the tables of `metrics_tables` into `folder` (created if needed); returns their paths."""
    folder = Path(folder)
    return [write_table(folder / name, columns) for name, columns in metrics_tables(report).items()]
