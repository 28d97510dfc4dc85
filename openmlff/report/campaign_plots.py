"""Figures of the campaign report: stability per model and start, correlation intervals, scatter plots, ROC curves.

Each function returns a matplotlib Figure drawn off-screen (Agg); `figure_png` turns it into PNG
bytes for embedding in the HTML page (openmlff.report.campaign_page), `save_png` of
openmlff.report.figures writes it to a file. Every axis names its quantity and unit.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.figure import Figure

from .figures import DPI, new_figure

STABLE_COLOUR = "#55a868"
COLLAPSE_COLOUR = "#c44e52"
HIGHLIGHT_COLOUR = "#dd8452"
NEUTRAL_COLOUR = "#4c72b0"
_MAX_ANNOTATED_CELLS = 150


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (DPI of openmlff.report.figures)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def plot_stability_per_model(stability_per_model: dict) -> Figure:
    """Left: share of stable runs per model (bars, runs counted above). Right: every run's time, collapses
    as red dots and runs that stayed stable as green triangles at their censoring time, the median as a bar."""
    models = list(stability_per_model)
    y = np.arange(len(models))
    fig = new_figure(9.0, 1.8 + 0.45 * len(models))
    ax_share, ax_time = fig.subplots(1, 2, sharey=True)
    shares = [stability_per_model[m]["share_stable"] for m in models]
    bars = ax_share.barh(y, shares, color=NEUTRAL_COLOUR)
    ax_share.bar_label(bars, labels=[f"{stability_per_model[m]['n_stable']}/{stability_per_model[m]['n_runs']}"
                                     for m in models], padding=3, fontsize=8)
    ax_share.set_xlim(0, 1.15)
    ax_share.set_yticks(y, [_short(m) for m in models])
    ax_share.invert_yaxis()
    ax_share.set_xlabel("share of stable runs (fraction)")
    ax_share.set_title("Runs without a collapse")
    rng = np.random.default_rng(0)  # vertical jitter only, so overlapping runs stay visible
    for k, model in enumerate(models):
        s = stability_per_model[model]
        times = np.asarray(s["times_ps"], dtype=np.float64)
        collapsed = np.asarray(s["collapsed"], dtype=bool)
        jitter = k + rng.uniform(-0.18, 0.18, size=times.size)
        ax_time.scatter(times[collapsed], jitter[collapsed], s=16, color=COLLAPSE_COLOUR, zorder=3,
                        label="collapsed" if k == 0 else None)
        ax_time.scatter(times[~collapsed], jitter[~collapsed], s=22, marker=">", color=STABLE_COLOUR, zorder=3,
                        label="stable (censored)" if k == 0 else None)
        ax_time.plot([s["median_time_to_collapse_ps"]] * 2, [k - 0.32, k + 0.32], color="black", linewidth=2,
                     label="median" if k == 0 else None)
    horizon = max(s["horizon_ps"] for s in stability_per_model.values())
    ax_time.axvline(horizon, color="0.6", linestyle="--", linewidth=1, label=f"horizon {horizon:g} ps")
    ax_time.set_xlim(0, horizon * 1.05)
    ax_time.set_xlabel("time to collapse [ps]")
    ax_time.set_title("Each run: collapse time or censoring")
    ax_time.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(models)),
                   ncol=4)
    return fig


def plot_survival_curves(stability_per_model: dict) -> Figure:
    """Kaplan-Meier survival (share of runs not yet collapsed) against time, one step curve per model."""
    from ..stability.runs import kaplan_meier

    fig = new_figure(7.5, 4.5)
    ax = fig.subplots()
    horizon = max(s["horizon_ps"] for s in stability_per_model.values())
    styles = ["-", "--", ":", "-."]
    for k, (model, s) in enumerate(stability_per_model.items()):
        times, survival = kaplan_meier(s["times_ps"], s["collapsed"])
        x = np.concatenate([[0.0], times, [horizon]])
        y = np.concatenate([[1.0], survival, [survival[-1] if survival.size else 1.0]])
        ax.step(x, y, where="post", linestyle=styles[(k // 10) % len(styles)], linewidth=1.6,
                label=f"{_short(model)} ({s['n_stable']}/{s['n_runs']} stable)")
    ax.set_xlim(0, horizon)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("time [ps]")
    ax.set_ylabel("share of runs not collapsed (Kaplan-Meier)")
    ax.set_title("Survival of MD runs")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    return fig


def collapse_rate(entry: dict) -> float:
    """A start's collapse rate from per_start_outcomes ("collapse_rate") or stability_of_runs ("share_stable")."""
    return float(entry["collapse_rate"]) if "collapse_rate" in entry else 1.0 - float(entry["share_stable"])


def plot_stability_per_start(stability_per_start: dict) -> Figure:
    """Heat map of the collapse rate: models (rows) x starting conformations (columns), runs counted in cells."""
    models = list(stability_per_start)
    starts = list(dict.fromkeys(s for per in stability_per_start.values() for s in per))
    cells = [(i, j, per_start[start]) for i, per_start in enumerate(stability_per_start.values())
             for j, start in enumerate(starts) if start in per_start]
    rate = np.full((len(models), len(starts)), np.nan)
    for i, j, entry in cells:
        rate[i, j] = collapse_rate(entry)
    fig = new_figure(max(5.0, 1.8 + 0.42 * len(starts)), 1.6 + 0.42 * len(models))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(rate), cmap="RdYlGn_r", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(np.arange(len(starts)), [_short(s, 16) for s in starts], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(models)), [_short(m) for m in models], fontsize=8)
    ax.set_xlabel("starting conformation")
    ax.set_title("Collapse rate per model and start")
    if rate.size <= _MAX_ANNOTATED_CELLS:
        for i, j, entry in cells:
            dark = rate[i, j] > 0.8 or rate[i, j] < 0.15  # ends of the colour map
            ax.text(j, i, f"{rate[i, j]:.2f}\n(n={entry['n_runs']})", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="collapse rate (fraction of runs)")
    return fig


def plot_correlation_intervals(rows: list[dict], highlight: set[int] | None = None) -> Figure:
    """Spearman rho of each metric with its bootstrap interval, one panel per stability measure, metrics sorted
    by rho; rows in `highlight` (indices into rows) in orange."""
    measures = list(dict.fromkeys(row["stability_measure"] for row in rows))
    highlight = highlight or set()
    n_metrics = max(1, max(sum(r["stability_measure"] == m for r in rows) for m in measures))
    fig = new_figure(4.2 * len(measures) + 1.5, 1.3 + 0.24 * n_metrics)
    axes = np.atleast_1d(fig.subplots(1, len(measures), squeeze=False)[0])
    for ax, measure in zip(axes, measures):
        chosen = [(k, r) for k, r in enumerate(rows) if r["stability_measure"] == measure]
        chosen.sort(key=lambda kr: kr[1]["spearman_rho"] if _finite(kr[1]["spearman_rho"]) else math.inf)
        for y, (k, r) in enumerate(chosen):
            colour = HIGHLIGHT_COLOUR if k in highlight else NEUTRAL_COLOUR
            if _finite(r["spearman_ci_low"]):
                ax.plot([r["spearman_ci_low"], r["spearman_ci_high"]], [y, y], color=colour, linewidth=1.5)
            if _finite(r["spearman_rho"]):
                ax.plot(r["spearman_rho"], y, "o", color=colour, markersize=5)
        ax.axvline(0, color="0.5", linewidth=1)
        ax.set_xlim(-1.05, 1.05)
        ax.set_yticks(np.arange(len(chosen)), [r["metric"] for _, r in chosen], fontsize=7)
        ax.set_xlabel("Spearman ρ (bootstrap interval)")
        ax.set_title(f"vs {measure}", fontsize=10)
    return fig


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def plot_scatter_panels(scatter_data: list[dict]) -> Figure:
    """One panel per entry: {"metric", "metric_unit", "measure", "measure_unit", "x", "y", "labels", optional
    "rho"}: the models as labelled points, x the metric, y the stability measure. Entries of one metric for
    several measures (as select_scatter_data makes them) fill one row each."""
    n = len(scatter_data)
    n_measures = len({panel["measure"] for panel in scatter_data})
    n_cols = min(3, n, n_measures if n_measures > 1 else 3)  # one row per metric when it has several measures
    n_rows = math.ceil(n / n_cols)
    fig = new_figure(3.6 * n_cols + 0.4, 3.2 * n_rows)
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False).reshape(-1))
    for ax, panel in zip(axes, scatter_data):
        x = np.asarray(panel["x"], dtype=np.float64)
        y = np.asarray(panel["y"], dtype=np.float64)
        ax.scatter(x, y, color=NEUTRAL_COLOUR, s=28, zorder=3)
        for xi, yi, label in zip(x, y, panel.get("labels") or []):
            ax.annotate(_short(str(label), 14), (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
        unit = f" [{panel['metric_unit']}]" if panel.get("metric_unit") else ""
        ax.set_xlabel(f"{panel['metric']}{unit}", fontsize=8)
        measure_unit = f" [{panel['measure_unit']}]" if panel.get("measure_unit") else ""
        ax.set_ylabel(f"{panel['measure']}{measure_unit}", fontsize=8)
        rho = panel.get("rho")
        ax.set_title(f"Spearman ρ = {rho:.2f}" if _finite(rho) else "Spearman ρ undefined", fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def plot_roc_curves(conformation_level: dict, n_curves: int = 4) -> Figure:
    """ROC curves of the conformation level, one panel per model (models whose runs all collapsed, or none,
    have no curve): the n_curves metrics whose AUC is farthest from 0.5, the chance diagonal dashed, AUCs in
    the legend."""
    models = [m for m, table in conformation_level.items() if table.get("roc_curves")]
    n_cols = max(1, min(3, len(models)))
    n_rows = max(1, math.ceil(len(models) / n_cols))
    fig = new_figure(4.0 * n_cols + 0.4, 4.0 * n_rows)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).reshape(-1)
    for ax in axes[len(models):]:
        ax.set_visible(False)
    for ax, model in zip(axes, models):
        table = conformation_level[model]
        auc = {r["metric"]: r["roc_auc"] for r in table["rows"]}
        ranked = sorted(table["roc_curves"], key=lambda m: -abs(auc[m] - 0.5) if _finite(auc.get(m)) else 0.0)
        for metric in ranked[:n_curves]:
            curve = table["roc_curves"][metric]
            ax.plot(curve["fpr"], curve["tpr"], linewidth=1.6, label=f"{metric} (AUC {auc[metric]:.2f})")
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance (AUC 0.5)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (stable runs flagged)")
        ax.set_ylabel("true positive rate (collapses flagged)")
        ax.set_title(_short(model, 36), fontsize=10)
        ax.legend(frameon=False, fontsize=7, loc="lower right")
    return fig
