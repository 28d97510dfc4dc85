"""The metrics report: one model evaluated on frames of a dataset, with the frames' conformation clusters.

`metrics_report` is the one writer of this schema, for `openmlff metrics` and the quick start's metrics_test.json.
Sections: units; global (the global metrics of force_metrics, n_frames among them); elements; atoms; frames
(per-frame metrics, plus dataset_frame, the frame's index in the dataset file, and cluster); model; potential;
data (with selection, the frames' label); evaluation; clusters ("definition", "info" of cluster_conformations,
per-cluster "metrics" of cluster_force_metrics against the global force MAE); and for a committee file,
uncertainty (openmlff.metrics.uncertainty: the members' force spread beside the error, Spearman, calibration).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from .conformations import cluster_conformations, cluster_force_metrics
from ..core.atomic_io import jsonable
from .force_metrics import DEFAULT_ENERGY_UNIT, DEFAULT_FORCE_UNIT

_SECTIONS = ("units", "elements", "atoms", "frames", "model", "potential", "data", "evaluation")


def metrics_report(model, dataset, *, frames_label: str = "all", dataset_frames=None, batch_size: int = 32,
                   force_unit: str = DEFAULT_FORCE_UNIT, energy_unit: str = DEFAULT_ENERGY_UNIT,
                   n_clusters: int | None = None, cluster_seed: int = 0, progress: bool = False) -> dict:
    """The JSON-ready metrics report of the model file (or a potential named by openmlff.potentials: 'amber14',
    'gfn2-xtb', ...) on `dataset`, the selected frames: frames_label says how they were chosen ("all", "test",
    "20:60", ...; data.selection), dataset_frames their indices in the full dataset (default 0..n-1).
    n_clusters None: the silhouette rule of openmlff.metrics.conformations; cluster_seed makes clusters reproducible.
    """
    from .evaluation import evaluate_model  # loads torch: not at import, so that openmlff.report stays light

    indices = np.arange(dataset.n_frames) if dataset_frames is None else np.asarray(dataset_frames).reshape(-1)
    if indices.size != dataset.n_frames:
        raise InputError(f"dataset_frames has {indices.size} indices for {dataset.n_frames} frames; expected one "
                         f"per frame")
    result = evaluate_model(model, dataset, batch_size=batch_size, force_unit=force_unit, energy_unit=energy_unit,
                            include_frames=True, progress=progress)
    report = {
        "units": result["units"],
        "global": {k: v for k, v in result.items() if k not in _SECTIONS},
        "elements": result["elements"],
        "atoms": result["atoms"],
        "frames": dict(result["frames"], dataset_frame=[int(i) for i in indices]),
        "model": result["model"],
        "potential": result["potential"],
        "data": dict(result["data"], selection=frames_label),
        "evaluation": result["evaluation"],
    }
    from .uncertainty import uncertainty_report

    if result["potential"].get("committee"):  # an openmlff committee file: result["model"] is its path
        report["uncertainty"] = uncertainty_report(result["model"], dataset, batch_size=batch_size, force_unit=force_unit)
    return add_conformation_clusters(report, dataset.R, n_clusters=n_clusters, seed=cluster_seed)


def add_conformation_clusters(report: dict, positions_angstrom, n_clusters: int | None = None, seed: int = 0) -> dict:
    """Add a "clusters" section ("info" of cluster_conformations, per-cluster "metrics" of cluster_force_metrics
    against the global force MAE) and a per-frame "cluster" label to `report`, changed in place and returned.
    positions_angstrom (n_frames, n_atoms, 3): the evaluated frames, in the order of report["frames"]."""
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
