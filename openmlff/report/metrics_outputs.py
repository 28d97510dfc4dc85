"""The CSV tables of the metrics report of `openmlff metrics`.

The report is the dict of openmlff.metrics.report.metrics_report (sections units, global,
elements, atoms, frames, model, data, evaluation, clusters); `metrics_tables` turns it into the
four tables elements.csv, atoms.csv, frames.csv and clusters.csv, with units in the column names.
"""

from __future__ import annotations

from pathlib import Path

from ..metrics.force_metrics import FNM_KEYS, FORCE_KEYS
from .tables import write_table

TABLE_NAMES = ("elements.csv", "atoms.csv", "frames.csv", "clusters.csv")


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


def write_model_metrics(model, dataset, out, *, frames: str = "all", split_source=None, batch_size: int = 32,
                        force_unit: str = "kcal/mol/Å", energy_unit: str = "kcal/mol", n_clusters: int | None = None,
                        cluster_seed: int = 0, csv_dir=None, plots_dir=None) -> tuple[dict, list[Path], list[Path]]:
    """`openmlff metrics`: the force metrics of `model` on `dataset` (frames 'all', 'START:STOP', or 'train',
    'val', 'test' of the split in `split_source`, a checkpoint or split file) as JSON at `out`, CSV tables in
    csv_dir (default OUT_STEM_csv beside it) and figures in plots_dir; the report, tables and figures."""
    from ..atomic_io import atomic_write_json
    from ..data.splits import check_data_of_split, select_frames
    from ..metrics.report import metrics_report
    from ..training.checkpoint import read_split

    split = None
    if split_source:
        split, fingerprint = read_split(split_source)
        check_data_of_split(dataset, split_source, fingerprint)
    indices = select_frames(frames, dataset.n_frames, split)
    dataset = dataset.subset(indices) if indices is not None else dataset
    report = metrics_report(model, dataset, frames_label=frames, dataset_frames=indices, batch_size=batch_size,
                            force_unit=force_unit, energy_unit=energy_unit, n_clusters=n_clusters,
                            cluster_seed=cluster_seed)
    atomic_write_json(out, report)
    out = Path(out)
    tables = write_metrics_tables(report, csv_dir or out.with_name(f"{out.stem}_csv"))
    figures = []
    if plots_dir:
        from .metrics_plots import write_metrics_plots

        figures = write_metrics_plots(report, plots_dir)
    return report, tables, figures

