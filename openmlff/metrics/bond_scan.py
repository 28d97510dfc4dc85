"""Bond scans: a potential's energy and force along each bond stretched and compressed, a cheap look at the shape
of its energy surface away from the data (after the bond-deformation test BSCT, arXiv 2602.04861; its idea, not
its code or its exact scores).

For each start conformation and each bond the stability monitor watches (analysis.stability.monitored_bonds), the
bond's lighter atom (the second on a tie) moves along the bond axis so that the bond's length runs over
SCAN_OFFSETS_ANGSTROM around its length in the start, everything else fixed. No reference labels are needed:
the scores ask whether the bond behaves like a bond.

- wrong_sign_share: the share of a scan's points beyond OWN_WINDOW_ANGSTROM of the start's length where the force
  on the moved atom along the bond, beyond FORCE_TOLERANCE_EV_PER_ANGSTROM, pushes the length further from the
  start's: a stretched bond pushed out, a compressed one pushed in. An X-H bond pulls back over the whole range (a
  Morse bond's force keeps its sign at any stretch; the moved H has no other bond), so there every such point is a
  region where MD would break or crush it. A heavy-atom bond is less clean: its moved atom drags its other bonds
  along, and GFN2-xTB itself scores a few per cent there; the `H.` scores are the clean ones. Points within the
  window are left out: a start taken from MD is itself a little off its bond's minimum, which lies somewhere in it.
- spurious_minimum: whether E(r) has a local minimum on the grid outside the window, deeper than
  MINIMUM_DEPTH_EV on both sides (float32 energies are noisy at the meV level on flat stretches), an artificial
  well that can catch a stretched (or crushed) bond.
- min_stretch_energy_ev: the lowest E(stretched beyond the window) - E(start): below zero the model prefers a
  stretched bond.

Per potential the scans are summarised over all bonds, and over the bonds with a hydrogen (the paper's light atoms
that break first): mean wrong-sign share, share of scans with a spurious minimum. Cost: n_starts x n_bonds x
len(SCAN_OFFSETS_ANGSTROM) single points (aspirin: 4 x 21 x 27 = 2268, about 0.7 % of a 16-start 10 ps
campaign's steps).
"""

from __future__ import annotations

import numpy as np

from ..core import elements
from ..core.errors import InputError

#: Offsets from the start's bond length, Å: compression to 0.3 Å, stretch to 1.0 Å, in 0.05 Å steps.
SCAN_OFFSETS_ANGSTROM = np.round(np.arange(-0.30, 1.0001, 0.05), 2)
#: The window around the start's length where the bond's own minimum may lie (a start from MD is a little off it).
OWN_WINDOW_ANGSTROM = 0.15
#: A local minimum counts when both neighbouring grid points lie this much higher (eV; 5 meV, 0.12 kcal/mol).
MINIMUM_DEPTH_EV = 0.005
#: Forces along the bond smaller than this (eV/Å, about 1.2 kcal/mol/Å) count as neither sign.
FORCE_TOLERANCE_EV_PER_ANGSTROM = 0.05
SUMMARY_KEYS = ("wrong_sign_share", "spurious_minimum_share", "H.wrong_sign_share", "H.spurious_minimum_share")


def scan_geometries(positions_angstrom, bond, moved: int, offsets=SCAN_OFFSETS_ANGSTROM) -> tuple[np.ndarray, np.ndarray]:
    """(frames (n_offsets, n_atoms, 3) Å, unit bond axis pointing from the fixed atom to the moved one): the start
    with atom `moved` of `bond` displaced along the axis so that the bond's length is start length + offset."""
    R = np.asarray(positions_angstrom, dtype=np.float64)
    fixed = bond[0] if moved == bond[1] else bond[1]
    axis = R[moved] - R[fixed]
    length = float(np.linalg.norm(axis))
    if length == 0.0:
        raise InputError(f"bond {tuple(bond)} has zero length in the start conformation")
    axis /= length
    frames = np.repeat(R[None], len(offsets), axis=0)
    frames[:, moved] += np.asarray(offsets, dtype=np.float64)[:, None] * axis
    return frames, axis


def scan_scores(offsets, energies_ev, force_along_ev_per_angstrom,
                tolerance: float = FORCE_TOLERANCE_EV_PER_ANGSTROM, window: float = OWN_WINDOW_ANGSTROM) -> dict:
    """One scan's scores (module docstring) from its energies (eV) and the moved atom's force along the axis
    (eV/Å, positive = lengthening the bond) at each offset (Å, one of them 0)."""
    x = np.asarray(offsets, dtype=np.float64)
    E = np.asarray(energies_ev, dtype=np.float64)
    f = np.asarray(force_along_ev_per_angstrom, dtype=np.float64)
    outside = np.abs(x) > window + 1e-9
    if not outside.any():
        raise InputError(f"no scan offset lies beyond the {window} Å window around the start's length")
    wrong = (np.sign(x) * f > tolerance) & outside  # pushed away from the start's length
    start = int(np.argmin(np.abs(x)))
    interior = np.arange(1, len(E) - 1)
    deep = MINIMUM_DEPTH_EV
    minima = interior[(E[interior] < E[interior - 1] - deep) & (E[interior] < E[interior + 1] - deep)]
    stretched = x > window + 1e-9
    return {"wrong_sign_share": float(wrong.sum() / outside.sum()),
            "spurious_minimum": bool(outside[minima].any()),
            "min_stretch_energy_ev": float((E[stretched] - E[start]).min()) if stretched.any() else None}


def bond_scans(potential, atomic_numbers, starts_angstrom, offsets=SCAN_OFFSETS_ANGSTROM,
               reference_positions_angstrom=None) -> dict:
    """Every monitored bond of every start scanned with `potential` (a Potential, model file or name: see
    potentials.get_potential). Returns {"scans": [{start, atoms, elements, moved, **scan_scores}], "summary":
    {SUMMARY_KEYS: value}, "offsets_angstrom", "units"}; the bonds are found on the first start."""
    from ..analysis.stability import monitored_bonds
    from ..potentials import get_potential

    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    starts = np.asarray(starts_angstrom, dtype=np.float64).reshape(-1, z.size, 3)
    potential = get_potential(potential)
    potential.check_atoms(z, where="bond scan")
    bonds, _ = monitored_bonds(z, starts[0], reference_positions_angstrom)
    masses = elements.masses(z)
    symbols = [elements.symbol(int(v)) for v in z]
    scans = []
    for k, start in enumerate(starts):
        for i, j in bonds.tolist():
            moved = i if masses[i] < masses[j] else j
            frames, axis = scan_geometries(start, (i, j), moved, offsets)
            energies, forces = potential.energies_and_forces(z, frames)
            scans.append({"start": k, "atoms": [i, j], "elements": [symbols[i], symbols[j]], "moved": moved,
                          **scan_scores(offsets, energies, forces[:, moved] @ axis)})
    return {"scans": scans, "summary": summarise(scans), "offsets_angstrom": np.asarray(offsets).tolist(),
            "units": {"energy": "eV", "force": "eV/Å", "length": "Å"}}


def summarise(scans: list[dict]) -> dict:
    """Mean wrong-sign share and share of scans with a spurious minimum, over all scans and over bonds with an H
    (None where there is no such scan)."""
    def over(rows):
        if not rows:
            return None, None
        return (float(np.mean([r["wrong_sign_share"] for r in rows])),
                float(np.mean([r["spurious_minimum"] for r in rows])))

    every = over(scans)
    hydrogen = over([r for r in scans if "H" in r["elements"]])
    return dict(zip(SUMMARY_KEYS, (*every, *hydrogen)))
