"""The force metrics that enter the correlation with stability: one flat {name: value} set per model or start.

Per model (`evaluation_metric_set`, `model_metric_sets`), from an evaluation of the model on a data
split (openmlff.metrics.evaluation.evaluate_model, or the "global"-sectioned metrics JSON of
`openmlff metrics`), names prefixed with the split (e.g. "test.H.fnm_max"):

    force_mae, force_rmse, force_max, fnm_mae, fnm_max, energy_mae   global metrics (force_metrics)
    <El>.force_mae, <El>.fnm_mae, <El>.fnm_max                      element-wise, for each element present
    worst_frame_force_mae   the largest per-frame force MAE
    bad_frame_share         share of frames whose per-frame force MAE exceeds a threshold (force unit);
                            one threshold for all models, so that the share compares models (default: the
                            median over the models of their global force MAE on that split)

Per starting conformation (`start_conformation_metrics`), from one model's evaluation on a set of
frames with their positions:

    cluster.<m>     the metrics of the start's conformation cluster: k-means on the evaluated frames
                    (conformations.cluster_conformations), the start assigned to the nearest center;
                    <m> = force_mae, force_max, fnm_mae, fnm_max, ratio_bad_points (cluster_force_metrics)
    neighbours.<m>  the same metrics over the n_neighbours evaluated frames nearest to the start in the
                    descriptor space (the start's own frame among them when it was evaluated)
    frame.<m>       the start's own per-frame force_mae, force_max, fnm_mae, fnm_max, when the start is
                    one of the evaluated frames (given, or found by its positions); None otherwise
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..core.errors import InputError
from .conformations import assign_clusters, cluster_conformations, cluster_force_metrics, conformation_descriptor

GLOBAL_METRICS = ("force_mae", "force_rmse", "force_max", "fnm_mae", "fnm_max", "energy_mae")
ELEMENT_METRICS = ("force_mae", "fnm_mae", "fnm_max")
FRAME_METRICS = ("force_mae", "force_max", "fnm_mae", "fnm_max")
CLUSTER_METRICS = ("force_mae", "force_max", "fnm_mae", "fnm_max", "ratio_bad_points")
SHARE_UNIT = "fraction of frames"
DEFAULT_N_NEIGHBOURS = 10
#: Short definitions of the metric names (for the notes of tables and reports).
MODEL_METRIC_DEFINITIONS = {
    "<split>.<metric>": "global force/FNM/energy metric of the model on that data split (openmlff.metrics.force_metrics)",
    "<split>.<El>.<metric>": "the metric over the atoms of element El",
    "<split>.worst_frame_force_mae": "largest per-frame force MAE",
    "<split>.bad_frame_share": "share of frames whose force MAE exceeds the split's bad_frame_threshold",
}
START_METRIC_DEFINITIONS = {
    "cluster.<metric>": "metric of the start's k-means conformation cluster of evaluated frames (ratio_bad_points: "
                        "share of its frames with force MAE above the global force MAE)",
    "neighbours.<metric>": "the same over the n_neighbours evaluated frames nearest to the start (inverse distances)",
    "frame.<metric>": "the start's own per-frame metric, when it is an evaluated frame",
}


def metric_unit(name: str, units: Mapping[str, str]) -> str:
    """Unit of a metric named as in the module docstring, from the evaluation's units {force, fnm, energy}."""
    base = name.rsplit(".", 1)[-1]
    if base in ("bad_frame_share", "ratio_bad_points"):
        return SHARE_UNIT
    for family in ("fnm", "force", "energy"):
        if family in base:
            return units.get(family, "")
    return ""


def _global_section(evaluation: Mapping) -> Mapping:
    return evaluation["global"] if "global" in evaluation else evaluation


def _number(value) -> float | None:
    return None if value is None else float(value)


def evaluation_metric_set(evaluation: Mapping, bad_frame_threshold: float | None = None) -> dict[str, float | None]:
    """The model-level metric set of one evaluation (names of the module docstring, without a split prefix);
    bad_frame_threshold in the evaluation's force unit (None leaves bad_frame_share out). The per-frame metrics
    enter when the evaluation has them ("frames")."""
    glob = _global_section(evaluation)
    missing = [k for k in GLOBAL_METRICS if k not in glob]
    if missing or "elements" not in evaluation:
        raise InputError(f"the evaluation lacks {missing or ['elements']}; expected the result of evaluate_model "
                         "(or the metrics JSON of `openmlff metrics`)")
    out = {k: _number(glob[k]) for k in GLOBAL_METRICS}
    for symbol, entry in evaluation["elements"].items():
        out.update({f"{symbol}.{k}": _number(entry[k]) for k in ELEMENT_METRICS})
    frames = evaluation.get("frames")
    if frames:
        frame_mae = np.asarray(frames["force_mae"], dtype=np.float64)
        out["worst_frame_force_mae"] = float(frame_mae.max())
        if bad_frame_threshold is not None:
            out["bad_frame_share"] = float((frame_mae > float(bad_frame_threshold)).mean())
    return out


def model_metric_sets(evaluations: Mapping[str, Mapping[str, Mapping]],
                      bad_frame_threshold: float | Mapping[str, float] | None = None) -> tuple[dict, dict]:
    """Metric sets of many models on their data splits: ({model: {"<split>.<metric>": value}}, info).

    evaluations: {model: {split: evaluation}}, all in the same units. bad_frame_threshold: one value for all
    splits, {split: value}, or None for the median over models of the global force MAE on each split.
    info: units, thresholds per split, metric_units {name: unit}, definitions.
    """
    units = None
    for model, splits in evaluations.items():
        for split, evaluation in splits.items():
            these = dict(evaluation["units"]) if "units" in evaluation else None
            if units is None:
                units = these
            elif these != units:
                raise InputError(f"model {model!r}, split {split!r}: units {these} differ from {units}; evaluate every "
                                 "model in the same force and energy units")
    units = units or {}
    split_names = list(dict.fromkeys(split for splits in evaluations.values() for split in splits))
    thresholds = {}
    for split in split_names:
        if isinstance(bad_frame_threshold, Mapping):
            thresholds[split] = bad_frame_threshold.get(split)
        elif bad_frame_threshold is not None:
            thresholds[split] = float(bad_frame_threshold)
        else:
            maes = [_global_section(s[split])["force_mae"] for s in evaluations.values() if split in s]
            thresholds[split] = float(np.median(maes))
    metrics = {}
    for model, splits in evaluations.items():
        metrics[model] = {f"{split}.{name}": value for split, evaluation in splits.items()
                          for name, value in evaluation_metric_set(evaluation, thresholds[split]).items()}
    names = list(dict.fromkeys(name for m in metrics.values() for name in m))
    info = {"units": units, "bad_frame_threshold": thresholds, "bad_frame_threshold_unit": units.get("force", ""),
            "metric_units": {name: metric_unit(name, units) for name in names},
            "definitions": dict(MODEL_METRIC_DEFINITIONS)}
    return metrics, info


def _start_positions(starts: Mapping[str, object], n_atoms: int) -> tuple[list[str], np.ndarray]:
    ids, positions = [], []
    for start, pos in starts.items():
        arr = np.asarray(pos, dtype=np.float64)
        if arr.shape != (n_atoms, 3):
            raise InputError(f"start {start!r}: positions have shape {arr.shape}, expected ({n_atoms}, 3) in Å "
                             "like the evaluated frames")
        ids.append(str(start))
        positions.append(arr)
    if not ids:
        raise InputError("no starting conformations given")
    return ids, np.stack(positions)


def start_conformation_metrics(evaluation: Mapping, positions_angstrom, starts: Mapping[str, object], *,
                               start_frames: Mapping[str, int | None] | None = None, n_clusters: int | None = None,
                               n_neighbours: int = DEFAULT_N_NEIGHBOURS, seed: int = 0, atoms=None,
                               match_tolerance_angstrom: float = 1e-6) -> tuple[dict, dict]:
    """Conformation-level metrics (module docstring) of each starting conformation under one model:
    ({start_id: metrics}, info).

    evaluation: the model's evaluate_model result with per-frame metrics on the frames positions_angstrom
    (n_frames, n_atoms, 3); starts: {start_id: positions (n_atoms, 3) in Å}; start_frames: {start_id: index
    into the evaluated frames or None}, a start not listed being looked up by its positions (every coordinate
    within match_tolerance_angstrom). n_clusters and atoms as in conformations.cluster_conformations.
    info: units, global_force_mae, n_neighbours, clustering and per start its cluster, frame and neighbours.
    """
    frames = evaluation.get("frames")
    if not frames:
        raise InputError("the evaluation has no per-frame metrics; evaluate with include_frames=True")
    R = np.asarray(positions_angstrom, dtype=np.float64)
    n_frames = len(frames["force_mae"])
    if R.ndim != 3 or R.shape[0] != n_frames:
        raise InputError(f"positions have shape {R.shape}, expected one (n_atoms, 3) frame per evaluated frame "
                         f"({n_frames})")
    if not 1 <= n_neighbours:
        raise InputError(f"n_neighbours must be >= 1, got {n_neighbours}")
    global_mae = float(_global_section(evaluation)["force_mae"])
    ids, S = _start_positions(starts, R.shape[1])
    labels, centers, clustering = cluster_conformations(R, n_clusters=n_clusters, seed=seed, atoms=atoms)
    per_cluster = cluster_force_metrics(frames, labels, global_mae)
    cluster_row = {int(c): k for k, c in enumerate(per_cluster["cluster"])}
    start_clusters = assign_clusters(S, centers, atoms)
    X, XS = conformation_descriptor(R, atoms), conformation_descriptor(S, atoms)
    d2 = (XS**2).sum(1)[:, None] - 2.0 * XS @ X.T + (X**2).sum(1)[None, :]
    k_near = min(int(n_neighbours), n_frames)
    frame_arrays = {k: np.asarray(frames[k], dtype=np.float64) for k in FRAME_METRICS}
    given = dict(start_frames or {})
    metrics, per_start = {}, {}
    for s, start in enumerate(ids):
        frame = given.get(start) if start in given else _matching_frame(R, S[s], match_tolerance_angstrom)
        if frame is not None and not 0 <= int(frame) < n_frames:
            raise InputError(f"start {start!r}: frame {frame} is not one of the {n_frames} evaluated frames")
        row = cluster_row.get(int(start_clusters[s]))
        out = {f"cluster.{m}": None if row is None else float(per_cluster[m][row]) for m in CLUSTER_METRICS}
        near = np.sort(np.argsort(d2[s], kind="stable")[:k_near])
        neighbourhood = cluster_force_metrics({k: v[near] for k, v in frame_arrays.items()}, np.zeros(near.size),
                                              global_mae)
        out.update({f"neighbours.{m}": float(neighbourhood[m][0]) for m in CLUSTER_METRICS})
        out.update({f"frame.{m}": None if frame is None else float(frame_arrays[m][int(frame)]) for m in FRAME_METRICS})
        metrics[start] = out
        per_start[start] = {"cluster": int(start_clusters[s]), "frame": None if frame is None else int(frame),
                            "neighbour_frames": near.tolist()}
    units = dict(frames.get("units") or evaluation.get("units") or {})
    names = list(dict.fromkeys(n for m in metrics.values() for n in m))
    return metrics, {"units": units, "metric_units": {n: metric_unit(n, units) for n in names},
                     "global_force_mae": global_mae, "n_neighbours": k_near, "clustering": clustering,
                     "starts": per_start, "definitions": dict(START_METRIC_DEFINITIONS)}


def _matching_frame(R: np.ndarray, start: np.ndarray, tolerance: float) -> int | None:
    """Index of the first evaluated frame equal to `start` within `tolerance` Å per coordinate, else None."""
    deviation = np.abs(R - start[None]).max(axis=(1, 2))
    hits = np.flatnonzero(deviation <= tolerance)
    return int(hits[0]) if hits.size else None
