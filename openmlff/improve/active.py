"""Active learning: a committee runs MD, the conformations it is least sure of get reference labels, it learns them.

Round 0 trains a committee of K models on the data (training.trainer.train_committee: one split, seeds
seed..seed+K-1). Every round r then
  1. exports the committee and runs a stability campaign from `starts` held-out (test split) conformations,
     driven by the committee mean or, with drive "member", by member 0 alone (a K-th of the cost per step),
     with the committee's force spread at every report either way (campaign [trust], md/trust.py);
  2. collects candidates: every reported frame of every run before its collapse, with its largest spread;
  3. selects `frames_per_round`: the 4x as many most uncertain candidates, thinned by farthest-point sampling
     in the inverse-distance descriptor (metrics.conformations) from the most uncertain, so that
     near-duplicates (neighbouring frames of one run) are not labelled twice;
  4. labels them with the reference method (reference.label_conformations: resumable, one frame per chunk so
     that every worker has work when a frame takes minutes, as DFT does; failed frames are left out, counted);
  5. continues each member on its data plus the new labels (training.start.continue_start): round r + 1's
     committee (`training_workers` members at a time, one thread each).
The loop stops after `rounds` labelling rounds (the last committee is still measured), when the wall-clock
budget is spent, or when the share of stable runs did not rise over the previous round
(`stop_when_not_improving`). Each step's output is a file or folder of DIR/round_<r>/, reused when it exists,
so a killed loop resumes where it was; rounds.json records every round: frames added, the labels' cost, the
committee's held-out force metrics and uncertainty ranking, stability. Labels must be at the data's level of
theory (the method is recorded beside the data's; another is refused unless `allow_other_level`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.atomic_io import atomic_write_json, atomic_write_stream
from ..data.dataset import Dataset
from ..core.config import check_finite, setting
from ..core.errors import InputError, StateError
from ..training.config import TrainingConfig
from ..core.units import NM_IN_ANGSTROM

ROUNDS_FILE = "rounds.json"


@dataclass
class ActiveLearningConfig:
    """Settings of the loop (module docstring); `training` is round 0's TrainingConfig."""

    method: str = setting("gfn2-xtb", "reference method: dft, dft:FUNCTIONAL/BASIS, gfn2-xtb or ase:MODULE:CLASS; "
                                      "new labels must be at the data's level of theory")
    rounds: int = setting(2, "labelling rounds (the last committee is measured too)")
    committee_size: int = setting(3, "models in the committee")
    training: TrainingConfig = field(default_factory=TrainingConfig)
    continue_epochs: int = setting(30, "epochs of each member's continued training")
    continue_learning_rate: float = setting(2.5e-4, "learning rate of the continued training")
    starts: int = setting(8, "held-out starting conformations per campaign")
    seeds: tuple[int, ...] = field(default=(0,))
    temperature_K: float = setting(500.0, "temperature of the committee MD in K",
                                   aliases=("--md-temperature-K", "--md-temperature"))
    md_steps: int = setting(4000, "MD steps per run")
    timestep_fs: float = setting(0.5, "MD timestep in fs")
    report_interval_steps: int = setting(50, "MD steps between reports (where the spread is evaluated)")
    frames_per_round: int = setting(20, "frames labelled per round")
    threshold_kcal_per_mol_per_A: float | None = setting(None, "untrusted force spread in kcal/mol/Å (recorded)",
                                                         aliases=("--threshold",))
    budget_s: float | None = setting(None, "wall-clock budget of the whole loop in s", aliases=("--budget",))
    stop_when_not_improving: bool = setting(True, "stop when the share of stable runs stops rising")
    label_workers: int = setting(2, "processes labelling frames")
    md_workers: int = setting(2, "MD runs at a time")
    allow_other_level: bool = setting(False, "label with a method other than the data's level of theory (mixing "
                                             "levels: at your risk)")
    drive: str = setting("mean", "what drives the MD: the committee mean or member 0 alone (1/K of the cost per "
                                 "step); the spread is evaluated at each report either way")
    training_workers: int = setting(1, "members trained this many at a time, one process of one thread each")

    #: Fields added after loops were first recorded, with the value that reproduces what those did.
    ADDED_FIELDS = {"drive": "mean", "training_workers": 1}

    def __post_init__(self) -> None:
        check_finite(self)
        if self.rounds < 0:
            raise InputError(f"active learning: rounds must be >= 0 (0: the first committee alone), got {self.rounds}")
        for name in ("committee_size", "starts", "md_steps", "frames_per_round", "continue_epochs"):
            if getattr(self, name) < 1:
                raise InputError(f"active learning: {name} must be a positive integer, got {getattr(self, name)}")
        if self.drive not in ("mean", "member"):
            raise InputError(f"active learning: drive must be 'mean' or 'member', got {self.drive!r}")
        if self.training_workers < 1:
            raise InputError(f"active learning: training_workers must be positive, got {self.training_workers}")
        if self.committee_size < 2:
            raise InputError(f"active learning needs a committee of at least 2 models, got {self.committee_size}")


def active_learn(dataset: Dataset, out_dir, config: ActiveLearningConfig, progress: bool = True) -> dict:
    """Run (or resume) the loop in out_dir; returns the rounds.json document."""
    from ..reference import get_reference_method

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    method = get_reference_method(config.method)
    data_level = dataset.provenance.get("level_of_theory")
    if not config.allow_other_level and data_level and not _same_level(data_level, method):
        raise InputError(f"{dataset.source}: its labels are {data_level!r}, {config.method} gives "
                         f"{method.level_of_theory!r}; labels of two levels of theory cannot be mixed (choose the "
                         "data's method, or allow_other_level)")
    document = _read_rounds(out, config)
    t0 = time.perf_counter() - document.get("wall_time_s", 0.0)
    say = print if progress else (lambda *a, **k: None)
    members = _round_zero(dataset, out, config, progress)
    for r in range(config.rounds + 1):
        entry = next((e for e in document["rounds"] if e["round"] == r), None)
        if entry is None or "stability" not in entry:
            say(f"[active-learn] round {r}: campaign of the committee of {len(members)}")
            entry = measure_committee(r, members, dataset, out, config, progress)
            _store(document, entry, out, t0)
        if r == config.rounds:
            document["stop_reason"] = f"{config.rounds} labelling rounds done"
            break
        if _stop_early(document, r, config, t0):
            break
        if "labelled_frames" not in entry:
            say(f"[active-learn] round {r}: selecting and labelling {config.frames_per_round} frames with {config.method}")
            entry.update(_select_and_label(r, dataset, out, config, progress))
            _store(document, entry, out, t0)
        members = continue_committee(r + 1, members, out, config, progress)
    _store(document, None, out, t0)
    return document


# --- the steps ------------------------------------------------------------------------------------

def _round_zero(dataset, out: Path, config: ActiveLearningConfig, progress: bool) -> list[Path]:
    from ..training.trainer import train_committee

    results = train_committee(dataset, out / "round_0" / "members", config.committee_size, config.training,
                              progress=progress, workers=config.training_workers)
    return [r.checkpoint for r in results]


def continue_committee(r: int, members: list[Path], out: Path, config: ActiveLearningConfig,
                       progress: bool = True) -> list[Path]:
    """Round r's members (OUT/round_<r>/members): each of round r-1's continued on its own data plus the frames
    of OUT/round_<r-1>/labelled.npz, `continue_epochs` at `continue_learning_rate`. A protocol's control arm
    (random pool frames instead of uncertain ones) uses it with its own OUT and labelled files."""
    from ..data import load_dataset
    from ..training.checkpoint import read_checkpoint
    from ..training.start import continue_start
    from ..training.trainer import train_side_by_side

    added = load_dataset(out / f"round_{r - 1}" / "labelled.npz")
    jobs = []
    for k, ckpt in enumerate(members):
        parent = read_checkpoint(ckpt)
        data = load_dataset(parent.data_source)
        folder = out / f"round_{r}" / "members" / f"member_{k}"
        combined, start = continue_start(parent, data, added, folder)
        cfg = replace(TrainingConfig.from_dict(parent.config), max_epochs=config.continue_epochs, time_budget_s=None,
                      learning_rate=config.continue_learning_rate, warmup_steps=0,
                      early_stopping_patience_epochs=10_000)
        jobs.append((combined, folder, cfg, start))
    return [r.checkpoint for r in train_side_by_side(jobs, config.training_workers, progress=progress)]


def measure_committee(r: int, members: list[Path], dataset: Dataset, out: Path, config: ActiveLearningConfig,
                      progress: bool = True) -> dict:
    """Export the committee to OUT/round_<r>/, run its campaign there (driven as `config.drive` says) and measure
    it: held-out metrics of the committee mean, uncertainty ranking, stability; the round's record."""
    from ..campaign import CampaignDirectory, run_campaign
    from ..model_file.writer import export_checkpoint, export_committee
    from ..md import read_run_summary
    from ..metrics.evaluation import evaluate_model
    from ..stability.runs import share_stable_interval, stability_of_runs
    from ..metrics.uncertainty import uncertainty_report
    from ..training.checkpoint import read_checkpoint

    folder = out / f"round_{r}"
    committee = folder / "committee.pt"
    if not committee.exists():
        export_committee(members, committee)
    first = read_checkpoint(members[0])
    split = first.split
    test = dataset.subset(split.test)
    starts = sorted(int(f) for f in np.random.default_rng(0).choice(split.test, size=min(config.starts, split.test.size),
                                                                     replace=False))
    driver = {"committee": committee}
    if config.drive == "member":
        driver = {"member_0": folder / "member_0.pt"}
        if not driver["member_0"].exists():
            export_checkpoint(members[0], driver["member_0"])
    spec = {"name": f"round_{r}", "models": {name: str(path.resolve()) for name, path in driver.items()},
            "starts": {"data": str(Path(dataset.source).resolve()), "frames": starts},
            "seeds": list(config.seeds), "temperatures_K": [config.temperature_K],
            "md": {"steps": config.md_steps, "timestep_fs": config.timestep_fs,
                   "report_interval_steps": config.report_interval_steps, "checkpoint_interval_steps": 1000},
            "trust": {"committee": str(committee.resolve()),
                      "threshold_kcal_per_mol_per_A": config.threshold_kcal_per_mol_per_A}}
    spec_path = folder / "campaign.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    t0 = time.perf_counter()
    run_campaign(spec_path, out=folder / "campaign", n_workers=config.md_workers, retry_failed=True, progress=progress)
    md_wall = time.perf_counter() - t0
    where = CampaignDirectory(folder / "campaign")
    summaries = {run.run_id: read_run_summary(where.run_dir(run.run_id)) for run in where.spec().expand()}
    horizon = config.md_steps * config.timestep_fs * 1e-3
    stability = stability_of_runs({k: v for k, v in summaries.items() if v is not None}, horizon)
    stability["share_stable_ci95"] = list(share_stable_interval(stability["n_stable"], stability["n_runs"]))
    held_out = evaluate_model(committee, test, include_frames=False)
    unc = uncertainty_report(committee, test)
    return {"round": r, "committee": str(committee), "md_driven_by": next(iter(driver)),
            "training_frames": len(first.state["split"]["train"]),
            "training_wall_s": round(sum(read_checkpoint(m).state["elapsed_s"] for m in members), 1),
            "md_wall_s": round(md_wall, 1),
            "held_out": {"frames": test.n_frames, "force_mae": held_out["force_mae"], "force_max": held_out["force_max"],
                         "H_fnm_mae": held_out["elements"].get("H", {}).get("fnm_mae"),
                         "energy_mae": held_out["energy_mae"], "units": held_out["units"],
                         "uncertainty_spearman": unc["spearman"]},
            "stability": {k: v for k, v in stability.items() if k != "run_ids"}}


def candidate_frames(campaign_dir) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(positions (n, n_atoms, 3) Å, largest force spread (n,) kcal/mol/Å, "run_id@step" labels) of every reported
    frame of a campaign with a committee that came before its run's collapse."""
    import mdtraj

    from ..campaign import CampaignDirectory
    from ..md.rundir import RunDirectory
    from ..md.state_table import UNCERTAINTY_COLUMN, read_state_csv

    where = CampaignDirectory(campaign_dir)
    positions, sigma, labels = [], [], []
    for run in where.spec().expand():
        run_dir = RunDirectory(where.run_dir(run.run_id))
        summary = run_dir.read_summary()
        if summary is None:
            continue
        table = read_state_csv(run_dir.state_csv)
        if UNCERTAINTY_COLUMN not in table:
            raise StateError(f"{run_dir.state_csv}: no column {UNCERTAINTY_COLUMN}; the campaign ran without a committee")
        traj = mdtraj.load(str(run_dir.directory / summary.trajectory), top=str(run_dir.topology_pdb))
        n = min(traj.n_frames, len(table["step"]))
        keep = np.arange(n)
        if summary.collapsed:
            keep = keep[table["step"][:n] < summary.collapse_step]
        positions.append(traj.xyz[keep] * NM_IN_ANGSTROM)
        sigma.append(table[UNCERTAINTY_COLUMN][keep])
        labels += [f"{run.run_id}@{int(s)}" for s in table["step"][keep]]
    if not positions:
        return np.empty((0, 0, 3)), np.empty(0), []
    return np.concatenate(positions).astype(np.float64), np.concatenate(sigma), labels


def select_frames(positions, sigma, count: int, pool_factor: int = 4) -> np.ndarray:
    """Indices of `count` frames: the pool_factor x count most uncertain, thinned by farthest-point sampling
    in the inverse-distance descriptor, starting from the most uncertain (module docstring)."""
    from ..metrics.conformations import conformation_descriptor

    order = np.argsort(-np.asarray(sigma), kind="stable")[:max(count, pool_factor * count)]
    if order.size <= count:
        return order
    X = conformation_descriptor(np.asarray(positions)[order])
    chosen = [0]
    distance = np.linalg.norm(X - X[0], axis=1)
    while len(chosen) < count:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(X - X[nxt], axis=1))
    return order[np.asarray(chosen)]


def _select_and_label(r: int, dataset: Dataset, out: Path, config: ActiveLearningConfig, progress: bool) -> dict:
    from ..data import save_dataset
    from ..reference import label_conformations

    folder = out / f"round_{r}"
    selected_path = folder / "selected.npz"
    if not selected_path.exists():
        R, sigma, labels = candidate_frames(folder / "campaign")
        if not len(sigma):
            raise StateError(f"{folder / 'campaign'}: no frame before a collapse to label")
        pick = select_frames(R, sigma, config.frames_per_round)
        arrays = {"positions_angstrom": R[pick], "force_uncertainty_kcal_per_mol_per_A": sigma[pick],
                  "labels": np.asarray([labels[i] for i in pick]), "n_candidates": np.asarray(len(sigma))}
        atomic_write_stream(selected_path, lambda fh: np.savez(fh, **arrays))
    with np.load(selected_path) as sel:
        R, sigma, n_candidates = sel["positions_angstrom"], sel["force_uncertainty_kcal_per_mol_per_A"], int(sel["n_candidates"])
    t0 = time.perf_counter()
    result = label_conformations(config.method, dataset.z, R, folder / "labels", chunk_size=1,
                                 n_workers=config.label_workers, progress=progress, name=f"{dataset.name}_round_{r}")
    label_wall = time.perf_counter() - t0
    if result.dataset is None:
        raise StateError(f"{folder}: every selected frame failed with {config.method}; nothing to add")
    save_dataset(result.dataset, folder / "labelled.npz")
    return {"candidates": n_candidates, "selected": int(len(sigma)), "labelled_frames": result.n_labelled,
            "label_failures": result.n_failed, "label_wall_s": round(label_wall, 1),
            "label_chunks_computed": result.chunks_computed,
            "selected_uncertainty_mean_kcal_per_mol_per_A": float(np.mean(sigma))}


# --- bookkeeping ----------------------------------------------------------------------------------

def _same_level(data_level: str, method) -> bool:
    """Whether the method's level of theory is the data's (functional/basis or xTB flavour, case-insensitive)."""
    a, b = data_level.lower(), method.level_of_theory.lower()
    return a.split(" (")[0].split(",")[0].strip() == b.split(" (")[0].split(",")[0].strip()


def _read_rounds(out: Path, config: ActiveLearningConfig) -> dict:
    path = out / ROUNDS_FILE
    settings = json.loads(json.dumps(asdict(config), default=str))
    if path.is_file():
        document = json.loads(path.read_text())
        from ..core.resume import check_resumable

        document["settings"] = {**ActiveLearningConfig.ADDED_FIELDS, **document["settings"]}
        check_resumable(document["settings"], settings, where=str(path), job="active-learning loop",
                        may_change=("rounds", "budget_s", "label_workers", "md_workers", "stop_when_not_improving",
                                    "training.torch_threads", "training_workers"), may_grow=())
        document["settings"] = settings
        return document
    return {"settings": settings, "rounds": [], "wall_time_s": 0.0}


def _store(document: dict, entry: dict | None, out: Path, t0: float) -> None:
    if entry is not None:
        document["rounds"] = [e for e in document["rounds"] if e["round"] != entry["round"]] + [entry]
        document["rounds"].sort(key=lambda e: e["round"])
    document["wall_time_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / ROUNDS_FILE, document)


def _stop_early(document: dict, r: int, config: ActiveLearningConfig, t0: float) -> bool:
    if config.budget_s is not None and time.perf_counter() - t0 >= config.budget_s:
        document["stop_reason"] = f"budget of {config.budget_s:g} s spent after round {r}"
        return True
    if config.stop_when_not_improving and r >= 1:
        shares = {e["round"]: e["stability"]["share_stable"] for e in document["rounds"] if "stability" in e}
        if shares.get(r, 0.0) <= shares.get(r - 1, 0.0):
            document["stop_reason"] = (f"stability did not improve in round {r} (share stable {shares[r]:.2f}, "
                                       f"round {r - 1}: {shares[r - 1]:.2f})")
            return True
    return False


def write_active_learning_report(document: dict, out_html) -> Path:
    """One HTML page of the loop (the campaign report): per round the committee's held-out metrics and
    uncertainty ranking, the frames added and their cost, the stability of its runs and their survival curves."""
    from ..report.campaign_page import write_campaign_report

    rounds = [e for e in document["rounds"] if "stability" in e]
    if not rounds:
        raise StateError("no round has been measured yet")
    units = rounds[0]["held_out"]["units"]
    metrics = {f"round_{e['round']}": {
        "training frames": e["training_frames"], "test.force_mae": e["held_out"]["force_mae"],
        "test.force_max": e["held_out"]["force_max"], "test.H.fnm_mae": e["held_out"]["H_fnm_mae"],
        "test.energy_mae": e["held_out"]["energy_mae"],
        "uncertainty-error Spearman (frames)": e["held_out"]["uncertainty_spearman"]["frame_mean_uncertainty_vs_force_mae"],
        "frames labelled after the round": e.get("labelled_frames"), "labelling wall time": e.get("label_wall_s"),
        "committee training wall time": e["training_wall_s"], "campaign wall time": e["md_wall_s"]} for e in rounds}
    metric_units = {"test.force_mae": units["force"], "test.force_max": units["force"], "test.H.fnm_mae": units["fnm"],
                    "test.energy_mae": units["energy"], "labelling wall time": "s",
                    "committee training wall time": "s (all members)", "campaign wall time": "s"}
    s = document["settings"]
    notes = [f"Active learning with {s['method']} labels: committees of {s['committee_size']}, "
             f"{s['frames_per_round']} frames per round, campaigns of {s['starts']} held-out starts x "
             f"{len(s['seeds'])} seeds, {s['md_steps']} steps of {s['timestep_fs']} fs at {s['temperature_K']} K.",
             f"Stopped: {document.get('stop_reason', 'not finished')}; wall time {document.get('wall_time_s', 0):.0f} s."]
    return write_campaign_report(out_html, title="openmlff active learning", metrics_table=metrics,
                                 metric_units=metric_units,
                                 stability_per_model={f"round_{e['round']}": e["stability"] for e in rounds},
                                 survival=True, scatter_data=[], notes=notes)
