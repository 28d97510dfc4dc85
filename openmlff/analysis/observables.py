"""Structural observables of a trajectory: plain functions of an mdtraj.Trajectory returning numpy arrays.

In the style of mdtraj (no hidden state) and in mdtraj's units: lengths in nm (names end in _nm),
angles in degrees (names end in _deg). Isolated molecules, no periodic box.

Distribution of interatomic distances (Fu et al. 2022, "Forces are not enough"): for a frame
with n atoms and P = n(n-1)/2 pairs,

    h(r) = (1/P) Σ_{i<j} δ(r - r_ij),   ∫ h(r) dr = 1,

averaged over the frames of a trajectory, <h(r)>. Its error against reference data is

    MAE_h = ∫ |<h(r)>_sim - <h(r)>_ref| dr            (dimensionless, between 0 and 2),

computed on a histogram with bins of width Δr over r_range: Σ_bins |h_sim - h_ref| Δr. Pairs
farther apart than r_range[1] are left out of the histogram but kept in P, so a trajectory whose
atoms fly apart loses density inside the range and that loss counts in MAE_h.

Radial distribution functions of element pairs use mdtraj.compute_rdf. An isolated molecule has
no box volume, so g(r) is normalised with the volume V = 4/3 π r_max³ of the sphere of radius
r_max = r_range[1]: g(r) = (share of the pairs in the shell) / (shell volume / V), which is 1 for
pairs spread evenly over that sphere.
"""

from __future__ import annotations

import mdtraj
import numpy as np

from ..core import elements
from ..core.errors import InputError

_CHUNK_FRAMES = 500  # frames per block when histogramming distances (bounds the temporary arrays)


def topology_atomic_numbers(topology: mdtraj.Topology) -> np.ndarray:
    """Atomic numbers of an mdtraj topology's atoms (0 for an atom without element)."""
    return np.asarray([a.element.atomic_number if a.element is not None else 0 for a in topology.atoms], dtype=np.int64)


def all_atom_pairs(n_atoms: int) -> np.ndarray:
    """(n_atoms (n_atoms - 1) / 2, 2) int array of the pairs i < j in np.triu_indices order."""
    i, j = np.triu_indices(int(n_atoms), k=1)
    return np.stack([i, j], axis=1)


def _bin_edges_nm(r_range_nm, bin_width_nm: float) -> np.ndarray:
    lo, hi = (float(v) for v in r_range_nm)
    if not (hi > lo >= 0 and bin_width_nm > 0):
        raise InputError(f"r_range_nm {tuple(r_range_nm)} must be (lo, hi) with 0 <= lo < hi, and bin_width_nm "
                         f"({bin_width_nm}) positive")
    n_bins = max(1, int(round((hi - lo) / bin_width_nm)))
    return np.linspace(lo, lo + n_bins * bin_width_nm, n_bins + 1)


def compute_distance_distribution(traj: mdtraj.Trajectory, r_range_nm=(0.0, 1.0), bin_width_nm: float = 0.01):
    """<h(r)> of the module docstring: (r_nm bin centres (n_bins,), h_per_nm (n_bins,)).

    Σ h_per_nm * bin_width_nm is the share of all pairs of all frames inside r_range_nm.
    """
    if traj.n_frames == 0 or traj.n_atoms < 2:
        raise InputError(f"the distance distribution needs at least one frame and two atoms, got "
                         f"{traj.n_frames} frames of {traj.n_atoms} atoms")
    edges = _bin_edges_nm(r_range_nm, bin_width_nm)
    pairs = all_atom_pairs(traj.n_atoms)
    counts = np.zeros(edges.size - 1)
    for start in range(0, traj.n_frames, _CHUNK_FRAMES):
        distances = mdtraj.compute_distances(traj[start:start + _CHUNK_FRAMES], pairs, periodic=False)
        counts += np.histogram(distances, bins=edges)[0]
    h = counts / (len(pairs) * traj.n_frames * np.diff(edges))
    return 0.5 * (edges[1:] + edges[:-1]), h


def distance_distribution_mae(h_per_nm, h_reference_per_nm, bin_width_nm: float) -> float:
    """MAE_h = Σ_bins |h - h_ref| Δr (dimensionless): the h(r) error of Fu et al. 2022 on a common histogram."""
    a = np.asarray(h_per_nm, dtype=np.float64)
    b = np.asarray(h_reference_per_nm, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"h(r) histograms have {a.shape} and {b.shape} bins; "
                         "compute both on the same r_range and bins")
    return float(np.abs(a - b).sum() * float(bin_width_nm))


def element_pairs(traj: mdtraj.Trajectory) -> dict[str, np.ndarray]:
    """Atom pairs by element pair: {"C-H": (n, 2) indices i != j, ...}, element symbols in alphabetical order."""
    zs = topology_atomic_numbers(traj.topology)
    present = sorted(set(zs.tolist()), key=elements.symbol)
    out = {}
    for k, za in enumerate(present):
        for zb in present[k:]:
            a, b = np.flatnonzero(zs == za), np.flatnonzero(zs == zb)
            if za == zb:
                if a.size < 2:
                    continue
                i, j = np.triu_indices(a.size, k=1)
                pairs = np.stack([a[i], a[j]], axis=1)
            else:
                pairs = np.stack(np.meshgrid(a, b, indexing="ij"), axis=-1).reshape(-1, 2)
            out[f"{elements.symbol(za)}-{elements.symbol(zb)}"] = pairs
    return out


def compute_element_rdfs(traj: mdtraj.Trajectory, r_range_nm=(0.0, 1.0), bin_width_nm: float = 0.005):
    """g(r) of every element pair with mdtraj.compute_rdf, normalised as the module docstring says.

    Returns (r_nm bin centres (n_bins,), {"C-H": g (n_bins,), ...}); g is dimensionless.
    """
    edges = _bin_edges_nm(r_range_nm, bin_width_nm)
    r_max = float(edges[-1])
    side_nm = (4.0 / 3.0 * np.pi * r_max**3) ** (1.0 / 3.0)  # a cube of the sphere's volume sets V
    boxed = mdtraj.Trajectory(traj.xyz, traj.topology,
                              unitcell_lengths=np.full((traj.n_frames, 3), side_nm),
                              unitcell_angles=np.full((traj.n_frames, 3), 90.0))
    out, r = {}, None
    for name, pairs in element_pairs(traj).items():
        r, g = mdtraj.compute_rdf(boxed, pairs, r_range=(float(edges[0]), r_max), n_bins=edges.size - 1, periodic=False)
        out[name] = g
    if r is None:
        r = 0.5 * (edges[1:] + edges[:-1])
    return r, out


def rmsd_to_first_frame_nm(traj: mdtraj.Trajectory, atom_indices=None) -> np.ndarray:
    """RMSD (nm) of every frame to frame 0 after optimal superposition (mdtraj.rmsd): (n_frames,), 0 for frame 0."""
    return mdtraj.rmsd(traj, traj, 0, atom_indices=atom_indices).astype(np.float64)


def radius_of_gyration_nm(traj: mdtraj.Trajectory, mass_weighted: bool = True) -> np.ndarray:
    """Radius of gyration (nm) of every frame: sqrt(Σ m_i |r_i - r_c|² / Σ m_i), r_c = Σ m_i r_i / Σ m_i the centre
    of mass (atomic masses in Da from openmlff.core.elements), or with all m_i = 1 when mass_weighted is False.

    Computed here rather than with mdtraj.compute_rg, which centres on the unweighted mean even when
    given masses (mdtraj 1.11), so its "mass-weighted" value is not the one about the centre of mass.
    """
    zs = topology_atomic_numbers(traj.topology)
    weights = elements.masses(zs) if mass_weighted else np.ones(len(zs))
    weights = weights / weights.sum()
    xyz = traj.xyz.astype(np.float64)
    centre = np.einsum("i,fik->fk", weights, xyz)
    squared = ((xyz - centre[:, None, :]) ** 2).sum(-1)
    return np.sqrt(squared @ weights)


def backbone_dihedrals_deg(traj: mdtraj.Trajectory) -> dict:
    """Backbone phi and psi angles (degrees, -180..180) with mdtraj.compute_phi / compute_psi: {"phi_atoms":
    (n_phi, 4), "phi_deg": (n_frames, n_phi), "phi_residues": ["ALA2", ...], "psi_atoms", "psi_deg",
    "psi_residues"}, empty without a peptide backbone. Each angle is labelled with its residue (phi: the residue
    of its N and CA; psi: of CA and C)."""
    out = {}
    for name, compute in (("phi", mdtraj.compute_phi), ("psi", mdtraj.compute_psi)):
        atoms, radians = compute(traj)
        atoms = np.asarray(atoms, dtype=np.int64).reshape(-1, 4)
        residues = [traj.topology.atom(int(quad[1])).residue for quad in atoms]  # N (phi) or CA (psi)
        out[f"{name}_atoms"] = atoms
        out[f"{name}_deg"] = np.degrees(np.asarray(radians, dtype=np.float64)).reshape(traj.n_frames, len(atoms))
        out[f"{name}_residues"] = [f"{res.name}{res.resSeq}" for res in residues]
    return out
