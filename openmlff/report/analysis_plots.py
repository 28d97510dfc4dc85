"""PNG figures of a run analysis (`openmlff analyze RUNDIR --plots`), drawn from its tables, axes with units.

bond_deviations.png        bond-length deviation over time: the first broken bonds, the rest in grey, the limit
distance_distribution.png  h(r) of the simulation and of the reference data, with the h(r) MAE
rdf.png                    g(r) of each element pair, simulation (solid) and reference (dashed)
rmsd_rg.png                RMSD to the first frame and radius of gyration over time
ramachandran.png           backbone phi/psi of each residue (peptides only)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import new_figure, save_png

_SHOWN_BROKEN_BONDS = 5


def plot_bond_deviations(document: dict, table: dict, path) -> Path:
    """Deviation (Å) of every bond over time; the first broken bonds coloured, the ± limit dashed."""
    time = np.asarray(table["time [ps]"])
    limit = document["bonds"]["limit_angstrom"]
    broken = document["bonds"]["first_broken_bonds"][:_SHOWN_BROKEN_BONDS]
    highlighted = {f"{b['elements'][0]}{b['atoms'][0]}-{b['elements'][1]}{b['atoms'][1]} deviation [Å]": b
                   for b in broken}
    fig = new_figure(7.0, 4.0)
    ax = fig.subplots()
    for name, values in table.items():
        if name.endswith("deviation [Å]") and name not in highlighted:
            ax.plot(time, values, color="0.75", linewidth=0.8)
    for name, bond in highlighted.items():
        ax.plot(time, table[name], linewidth=1.8,
                label=f"{name.split(' ')[0]} (beyond limit at {bond['first_time_ps']:.4g} ps)")
    for sign in (1, -1):
        ax.axhline(sign * limit, color="#c44e52", linestyle="--", linewidth=1)
    ax.plot([], [], color="0.75", label="other bonds")
    ax.plot([], [], color="#c44e52", linestyle="--", label=f"limit ±{limit} Å")
    ax.set_xlabel("time [ps]")
    ax.set_ylabel("bond length − reference length [Å]")
    state = "collapsed" if broken else "no bond beyond the limit"
    ax.set_title(f"Bond-length deviations ({document['bonds']['n_bonds']} bonds, {state})")
    ax.legend(frameon=False, fontsize=8)
    return save_png(fig, path)


def plot_distance_distribution(document: dict, table: dict, path) -> Path:
    """h(r) of the simulation and, when there is reference data, of the reference (h(r) MAE in the title)."""
    r = np.asarray(table["r [nm]"])
    fig = new_figure(7.0, 4.0)
    ax = fig.subplots()
    ax.plot(r, table["h_simulation [1/nm]"], label="simulation", color="#4c72b0")
    if "h_reference [1/nm]" in table:
        ax.plot(r, table["h_reference [1/nm]"], label="reference data", color="#dd8452", linestyle="--")
    ax.set_xlabel("interatomic distance r [nm]")
    ax.set_ylabel("h(r) [1/nm]")
    mae = document["distance_distribution"]["mae"]
    ax.set_title("Distribution of interatomic distances" + (f" (h(r) MAE {mae:.3f})" if mae is not None else ""))
    ax.legend(frameon=False)
    return save_png(fig, path)


def plot_rdfs(document: dict, table: dict, path) -> Path:
    """g(r) of each element pair: one panel per pair, simulation solid, reference dashed."""
    r = np.asarray(table["r [nm]"])
    pairs = document["rdf"]["pairs"]
    n_cols = min(3, len(pairs))
    n_rows = int(np.ceil(len(pairs) / n_cols))
    fig = new_figure(3.0 * n_cols + 0.5, 2.4 * n_rows + 0.4)
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, sharex=True, squeeze=False)).ravel()
    for ax, pair in zip(axes, pairs):
        ax.plot(r, table[f"g_simulation {pair}"], color="#4c72b0", label="simulation")
        if f"g_reference {pair}" in table:
            ax.plot(r, table[f"g_reference {pair}"], color="#dd8452", linestyle="--", label="reference")
        ax.set_title(pair)
        ax.set_ylabel("g(r)")
    occupied = [r[np.asarray(values) > 0] for name, values in table.items() if name.startswith("g_")]
    r_shown = max((float(o.max()) for o in occupied if o.size), default=float(r[-1]))
    axes[0].set_xlim(0, min(float(r[-1]), 1.1 * r_shown))  # shared x: the range where pairs occur
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    for ax in axes[-n_cols:]:
        ax.set_xlabel("r [nm]")
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle("Radial distribution functions by element pair (isolated molecule, sphere-volume normalised)")
    return save_png(fig, path)


def plot_rmsd_rg(document: dict, table: dict, path) -> Path:
    """RMSD to the first frame (top) and radius of gyration (bottom) over time, in nm."""
    time = np.asarray(table["time [ps]"])
    fig = new_figure(7.0, 4.5)
    ax_rmsd, ax_rg = fig.subplots(2, 1, sharex=True)
    ax_rmsd.plot(time, table["rmsd_to_start [nm]"], color="#4c72b0")
    ax_rmsd.set_ylabel("RMSD to frame 0 [nm]")
    ax_rmsd.set_title("RMSD (after superposition) and radius of gyration (mass-weighted)")
    ax_rg.plot(time, table["radius_of_gyration [nm]"], color="#55a868")
    ax_rg.set_ylabel("radius of gyration [nm]")
    ax_rg.set_xlabel("time [ps]")
    return save_png(fig, path)


def plot_ramachandran(document: dict, table: dict, path) -> Path:
    """phi/psi of every residue that has both (one colour per residue), the first frame marked with a cross."""
    phi = document["dihedrals"]["phi"]["residues"]
    psi = document["dihedrals"]["psi"]["residues"]
    residues = [res for res in phi if res in psi]
    fig = new_figure(5.0, 5.0)
    ax = fig.subplots()
    for residue in residues:
        x, y = table[f"phi {residue} [deg]"], table[f"psi {residue} [deg]"]
        line = ax.scatter(x, y, s=8, alpha=0.6, label=residue)
        ax.scatter(x[:1], y[:1], marker="x", s=60, color=line.get_facecolor()[0])
    ax.set(xlim=(-180, 180), ylim=(-180, 180), xticks=range(-180, 181, 60), yticks=range(-180, 181, 60))
    ax.axhline(0, color="0.8", linewidth=0.8)
    ax.axvline(0, color="0.8", linewidth=0.8)
    ax.set_xlabel("φ [degrees]")
    ax.set_ylabel("ψ [degrees]")
    ax.set_title("Ramachandran plot (× = first frame)")
    ax.legend(frameon=False, fontsize=8, markerscale=2)
    return save_png(fig, path)


def write_analysis_plots(document: dict, tables: dict, folder) -> list[Path]:
    """Write the figures of the module docstring (ramachandran.png only for a peptide); returns their paths."""
    folder = Path(folder)
    written = [
        plot_bond_deviations(document, tables["bond_deviations.csv"], folder / "bond_deviations.png"),
        plot_distance_distribution(document, tables["distance_distribution.csv"], folder / "distance_distribution.png"),
        plot_rdfs(document, tables["rdf.csv"], folder / "rdf.png"),
        plot_rmsd_rg(document, tables["timeseries.csv"], folder / "rmsd_rg.png"),
    ]
    if "dihedrals.csv" in tables and document.get("dihedrals"):
        written.append(plot_ramachandran(document, tables["dihedrals.csv"], folder / "ramachandran.png"))
    return written
