"""Which force metric predicts a collapse? The correlation of a campaign's models and starts with its MD runs.

For every model of a finished (or partly finished) campaign: evaluate the model on its own
training, validation and test frames (the split recorded with the model), gather the metric sets
(global, element-wise, share of bad frames), and for every starting conformation the metrics of
its cluster, its neighbourhood and its own frame in the training data. Then relate them to the
runs' fates (openmlff.stability.correlation.campaign_correlation), write correlation.json and CSV tables,
and one self-contained HTML page with the collapse diagnoses. Runs with a committee ([trust]) add
the committee's force spread as a predictor of collapse and the alarm's lead time (trust_alarm).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..analysis.diagnosis import atom_error_summary, first_broken_hydrogens
from ..analysis.reference_data import find_reference_data, model_splits, named_training_metadata
from ..core.config import check, setting
from ..core.errors import InputError
from ..potentials import get_potential
from ..md.runner import read_run_summary
from ..md.state_table import UNCERTAINTY_COLUMN, read_state_csv
from ..stability.correlation import DEFAULT_N_BOOTSTRAP, campaign_correlation, trust_alarm
from ..metrics.evaluation import evaluate_model
from ..metrics.metric_sets import model_metric_sets, start_conformation_metrics
from ..report.campaign_page import diagnosis_entry, write_correlation_report
from ..report.correlation_outputs import write_correlation_tables
from ..core.units import FS_IN_PS
from .state import CampaignDirectory


@dataclass
class CorrelationConfig:
    """How `correlate` computes (its options): bootstrap resamples of the intervals, conformation clusters."""

    n_bootstrap: int = setting(DEFAULT_N_BOOTSTRAP, "bootstrap resamples for the intervals", aliases=("--bootstrap",))
    n_clusters: int | None = setting(None, "conformation clusters of the training frames (default: silhouette rule)")

    def __post_init__(self) -> None:
        check(self, self.n_bootstrap >= 0, "n_bootstrap", f"must be >= 0, got {self.n_bootstrap}")


def correlate_campaign(campaign_dir, out_dir=None, config: CorrelationConfig | None = None, *, data=None,
                       progress: bool = True, **settings) -> dict:
    """Correlate metrics with stability for the campaign in `campaign_dir`; returns the correlation document.

    data: the models' reference data (default: each model's recorded training file). `settings`
    (CorrelationConfig's fields) override `config`. Writes into out_dir (default CAMPAIGN/correlation):
    correlation.json, model_level.csv, conformation_level.csv, stability tables, and report.html.
    """
    cfg = CorrelationConfig(**settings) if config is None else replace(config, **settings)
    where = CampaignDirectory(campaign_dir)
    spec = where.spec()
    out = Path(out_dir) if out_dir else where.directory / "correlation"
    horizon_ps = spec.steps * spec.timestep_fs * FS_IN_PS
    several_temperatures = len(spec.temperatures_K) > 1

    runs, start_frames = [], {}
    for run in spec.expand():
        summary = read_run_summary(where.run_dir(run.run_id))
        if summary is None:
            continue
        label = f"{run.model}@{run.temperature_K:g}K" if several_temperatures else run.model
        watched = summary.max_force_uncertainty_kcal_per_mol_per_A is not None  # a run with a committee
        runs.append({"run_id": run.run_id, "model": label, "start": run.start, "summary": summary,
                     "model_file": run.model_path,
                     "spread_series": spread_series(where.run_dir(run.run_id)) if watched else None})
        if run.frame is not None:
            start_frames[run.start] = (run.data, run.frame)
    if not runs:
        raise InputError(f"{where.directory}: no finished runs yet (no summary.json); run the campaign first")

    start_positions = _start_positions(start_frames)
    evaluations, start_metrics, start_units, atom_records = {}, {}, {}, {}
    say = print if progress else (lambda *a, **k: None)
    for model, model_file in spec.models.items():
        say(f"[correlate] evaluating {model} ({model_file}) on its training, validation and test frames")
        meta = _training_metadata(model_file)
        reference = find_reference_data(meta, data)
        if reference is None:
            raise InputError(f"{model_file}: its training data file is not recorded or not found; name it in the "
                             "spec (the model's table: training = {data = ..., split = ...}) or pass data=")
        dataset = reference.dataset
        splits, _, _ = model_splits(meta, dataset)
        splits = splits or {"all": np.arange(dataset.n_frames)}
        potential = get_potential(model_file)  # once: a served model starts its environment once
        evaluations[model] = {name: evaluate_model(potential, dataset.subset(idx), include_frames=True)
                              for name, idx in splits.items() if len(idx)}
        train_name = "train" if "train" in evaluations[model] else next(iter(evaluations[model]))
        train_eval, train_idx = evaluations[model][train_name], splits[train_name]
        atom_records[model] = atom_error_summary(train_eval["atoms"], dataset.z)
        if start_positions:
            metrics, info = start_conformation_metrics(train_eval, dataset.R[train_idx], start_positions,
                                                       n_clusters=cfg.n_clusters)
            start_metrics[model] = metrics
            start_units = info["metric_units"]
    model_metrics, info = model_metric_sets(evaluations)
    if several_temperatures:  # every model@T shares the model's metrics
        model_metrics = {r["model"]: model_metrics[r["model"].split("@")[0]] for r in runs}
        start_metrics = {r["model"]: start_metrics[r["model"].split("@")[0]] for r in runs if start_metrics}

    document = campaign_correlation(runs, horizon_ps, model_metrics=model_metrics, start_metrics=start_metrics or None,
                                    metric_units=info["metric_units"], start_metric_units=start_units,
                                    units=info["units"], n_bootstrap=cfg.n_bootstrap)
    alarm = trust_alarm(runs, horizon_ps, n_bootstrap=cfg.n_bootstrap)
    if alarm is not None:
        document["trust"] = alarm
    diagnoses = [diagnosis_entry(r["run_id"], r["summary"], model=r["model"], start=r["start"],
                                 atom_records=atom_records[r["model"].split("@")[0]])
                 for r in runs if not r["summary"].get("stable", True)]
    document["first_broken_hydrogens"] = first_broken_hydrogens(diagnoses, atom_records)
    write_correlation_tables(document, out)
    write_correlation_report(out / "report.html", document, title=f"openmlff campaign {spec.name}: metrics vs stability",
                             diagnoses=diagnoses)
    return document


def _training_metadata(model) -> dict:
    """What correlate needs of a model's training: openmlff's file records it inside; a model of another code has it
    named in the spec (ModelRef.training), else it is unknown ({}: every frame of --data is used)."""
    from ..model_file.reader import load_model_file
    from ..potentials.model_ref import ModelRef

    ref = ModelRef.from_value(model)
    if ref.training is None and ref.is_file() and Path(ref.name).is_file():
        metadata = load_model_file(ref.name)[1]
        if metadata is not None:
            return metadata
    return named_training_metadata(ref.training)


def _start_positions(start_frames: dict) -> dict:
    """Start id -> positions (Å) of its frame in the campaign's start dataset (each file read once)."""
    from ..data import load_dataset

    loaded, out = {}, {}
    for start, (frames, frame) in start_frames.items():
        if frames.data not in loaded:
            loaded[frames.data] = load_dataset(frames.data, energy_unit=frames.energy_unit, length_unit=frames.length_unit)
        out[start] = loaded[frames.data].R[int(frame)]
    return out


def spread_series(run_dir: Path):
    """(time ps, the committee's largest force spread kcal/mol/Å) at each report of a run with [trust], else None."""
    path = run_dir / "state.csv"
    if not path.is_file():
        return None
    table = read_state_csv(path)
    if UNCERTAINTY_COLUMN not in table:
        return None
    return table["time_ps"], table[UNCERTAINTY_COLUMN]
