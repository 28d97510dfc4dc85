"""Collapse diagnosis: tie the first bonds to break in a trajectory to the model's errors on their atoms.

Wang et al. (JCP 159, 035101, 2023) find that light hydrogens with large force-over-mass (FNM) errors break bonds
first. The diagnosis takes the first broken bonds (openmlff.analysis.stability.first_broken_bonds) and the model's
atom-wise metrics on its training data (the "atoms" block of openmlff.metrics.evaluation.evaluate_model or
ForceErrorAccumulator.atom_metrics) and reports, for each atom of each bond: element, mass (Da), force MAE and max,
FNM MAE and max, and the atom's rank among all atoms by FNM MAE and by force MAE (1 = largest error). An atom is
"among the worst FNM atoms" when its FNM MAE rank is at most ceil(worst_share * n_atoms).
"""

from __future__ import annotations

import math

import numpy as np

from ..core import elements
from ..core.errors import InputError

#: Share of the atoms, by FNM MAE, that count as "the worst FNM atoms".
DEFAULT_WORST_SHARE = 0.25
_ATOM_KEYS = ("force_mae", "force_max", "fnm_mae", "fnm_max")


def error_ranks(values) -> np.ndarray:
    """Rank of each value from the largest (1) down; ties share the smallest rank ("competition" ranking)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return (v[None, :] > v[:, None]).sum(axis=1) + 1


def _atom_table(atom_metrics: dict, atomic_numbers) -> dict:
    missing = [k for k in _ATOM_KEYS if k not in atom_metrics]
    if missing:
        raise InputError(f"atom_metrics lacks {missing}; expected the 'atoms' block of evaluate_model")
    table = {k: np.asarray(atom_metrics[k], dtype=np.float64).reshape(-1) for k in _ATOM_KEYS}
    zs = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    for key, values in table.items():
        if values.size != zs.size:
            raise InputError(f"atom_metrics[{key!r}] has {values.size} atoms, the trajectory {zs.size}")
    if "z" in atom_metrics and not np.array_equal(np.asarray(atom_metrics["z"]).reshape(-1), zs):
        raise InputError("atom_metrics are for other atoms (their 'z' differs from the trajectory's atomic numbers)")
    return table


def atom_error_summary(atom_metrics: dict, atomic_numbers, worst_share: float = DEFAULT_WORST_SHARE) -> list[dict]:
    """One record per atom: index, element, mass_da, force_mae/max, fnm_mae/max, fnm_mae_rank,
    force_mae_rank and among_worst_fnm_atoms (see the module docstring), in atom order."""
    if not 0 < worst_share <= 1:
        raise InputError(f"worst_share must be in (0, 1], got {worst_share}")
    table = _atom_table(atom_metrics, atomic_numbers)
    zs = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    masses = elements.masses(zs)
    fnm_rank = error_ranks(table["fnm_mae"])
    force_rank = error_ranks(table["force_mae"])
    n_worst = math.ceil(worst_share * zs.size)
    return [{
        "index": i, "element": elements.symbol(int(zs[i])), "mass_da": float(masses[i]),
        **{k: float(table[k][i]) for k in _ATOM_KEYS},
        "fnm_mae_rank": int(fnm_rank[i]), "force_mae_rank": int(force_rank[i]),
        "among_worst_fnm_atoms": bool(fnm_rank[i] <= n_worst),
    } for i in range(zs.size)]


def diagnose_collapse(broken_bonds: list[dict], atom_metrics: dict, atomic_numbers,
                      worst_share: float = DEFAULT_WORST_SHARE, n_worst_listed: int = 5) -> dict:
    """The collapse diagnosis: each broken bond (in the order given) with the error records of its atoms.

    Returns {"bonds": [bond entry + "atom_errors": [record of atom i, record of atom j]],
    "worst_fnm_atoms": the n_worst_listed atoms with the largest FNM MAE, "n_atoms", "worst_share",
    "worst_rule", "units"}; "broken_bond_atoms_among_worst_fnm" says for how many of the distinct atoms
    of the broken bonds the rule holds.
    """
    records = atom_error_summary(atom_metrics, atomic_numbers, worst_share)
    n_atoms = len(records)
    bond_atoms = sorted({a for bond in broken_bonds for a in bond["atoms"]})
    return {
        "bonds": [dict(bond, atom_errors=[records[a] for a in bond["atoms"]]) for bond in broken_bonds],
        "worst_fnm_atoms": sorted(records, key=lambda r: r["fnm_mae_rank"])[:n_worst_listed],
        "n_atoms": n_atoms, "worst_share": worst_share,
        "worst_rule": f"FNM MAE rank <= ceil({worst_share} * {n_atoms}) = {math.ceil(worst_share * n_atoms)}",
        "broken_bond_atoms_among_worst_fnm": {
            "atoms": bond_atoms, "among_worst": int(sum(records[a]["among_worst_fnm_atoms"] for a in bond_atoms))},
        "units": dict(atom_metrics.get("units") or {}, mass="Da"),
    }


def first_broken_hydrogens(diagnoses: list[dict], atom_records: dict[str, list[dict]]) -> dict:
    """Per model, over its collapsed runs' diagnoses (report.campaign_page.diagnosis_entry rows; the element pairs
    themselves are counted by stability.runs.stability_of_runs): how many first broken bonds hold a hydrogen, and
    that hydrogen's FNM MAE rank among the molecule's hydrogens (1 = the largest error) next to the rank chance
    gives, (n_H + 1) / 2. Ranked among hydrogens only: FNM divides by the mass, so among all atoms the hydrogens
    take the top ranks whatever breaks. atom_records: model -> atom_error_summary of its training frames (a label
    "model@T" finds "model")."""
    ranks_of: dict[str, dict[int, int]] = {}  # model -> {hydrogen index: its FNM MAE rank among the hydrogens}
    for model, records in atom_records.items():
        hydrogens = [r for r in records if r["element"] == "H"]
        ranks_of[model] = dict(zip((r["index"] for r in hydrogens), error_ranks([r["fnm_mae"] for r in hydrogens])))
    out: dict[str, dict] = {}
    for d in diagnoses:
        rank = ranks_of[d["model"].split("@")[0]]
        entry = out.setdefault(d["model"], {"collapsed_runs": 0, "with_bond": 0, "with_hydrogen": 0,
                                            "hydrogen_fnm_mae_ranks_among_hydrogens": [], "n_hydrogens": len(rank),
                                            "chance_median_rank": (len(rank) + 1) / 2})
        entry["collapsed_runs"] += 1
        bond = d.get("first_broken_bond")
        if not bond:
            continue
        entry["with_bond"] += 1
        broken = [a for a in bond["atoms"] if a in rank]
        entry["with_hydrogen"] += bool(broken)
        entry["hydrogen_fnm_mae_ranks_among_hydrogens"] += [int(rank[a]) for a in broken]
    for entry in out.values():
        ranks = entry["hydrogen_fnm_mae_ranks_among_hydrogens"]
        entry["median_rank"] = float(np.median(ranks)) if ranks else None
    return out
