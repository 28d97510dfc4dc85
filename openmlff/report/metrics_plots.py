"""PNG figures of a metrics report (`openmlff metrics --plots DIR`), every axis labelled with its unit.

element_errors.png   force and FNM MAE / RMSE per element
frame_errors.png     distribution of the per-frame force and FNM MAE, with the global MAE marked
cluster_errors.png   force MAE per conformation cluster and its ratio of bad points
atom_errors.png      force and FNM MAE of every atom, on the molecule's atom indices (C0, H13, ...)
uncertainty_calibration.png   a committee's RMS error against its RMS force spread per quantile bin
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from .figures import element_colour, new_figure, save_png

PLOT_NAMES = ("element_errors.png", "frame_errors.png", "cluster_errors.png", "atom_errors.png")
_MAX_ATOM_LABELS = 60  # beyond this many atoms, label every k-th atom only


def plot_element_errors(report: dict, path) -> Path:
    """Grouped bars: MAE and RMSE per element, force (left) and FNM (right)."""
    units, elements = report["units"], report["elements"]
    symbols = list(elements)
    x = np.arange(len(symbols))
    fig = new_figure(8.0, 3.8)
    for ax, family, unit in zip(fig.subplots(1, 2), ("force", "fnm"), (units["force"], units["fnm"])):
        for offset, stat, hatch in ((-0.2, "mae", None), (0.2, "rmse", "//")):
            values = [elements[s][f"{family}_{stat}"] for s in symbols]
            ax.bar(x + offset, values, width=0.4, color=[element_colour(s) for s in symbols], hatch=hatch,
                   edgecolor="white" if hatch else None, label=stat.upper())
        ax.set_xticks(x, [f"{s}\n({elements[s]['n_atoms']} atoms)" for s in symbols])
        ax.set_ylabel(f"{'force' if family == 'force' else 'FNM (force/mass)'} error [{unit}]")
        ax.set_title(f"{'Force' if family == 'force' else 'FNM'} error per element")
        ax.legend(frameon=False)
    return save_png(fig, path)


def plot_frame_errors(report: dict, path) -> Path:
    """Histograms of the per-frame force MAE and FNM MAE, the global values as dashed lines."""
    units, frames, glob = report["units"], report["frames"], report["global"]
    fig = new_figure(8.0, 3.6)
    for ax, key, unit, name in zip(fig.subplots(1, 2), ("force_mae", "fnm_mae"), (units["force"], units["fnm"]),
                                   ("force MAE", "FNM MAE")):
        values = np.asarray(frames[key], dtype=np.float64)
        ax.hist(values, bins=min(50, max(5, len(values) // 5)), color="#4c72b0", alpha=0.85)
        ax.axvline(glob[key], color="#c44e52", linestyle="--", label=f"global {name} {glob[key]:.3g}")
        ax.set_xlabel(f"per-frame {name} [{unit}]")
        ax.set_ylabel("frames")
        ax.set_title(f"Per-frame {name}")
        ax.set_ylim(0, 1.25 * ax.get_ylim()[1])  # room for the legend
        ax.legend(frameon=False, title=f"{len(values)} frames", fontsize=8, title_fontsize=8)
    return save_png(fig, path)


def plot_cluster_errors(report: dict, path) -> Path:
    """Force MAE per conformation cluster (global MAE dashed, cluster size above each bar) and ratio of bad points."""
    units, m = report["units"], report["clusters"]["metrics"]
    clusters = [str(c) for c in m["cluster"]]
    x = np.arange(len(clusters))
    fig = new_figure(8.0, 3.6)
    ax_mae, ax_bad = fig.subplots(1, 2)
    bars = ax_mae.bar(x, m["force_mae"], color="#4c72b0")
    ax_mae.bar_label(bars, labels=[f"{n} frames" for n in m["n_frames"]], label_type="center", color="white",
                     fontsize=8, rotation=90 if len(clusters) > 6 else 0)
    ax_mae.axhline(m["global_force_mae"], color="#c44e52", linestyle="--", label="global force MAE")
    ax_mae.set_xticks(x, clusters)
    ax_mae.set_xlabel("conformation cluster")
    ax_mae.set_ylabel(f"force MAE [{units['force']}]")
    ax_mae.set_title("Force MAE per cluster")
    ax_mae.set_ylim(0, 1.25 * max(max(m["force_mae"]), m["global_force_mae"]))
    ax_mae.legend(frameon=False, loc="upper right", fontsize=8)
    ax_bad.bar(x, m["ratio_bad_points"], color="#dd8452")
    ax_bad.set_xticks(x, clusters)
    ax_bad.set_ylim(0, 1)
    ax_bad.set_xlabel("conformation cluster")
    ax_bad.set_ylabel("ratio of bad points (share of frames)")
    ax_bad.set_title("Frames with force MAE > global MAE")
    return save_png(fig, path)


def plot_atom_errors(report: dict, path) -> Path:
    """Force MAE (top) and FNM MAE (bottom) of every atom, bars coloured by element, labelled C0, H13, ..."""
    units, atoms = report["units"], report["atoms"]
    labels = [f"{e}{i}" for e, i in zip(atoms["element"], atoms["index"])]
    colours = [element_colour(e) for e in atoms["element"]]
    x = np.arange(len(labels))
    fig = new_figure(max(7.0, 0.28 * min(len(labels), 120) + 1.5), 5.5)
    step = max(1, int(np.ceil(len(labels) / _MAX_ATOM_LABELS)))
    for ax, key, name, unit in zip(fig.subplots(2, 1, sharex=True), ("force_mae", "fnm_mae"), ("force MAE", "FNM MAE"),
                                   (units["force"], units["fnm"])):
        ax.bar(x, atoms[key], color=colours)
        ax.set_ylabel(f"{name}\n[{unit}]")
        ax.set_title(f"{name} per atom")
    ax.set_xticks(x[::step], labels[::step], rotation=90, fontsize=8)
    ax.set_xlabel("atom (element and 0-based index in the molecule)")
    handles = [Patch(color=element_colour(symbol), label=symbol) for symbol in dict.fromkeys(atoms["element"])]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return save_png(fig, path)


def plot_uncertainty_calibration(report: dict, path) -> Path:
    """RMS error against RMS committee uncertainty per quantile bin (y = x: calibrated)."""
    u = report["uncertainty"]
    cal, unit = u["calibration"], u["units"]["uncertainty"]
    fig = new_figure(5.5, 5.0)
    ax = fig.subplots()
    x, y = np.asarray(cal["rms_uncertainty"]), np.asarray(cal["rms_error"])
    top = float(np.nanmax(np.concatenate([x, y]))) * 1.1
    ax.plot([0, top], [0, top], color="0.6", linestyle="--", linewidth=1, label="calibrated (y = x)")
    ax.plot(x, y, marker="o", label=f"{cal['bins']} quantile bins of the uncertainty")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"RMS committee force spread [{unit}]")
    ax.set_ylabel(f"RMS force error of the committee mean [{unit}]")
    rho = u["spearman"]["atom_uncertainty_vs_error"]
    ax.set_title(f"Uncertainty calibration (per atom and frame; Spearman ρ {rho:.2f})")
    ax.legend(frameon=False, fontsize=8)
    return save_png(fig, path)


def write_metrics_plots(report: dict, folder) -> list[Path]:
    """Write the figures of the module docstring into `folder` (cluster_errors.png only with a clusters
    section, frame_errors.png only with per-frame metrics); returns their paths."""
    folder = Path(folder)
    written = [plot_element_errors(report, folder / "element_errors.png")]
    if report.get("frames"):
        written.append(plot_frame_errors(report, folder / "frame_errors.png"))
    if report.get("clusters"):
        written.append(plot_cluster_errors(report, folder / "cluster_errors.png"))
    written.append(plot_atom_errors(report, folder / "atom_errors.png"))
    if report.get("uncertainty"):
        written.append(plot_uncertainty_calibration(report, folder / "uncertainty_calibration.png"))
    return written
