"""Analyse one MD run directory: bond deviations, h(r) and its error, RDFs, RMSD, Rg, dihedrals, collapse diagnosis.

`analyze_run` compares the run (run_files) with its reference data (the --data file or the model's recorded
training data, reference_data) through the plain functions of `observables` and `stability`, and evaluates the
model on its training frames (evaluate_model) for the atom-wise force and FNM errors of the collapse diagnosis.
It returns a RunAnalysis: a JSON-ready document and tables of time series and curves (column names carry their
units), which openmlff.report writes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.config import check_finite, setting
from ..core.errors import InputError
from ..md.start import MAX_REFERENCE_FRAMES
from ..core.atomic_io import jsonable
from ..metrics.force_metrics import DEFAULT_FORCE_UNIT
from ..potentials.base import Potential
from ..core.units import NM_IN_ANGSTROM
from . import diagnosis, observables, solvation, stability
from .reference_data import ReferenceData, find_reference_data
from ..md.rundir import array_sha256
from .run_files import RunData, dataset_trajectory, evenly_spaced_frames, load_run


@dataclass
class AnalysisConfig:
    """Settings of a run analysis (units in the names); the fields are `openmlff analyze`'s options
    (openmlff.core.config.add_config_arguments), the older short forms kept as aliases."""

    bond_deviation_limit_angstrom: float | None = setting(
        None, "collapse threshold in Å (default: the limit the run's monitor used, run.json)",
        aliases=("--bond-deviation",))
    n_first_broken_bonds: int = setting(5, "bonds listed in the order they first broke")
    distance_bin_width_nm: float = setting(0.01, "bin width of h(r) in nm")
    distance_r_max_nm: float | None = setting(None, "largest distance of h(r) and the RDFs in nm (default: 1.5 x "
                                                    "the start's largest interatomic distance, rounded up to 0.1 nm)")
    rdf_bin_width_nm: float = setting(0.005, "bin width of the RDFs in nm")
    max_reference_frames: int = setting(MAX_REFERENCE_FRAMES, "at most about this many evenly spaced reference "
                                                              "frames enter h(r) and the reference bond lengths")
    evaluate_errors: bool = setting(True, "evaluate the model on its training frames for the collapse diagnosis",
                                    aliases=("--errors",))
    evaluation_batch_size: int = setting(32, "frames per batch when evaluating the model", aliases=("--batch-size",))
    worst_atom_share: float = setting(diagnosis.DEFAULT_WORST_SHARE, "share of atoms counted as the worst by FNM "
                                                                     "error in the diagnosis")
    force_unit: str = setting(DEFAULT_FORCE_UNIT, "force unit of the diagnosis")
    water: str = setting("strip", "solvated runs: strip (the molecule alone) or keep the water (and ions) for the "
                                  "solvation analysis: box volume, density, first-shell waters, water g(r)")

    def __post_init__(self) -> None:
        check_finite(self)
        for name in ("distance_bin_width_nm", "rdf_bin_width_nm", "bond_deviation_limit_angstrom", "distance_r_max_nm"):
            value = getattr(self, name)  # the last two may be None: their default
            if value is not None and not value > 0:
                raise InputError(f"AnalysisConfig.{name} must be positive, got {value}")
        if self.water not in ("strip", "keep"):
            raise InputError(f"AnalysisConfig.water must be 'strip' or 'keep', got {self.water!r}")


@dataclass
class RunAnalysis:
    """The result: `document` (JSON-ready, written as analysis.json) and `tables` (CSV name -> columns,
    each column name with its unit in brackets, e.g. 'time [ps]')."""

    document: dict
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


UNITS = {
    "time": "ps", "trajectory_length": "nm", "bond_length": "Å", "angle": "degree",
    "h(r)": "1/nm", "h(r) MAE": "dimensionless (integral of |h_sim - h_ref| dr)", "g(r)": "dimensionless",
    "mass": "Da",
}


def analyze_run(run_dir, data=None, model=None, config: AnalysisConfig | None = None, *,
                energy_unit: str | None = None, length_unit: str | None = None, progress: bool = False,
                topology=None, frame_interval_ps: float | None = None) -> RunAnalysis:
    """Analyse the run directory `run_dir`, or a trajectory file of another engine (analysis/trajectory_files.py:
    ASE .traj, extended XYZ, DCD, XTC, NetCDF, HDF5, ...; `data` is then required, `topology` and
    `frame_interval_ps` as the format needs). data: reference data (path or Dataset); default the model's recorded
    training data file, when it exists. model: the model whose errors the diagnosis reports (anything
    potentials.get_potential takes); default the run's (run.json). energy_unit/length_unit: the data file's units
    when it cannot tell them."""
    config = config or AnalysisConfig()
    if Path(run_dir).is_file():
        run = _trajectory_file(run_dir, data, config, topology, frame_interval_ps, energy_unit, length_unit)
    else:
        if topology is not None or frame_interval_ps is not None:
            raise InputError(f"{run_dir}: a run directory knows its topology and frame times; --topology and "
                             "--frame-interval-ps are for trajectory files of other engines")
        run = load_run(run_dir, keep_solvent=config.water == "keep")
    model_path, model_metadata, model_info = _model(run, model)
    reference = find_reference_data(model_metadata, data, energy_unit=energy_unit, length_unit=length_unit)
    traj = run.trajectory
    reference_traj = None
    if reference is not None:
        frames = evenly_spaced_frames(reference.dataset.n_frames, config.max_reference_frames)
        reference_traj = dataset_trajectory(reference.dataset, traj.topology, frames)

    times = run.frame_times_ps
    tables: dict[str, dict[str, np.ndarray]] = {}
    doc: dict = {"run": _run_section(run), "units": dict(UNITS), "config": asdict(config), "model": model_info,
                 "reference_data": None if reference is None else reference.describe()}

    doc["bonds"], deviations, broken = _bonds(run, reference, config)
    if run.summary is None and run.record.get("source") == "trajectory file":  # the bond criterion is the verdict
        first = broken[0] if broken else None
        doc["run"].update(source=run.record["file"], stable=not broken,
                          collapse_time_ps=None if first is None else first["first_time_ps"],
                          first_broken_bond=first, n_broken_bonds=len(broken))
    labels = [stability.bond_label(b, run.atomic_numbers) for b in doc["bonds"]["bonds"]]
    tables["bond_deviations.csv"] = {"frame": np.arange(traj.n_frames), "time [ps]": times,
                                     **{f"{name} deviation [Å]": deviations[:, k] for k, name in enumerate(labels)}}

    rmsd = observables.rmsd_to_first_frame_nm(traj)
    rg = observables.radius_of_gyration_nm(traj)
    abs_dev = np.abs(deviations)
    tables["timeseries.csv"] = {
        "frame": np.arange(traj.n_frames), "step": run.frame_steps, "time [ps]": times,
        "source": np.where(np.arange(traj.n_frames) < run.n_trajectory_frames, "trajectory", "collapse_frames"),
        "rmsd_to_start [nm]": rmsd, "radius_of_gyration [nm]": rg,
        "max_abs_bond_deviation [Å]": abs_dev.max(axis=1) if abs_dev.size else np.zeros(traj.n_frames),
        "bonds_beyond_limit": (abs_dev > doc["bonds"]["limit_angstrom"]).sum(axis=1),
    }
    doc["rmsd_to_start_nm"] = {"final": float(rmsd[-1]), "max": float(rmsd.max()), "superposed": True}
    doc["radius_of_gyration_nm"] = {"start": float(rg[0]), "final": float(rg[-1]), "max": float(rg.max()),
                                    "mass_weighted": True}

    r_max = config.distance_r_max_nm or _default_r_max_nm(run.start_positions_angstrom)
    doc["distance_distribution"], tables["distance_distribution.csv"] = _distance_distribution(
        traj, reference_traj, r_max, config.distance_bin_width_nm)
    doc["rdf"], tables["rdf.csv"] = _rdfs(traj, reference_traj, r_max, config.rdf_bin_width_nm)
    doc["dihedrals"], dihedral_table = _dihedrals(traj, times)
    if dihedral_table is not None:
        tables["dihedrals.csv"] = dihedral_table

    if run.environment is not None:
        doc["environment"] = {k: v for k, v in run.environment.items() if k not in ("atomic_numbers", "ml_atoms")}
        doc["environment"]["water"] = config.water
    if run.solvated_trajectory is not None and run.environment.get("kind") == "solvated":
        doc["solvation"], tables["solvation.csv"], tables["water_rdf.csv"] = _solvation(run, config)

    doc["diagnosis"], atom_table = _diagnosis(run, broken[:config.n_first_broken_bonds], model_path, reference,
                                              config, progress)
    if atom_table is not None:
        tables["atom_errors.csv"] = atom_table
    return RunAnalysis(document=jsonable(doc), tables=tables)


# --- pieces ----------------------------------------------------------------------------------------

def _trajectory_file(path, data, config: AnalysisConfig, topology, frame_interval_ps, energy_unit, length_unit):
    """A trajectory of another engine as a RunData, against the reference data (required)."""
    from .trajectory_files import load_trajectory_file

    if data is None:
        raise InputError(f"{path}: a trajectory openmlff did not write needs reference data (--data) for its bond "
                         "lengths and h(r)")
    dataset = find_reference_data({}, data, energy_unit=energy_unit, length_unit=length_unit).dataset
    return load_trajectory_file(path, dataset, topology=topology, frame_interval_ps=frame_interval_ps,
                                bond_deviation_limit_angstrom=config.bond_deviation_limit_angstrom)


def _model(run: RunData, model):
    """The model to evaluate (a Path, a ModelRef, a name, or None: none known), its metadata, and a JSON block saying
    which model it is and whether it is the run's.

    A run by a classical force field or a reference method is evaluated by its name, one by a model of another code
    by its name and options (run.json's metadata); a file given, or the run's, by its path. A trajectory of another
    engine has no model unless one is given."""
    from ..model_file.reader import file_sha256
    from ..potentials.model_ref import ModelRef

    recorded = run.record["model"]
    recorded_sha = recorded.get("sha256")
    ref = None if model is None else ModelRef.from_value(model)
    if ref is None and run.model_path is None:
        if recorded.get("name") is None:
            return None, {}, {"given": False, "name": None, "is_run_model": None}
        metadata = dict(recorded.get("metadata") or {})
        info = {"kind": recorded.get("kind"), "name": recorded.get("name"), "given": False, "sha256": recorded_sha,
                "is_run_model": True}
        return ModelRef(recorded["name"], metadata.get("options") or {}), metadata, info
    if ref is not None and not ref.is_file():
        from ..potentials import get_potential

        potential = get_potential(ref)
        metadata = potential.metadata(run.atomic_numbers)
        sha = potential.identity_sha256(run.atomic_numbers, run.start_positions_angstrom)
        info = {"kind": potential.kind, "name": str(ref), "given": True, "sha256": sha,
                "is_run_model": None if recorded_sha is None else sha == recorded_sha}
        return potential, metadata, info
    path = Path(ref.name) if ref is not None else run.model_path
    if ref is not None and not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    info = {"path": str(path), "given": ref is not None, "run_model_path": str(run.model_path)}
    if path.is_file():
        sha = file_sha256(path)
        info.update(sha256=sha, is_run_model=None if recorded_sha is None else sha == recorded_sha)
        metadata = _file_metadata(path)
    else:
        info.update(sha256=None, is_run_model=None, missing=True)
        metadata = run.model_metadata
    return path, metadata, info


def _file_metadata(path: Path) -> dict:
    """An openmlff model file's metadata ({} for another code's TorchScript file, which has none)."""
    from ..model_file.reader import load_model_file

    return load_model_file(path)[1] or {}


def _run_section(run: RunData) -> dict:
    keys = ("stable", "steps_completed", "steps_requested", "collapse_step", "collapse_time_ps", "collapse_reason",
            "first_broken_bond", "n_broken_bonds", "ns_per_day")
    return {"directory": str(run.directory.resolve()), "frames": run.trajectory.n_frames,
            "frames_from_trajectory": run.n_trajectory_frames,
            "frames_from_collapse_frames": run.trajectory.n_frames - run.n_trajectory_frames,
            "atoms": run.trajectory.n_atoms,
            "symbols": [a.element.symbol for a in run.trajectory.topology.atoms],
            "frame_interval_steps": run.frame_interval_steps, "timestep_fs": run.timestep_fs,
            "last_frame_time_ps": float(run.frame_times_ps[-1]), "finished": run.summary is not None,
            "temperature_K": run.record["config"].get("temperature_K"),
            **{k: getattr(run.summary, k) if run.summary is not None else None for k in keys}}


def _bonds(run: RunData, reference: ReferenceData | None, config: AnalysisConfig):
    """Bond section, deviations (n_frames, n_bonds) in Å and all broken bonds in the order they broke."""
    recorded = run.record.get("reference_positions")
    reference_R = None
    if recorded is None:
        how = "the starting structure (as the run's monitor: run.json records no reference positions)"
        matches = True
    elif reference is not None:
        frames = evenly_spaced_frames(reference.dataset.n_frames, config.max_reference_frames)
        reference_R = reference.dataset.R[frames]
        matches = array_sha256(reference_R) == recorded.get("sha256")
        how = f"mean over {len(frames)} frames of {reference.dataset.source}"
    else:
        how = "the starting structure (the run's monitor used reference frames that are not available here)"
        matches = False
    bonds, ref_lengths = stability.monitored_bonds(run.atomic_numbers, run.start_positions_angstrom, reference_R)
    limit = config.bond_deviation_limit_angstrom or float(run.record["config"]["bond_deviation_limit_angstrom"])
    deviations = stability.bond_length_deviations_angstrom(run.trajectory, bonds, ref_lengths)
    broken = stability.first_broken_bonds(deviations, bonds, run.atomic_numbers, limit)
    for entry in broken:
        entry["first_time_ps"] = float(run.frame_times_ps[entry["first_frame"]])
        entry["reference_length_angstrom"] = float(ref_lengths[entry["bond"]])
    monitor_bond = run.summary.first_broken_bond if run.summary is not None else None
    return {
        "limit_angstrom": limit, "reference_lengths_from": how, "matches_monitor_reference": matches,
        "n_bonds": len(bonds), "bonds": bonds, "reference_lengths_angstrom": ref_lengths,
        "max_abs_deviation_angstrom": np.abs(deviations).max(axis=0) if len(bonds) else [],
        "n_broken": len(broken), "first_broken_bonds": broken,
        "first_broken_bond_agrees_with_monitor": None if not (monitor_bond and broken) else
        sorted(monitor_bond["atoms"]) == sorted(broken[0]["atoms"]),
    }, deviations, broken


def _default_r_max_nm(start_positions_angstrom) -> float:
    pos = np.asarray(start_positions_angstrom, dtype=np.float64)
    largest_nm = np.linalg.norm(pos[:, None] - pos[None, :], axis=-1).max() / NM_IN_ANGSTROM
    return math.ceil(1.5 * largest_nm * 10.0) / 10.0  # rounded up to 0.1 nm


def _distance_distribution(traj, reference_traj, r_max_nm: float, bin_width_nm: float):
    r, h = observables.compute_distance_distribution(traj, (0.0, r_max_nm), bin_width_nm)
    table = {"r [nm]": r, "h_simulation [1/nm]": h}
    doc = {"definition": "h(r) = (1/P) sum_{i<j} delta(r - r_ij) averaged over frames (Fu et al. 2022); "
                         "MAE = integral of |h_sim - h_ref| dr",
           "r_range_nm": [0.0, float(r_max_nm)], "bin_width_nm": bin_width_nm,
           "share_of_pairs_in_range_simulation": float(h.sum() * bin_width_nm), "mae": None, "reference_frames": None}
    if reference_traj is not None:
        _, h_ref = observables.compute_distance_distribution(reference_traj, (0.0, r_max_nm), bin_width_nm)
        table["h_reference [1/nm]"] = h_ref
        doc.update(mae=observables.distance_distribution_mae(h, h_ref, bin_width_nm),
                   reference_frames=reference_traj.n_frames,
                   share_of_pairs_in_range_reference=float(h_ref.sum() * bin_width_nm))
    return doc, table


def _rdfs(traj, reference_traj, r_max_nm: float, bin_width_nm: float):
    r, g = observables.compute_element_rdfs(traj, (0.0, r_max_nm), bin_width_nm)
    table = {"r [nm]": r, **{f"g_simulation {pair}": values for pair, values in g.items()}}
    if reference_traj is not None:
        _, g_ref = observables.compute_element_rdfs(reference_traj, (0.0, r_max_nm), bin_width_nm)
        table.update({f"g_reference {pair}": values for pair, values in g_ref.items()})
    doc = {"pairs": list(g), "r_range_nm": [0.0, float(r_max_nm)], "bin_width_nm": bin_width_nm,
           "normalisation": "volume of the sphere of radius r_max (isolated molecule, no box)",
           "reference": reference_traj is not None}
    return doc, table


def _solvation(run: RunData, config: AnalysisConfig):
    """The water around the molecule (analysis/solvation.py) from the trajectory's frames (no collapse frames)."""
    full = run.solvated_trajectory
    atoms = np.asarray(run.environment["ml_atoms"])
    times = run.frame_times_ps[:full.n_frames]
    volume, density = solvation.box_volumes_nm3(full), solvation.densities_g_per_cm3(full)
    shell = solvation.first_shell_waters(full, atoms)
    r_max = min(1.0, 0.5 * float(full.unitcell_lengths.min()))
    r, g = solvation.water_rdfs(full, atoms, r_max, config.rdf_bin_width_nm)
    doc = {"frames": full.n_frames, "waters": int(solvation.water_oxygens(full.topology).size),
           "box_volume_nm3": {"start": float(volume[0]), "final": float(volume[-1]), "mean": float(volume.mean())},
           "density_g_per_cm3": {"start": float(density[0]), "final": float(density[-1]), "mean": float(density.mean())},
           "first_shell_waters": {"shell_nm": solvation.DEFAULT_SHELL_NM, "mean": float(shell.mean()),
                                  "min": int(shell.min()), "max": int(shell.max())},
           "water_rdf": {"pairs": list(g), "r_range_nm": [0.0, r_max], "bin_width_nm": config.rdf_bin_width_nm,
                         "normalisation": "box volume (periodic, minimum images)"}}
    series = {"frame": np.arange(full.n_frames), "time [ps]": times, "box_volume [nm^3]": volume,
              "density [g/cm^3]": density, f"first_shell_waters (O within {solvation.DEFAULT_SHELL_NM} nm)": shell}
    return doc, series, {"r [nm]": r, **{f"g {pair}": values for pair, values in g.items()}}


def _dihedrals(traj, times):
    angles = observables.backbone_dihedrals_deg(traj)
    if not angles["phi_residues"] and not angles["psi_residues"]:
        return None, None
    table = {"frame": np.arange(traj.n_frames), "time [ps]": times}
    for name in ("phi", "psi"):
        for k, residue in enumerate(angles[f"{name}_residues"]):
            table[f"{name} {residue} [deg]"] = angles[f"{name}_deg"][:, k]
    doc = {name: {"residues": angles[f"{name}_residues"], "atoms": angles[f"{name}_atoms"],
                  "final_deg": angles[f"{name}_deg"][-1]} for name in ("phi", "psi")}
    return doc, table


def _diagnosis(run: RunData, broken: list[dict], model_path: Path | str, reference: ReferenceData | None,
               config: AnalysisConfig, progress: bool):
    """The collapse diagnosis with the model's atom-wise errors on its training frames (when they can be had)."""
    collapsed = bool(broken) or (run.summary is not None and not run.summary.stable)
    base = {"collapsed": collapsed, "bonds": broken}
    reason = None
    if not config.evaluate_errors:
        reason = "not asked for (evaluate_errors=False)"
    elif model_path is None:
        reason = "no model: the trajectory was not written by openmlff; give --model to see its errors"
    elif reference is None:
        reason = "no reference data: give --data, or a model whose metadata names an existing training data file"
    elif isinstance(model_path, Path) and not model_path.is_file():
        reason = f"model file {model_path} not found; give --model"
    if reason is not None:
        return dict(base, evaluated=False, reason=reason), None

    from ..metrics.evaluation import evaluate_model

    evaluated_on = reference.training_dataset()
    result = evaluate_model(model_path, evaluated_on, batch_size=config.evaluation_batch_size,
                            force_unit=config.force_unit, include_frames=False, progress=progress)
    diag = diagnosis.diagnose_collapse(broken, result["atoms"], run.atomic_numbers, config.worst_atom_share)
    doc = dict(base, evaluated=True, model=model_path.name if isinstance(model_path, Potential) else str(model_path), evaluated_frames=evaluated_on.n_frames,
               frames_origin=reference.training_frames_origin,
               global_errors={k: result[k] for k in ("force_mae", "force_rmse", "force_max", "fnm_mae", "fnm_max",
                                                     "energy_mae")},
               **diag)
    records = diagnosis.atom_error_summary(result["atoms"], run.atomic_numbers, config.worst_atom_share)
    units = result["atoms"]["units"]
    columns = {"atom": "index", "element": "element", "mass [Da]": "mass_da",
               **{f"{key} [{units['force'] if key.startswith('force') else units['fnm']}]": key
                  for key in ("force_mae", "force_max", "fnm_mae", "fnm_max")},
               "fnm_mae_rank": "fnm_mae_rank", "force_mae_rank": "force_mae_rank"}
    table = {name: np.array([r[key] for r in records]) for name, key in columns.items()}
    table["in_broken_bond"] = np.isin(np.arange(len(records)), [a for b in broken for a in b["atoms"]])
    return doc, table
