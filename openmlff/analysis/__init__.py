"""Trajectory analysis with mdtraj: observables, bond stability, the collapse diagnosis, whole-run analysis.

Plain functions of an mdtraj.Trajectory (+ arrays) returning numpy arrays, in the style of mdtraj;
lengths in nm where they come from mdtraj (names end in _nm), bond lengths in Å like the
stability monitor (names end in _angstrom), angles in degrees (_deg).

    from openmlff.analysis import analyze_run
    analysis = analyze_run("runs/aspirin-500K-seed0", data="rmd17_aspirin.npz")
    analysis.document["diagnosis"]["bonds"][0]   # the first bond to break and its atoms' errors
"""

from .diagnosis import atom_error_summary, diagnose_collapse, error_ranks
from .observables import (
    all_atom_pairs, backbone_dihedrals_deg, compute_distance_distribution, compute_element_rdfs,
    distance_distribution_mae, element_pairs, radius_of_gyration_nm, rmsd_to_first_frame_nm,
)
from .reference_data import ReferenceData, find_reference_data, training_frames
from .run_analysis import AnalysisConfig, RunAnalysis, analyze_run
from .run_files import RunData, RunFileError, check_dcd_complete, dataset_trajectory, load_run
from .stability import (
    bond_label, bond_length_deviations_angstrom, first_broken_bonds, first_frames_beyond_limit, monitored_bonds,
)

__all__ = [
    "AnalysisConfig", "ReferenceData", "RunAnalysis", "RunData", "RunFileError",
    "all_atom_pairs", "analyze_run", "atom_error_summary", "backbone_dihedrals_deg", "bond_label",
    "bond_length_deviations_angstrom", "check_dcd_complete", "compute_distance_distribution",
    "compute_element_rdfs", "dataset_trajectory", "diagnose_collapse", "distance_distribution_mae",
    "element_pairs", "error_ranks", "find_reference_data", "first_broken_bonds", "first_frames_beyond_limit",
    "load_run", "monitored_bonds", "radius_of_gyration_nm", "rmsd_to_first_frame_nm", "training_frames",
]
