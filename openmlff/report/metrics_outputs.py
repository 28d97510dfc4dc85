"""The CSV tables of the metrics report of `openmlff metrics`.

The report is the dict of openmlff.metrics.report.metrics_report (sections units, global,
elements, atoms, frames, model, data, evaluation, clusters); `metrics_tables` turns it into the
four tables elements.csv, atoms.csv, frames.csv and clusters.csv, with units in the column names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.config import check, check_finite, setting
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
        table = {"frame": list(range(len(frames["force_mae"]))),
                 **{key: frames[key] for key in ("dataset_frame", "cluster") if key in frames},
                 **{_with_unit(k, units): frames[k] for k in metric_keys}}
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


@dataclass
class MetricsConfig:
    """The settings of `openmlff metrics` (its options, openmlff.core.config.add_config_arguments): which frames, how
    they are evaluated and clustered, the units of the report."""

    frames: str = setting("all", "'all', or 'train'/'val'/'test' (the split stored in --checkpoint), or a range "
                                 "'START:STOP'")
    batch_size: int = setting(32, "frames per batched model call")
    force_unit: str = setting("kcal/mol/Å", "force unit of the report")
    energy_unit: str = setting("kcal/mol", "energy unit of the report")
    n_clusters: int | None = setting(None, "conformation clusters (default: k in 2..10 with the best silhouette "
                                           "score)")
    cluster_seed: int = setting(0, "seed of the k-means clustering")
    backend: str = setting("torchscript", "how an openmlff model file is evaluated: torchscript (the file's own "
                                          "module) or compiled (Inductor on this machine, cached in "
                                          "$OPENMLFF_CACHE_DIR; worth it for thousands of frames)")
    bond_scan_starts: int = setting(0, "also scan every bond of the first N selected frames, compressed and "
                                       "stretched (openmlff.metrics.bond_scan, no labels used): the report's "
                                       "bond_scan; 0: none")

    def __post_init__(self) -> None:
        check_finite(self)
        check(self, self.batch_size >= 1, "batch_size", f"must be a positive integer, got {self.batch_size}")
        check(self, self.bond_scan_starts >= 0, "bond_scan_starts", f"must be 0 or more, got {self.bond_scan_starts}")
        check(self, self.backend in ("torchscript", "compiled"), "backend",
              f"must be torchscript or compiled, got {self.backend!r}")


def write_model_metrics(model, dataset, out, config: MetricsConfig | None = None, *, split_source=None,
                        csv_dir=None, plots_dir=None) -> tuple[dict, list[Path], list[Path]]:
    """`openmlff metrics`: the force metrics of `model` on the frames of `dataset` that config.frames names (of the
    split in `split_source`, a checkpoint or split file, for 'train', 'val', 'test') as JSON at `out`, CSV tables
    in csv_dir (default OUT_STEM_csv beside it) and figures in plots_dir; the report, tables and figures."""
    from ..core.atomic_io import atomic_write_json
    from ..data.splits import check_data_of_split, select_frames
    from ..metrics.report import metrics_report
    from ..training.checkpoint import read_split

    config = config or MetricsConfig()
    split = None
    if split_source:
        split, fingerprint = read_split(split_source)
        check_data_of_split(dataset, split_source, fingerprint)
    indices = select_frames(config.frames, dataset.n_frames, split)
    dataset = dataset.subset(indices) if indices is not None else dataset
    if config.backend == "compiled":
        from ..potentials.exported import CompiledModel

        model = CompiledModel(model)
    report = metrics_report(model, dataset, frames_label=config.frames, dataset_frames=indices,
                            batch_size=config.batch_size, force_unit=config.force_unit,
                            energy_unit=config.energy_unit, n_clusters=config.n_clusters,
                            cluster_seed=config.cluster_seed)
    if config.bond_scan_starts:
        from ..metrics.bond_scan import bond_scans

        starts = min(config.bond_scan_starts, dataset.n_frames)
        report["bond_scan"] = {**bond_scans(model, dataset.z, dataset.R[:starts]),
                               "dataset_frames": [int(i) for i in (range(starts) if indices is None else indices[:starts])]}
    atomic_write_json(out, report)
    out = Path(out)
    tables = write_metrics_tables(report, csv_dir or out.with_name(f"{out.stem}_csv"))
    figures = []
    if plots_dir:
        from .metrics_plots import write_metrics_plots

        figures = write_metrics_plots(report, plots_dir)
    return report, tables, figures
