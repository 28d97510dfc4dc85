"""The solvent around the molecule of a solvated run (md/environment.py), for `openmlff analyze --water keep`.

Plain functions of the whole system's mdtraj.Trajectory (periodic, its unit cells from the DCD; lengths in nm):
the box volume and mass density per frame (NPT moves them), the number of waters in the first shell of the
molecule (water oxygens within `shell_nm` of any of its atoms, minimum images), and g(r) of the water oxygens
around each element of the molecule (mdtraj.compute_rdf, normalised by the box volume: 1 for bulk water's
density spread evenly).
"""

from __future__ import annotations

import mdtraj
import numpy as np

from ..core import elements
from ..core.errors import InputError

#: First solvation shell: water oxygens this close to a molecule atom, in nm (the first minimum of the O-O g(r)).
DEFAULT_SHELL_NM = 0.35
#: 1 Da / nm^3 in g/cm^3.
_G_PER_CM3_PER_DA_PER_NM3 = 1.66053906660e-3


def water_oxygens(topology: mdtraj.Topology) -> np.ndarray:
    """Indices of the water oxygens (mdtraj's `water` residues)."""
    return topology.select("water and element O")


def box_volumes_nm3(traj: mdtraj.Trajectory) -> np.ndarray:
    return np.asarray(traj.unitcell_volumes, dtype=np.float64)


def densities_g_per_cm3(traj: mdtraj.Trajectory) -> np.ndarray:
    """Mass density of the whole box per frame (openmlff's masses)."""
    zs = np.array([a.element.atomic_number for a in traj.topology.atoms])
    return float(elements.masses(zs).sum()) / box_volumes_nm3(traj) * _G_PER_CM3_PER_DA_PER_NM3


def first_shell_waters(traj: mdtraj.Trajectory, molecule_atoms, shell_nm: float = DEFAULT_SHELL_NM) -> np.ndarray:
    """Waters (their oxygens) within shell_nm of any molecule atom, per frame (n_frames,)."""
    found = mdtraj.compute_neighbors(traj, shell_nm, np.asarray(molecule_atoms), haystack_indices=water_oxygens(
        traj.topology), periodic=True)
    return np.array([len(f) for f in found], dtype=np.int64)


def water_rdfs(traj: mdtraj.Trajectory, molecule_atoms, r_max_nm: float, bin_width_nm: float):
    """g(r) of water O around each element of the molecule: (r_nm bin centres, {"C-O(water)": g, ...})."""
    oxygens = water_oxygens(traj.topology)
    if oxygens.size == 0:
        raise InputError("the trajectory has no water oxygens (residues HOH/WAT) to compute water g(r) with")
    molecule_atoms = np.asarray(molecule_atoms)
    zs = np.array([traj.topology.atom(int(i)).element.atomic_number for i in molecule_atoms])
    n_bins = max(1, int(round(r_max_nm / bin_width_nm)))
    out, r = {}, None
    for z in sorted(set(zs.tolist())):
        pairs = np.array([(int(a), int(o)) for a in molecule_atoms[zs == z] for o in oxygens])
        r, g = mdtraj.compute_rdf(traj, pairs, r_range=(0.0, float(r_max_nm)), n_bins=n_bins, periodic=True)
        out[f"{elements.symbol(z)}-O(water)"] = g
    return r, out
