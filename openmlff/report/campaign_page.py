"""The campaign report: one self-contained HTML page (inline CSS, PNG figures as base64 data URIs, no script).

Sections: notes, force metrics per model, stability per model and per start, the model-level correlation table
with bootstrap intervals (strongest metric per stability measure highlighted) and its interval plot, scatter
plots of selected metrics against stability, the conformation level (ROC AUC and rank correlations per model,
ROC curves), and the collapse diagnoses. The page of `openmlff correlate` opens with the answer (runs that held,
the best predictor with its interval, the global force MAE's rank, the first bonds to break) and folds every
table under it. It reads in any browser without openmlff; the numbers behind it are in correlation.json and the
CSV tables (openmlff.report.correlation_outputs).
"""

from __future__ import annotations

import base64
import datetime
import html
import math
from pathlib import Path

from ..core.atomic_io import atomic_write_bytes, atomic_write_text, jsonable
from ..stability.correlation import MODEL_STABILITY_MEASURES, campaign_answer, strongest_rows
from . import campaign_plots as plots

DEFAULT_SCATTER_METRICS = 4
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
tr.best td { background: #fde9d5; font-weight: 600; }
caption { caption-side: bottom; text-align: left; font-size: 0.9em; color: #555; padding-top: 0.3em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; } .meta { color: #666; font-size: 0.9em; }
ul.notes li { margin-bottom: 0.2em; } .scroll { overflow-x: auto; }
details > summary h2 { display: inline; border: none; } details { margin-top: 1.2em; }
ul.answer li { margin-bottom: 0.4em; font-size: 1.05em; }
"""


# --- formatting ---------------------------------------------------------------------------------------

def _fmt(value, digits: int = 4) -> str:
    """A number with `digits` significant digits; n/a for None/NaN; booleans as yes/no."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    return "n/a" if not math.isfinite(number) else f"{number:.{digits}g}"


def _with_interval(value, low, high, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return _fmt(value, digits)
    return f"{_fmt(value, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def _table(header: list[str], rows: list[list[str]], *, text_columns: int = 1, best: set[int] | None = None,
           caption: str | None = None) -> str:
    """An HTML table; cells are already-escaped strings; the first text_columns are left-aligned."""
    best = best or set()

    def cls(j):
        return ' class="text"' if j < text_columns else ""

    head = "".join(f"<th{cls(j)}>{h}</th>" for j, h in enumerate(header))
    best_class = ' class="best"'
    body = "\n".join(f"<tr{best_class if k in best else ''}>" + "".join(
        f"<td{cls(j)}>{c}</td>" for j, c in enumerate(row)) + "</tr>" for k, row in enumerate(rows))
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>'


def _figure(fig, alt: str, caption: str, name: str, figures_dir: Path | None) -> str:
    png = plots.figure_png(fig)
    if figures_dir is not None:
        atomic_write_bytes(figures_dir / f"{name}.png", png)
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _notes(notes) -> str:
    return '<ul class="notes">' + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>" if notes else ""


def _e(text) -> str:
    return html.escape(str(text))


# --- sections -----------------------------------------------------------------------------------------

def _metrics_section(metrics_table: dict, metric_units: dict) -> str:
    models = list(metrics_table)
    names = list(dict.fromkeys(n for m in metrics_table.values() for n in m))
    header = ["metric [unit]"] + [_e(m) for m in models]
    rows = [[_e(f"{name} [{metric_units[name]}]" if metric_units.get(name) else name)]
            + [_fmt(metrics_table[m].get(name)) for m in models] for name in names]
    return "<h2>Force metrics per model</h2>" + _table(
        header, rows, caption="Metric names: split.metric, split.Element.metric; FNM = force error / atomic mass.")


def _stability_section(stability_per_model: dict, figures_dir) -> str:
    header = ["model", "runs", "collapsed", "share stable", "median time to collapse [ps]",
              "mean time to collapse [ps]", "Kaplan-Meier median [ps]", "horizon [ps]", "first broken bonds",
              "collapse reasons"]
    rows = []
    for model, s in stability_per_model.items():
        median = _fmt(s["median_time_to_collapse_ps"])
        rows.append([_e(model), _fmt(s["n_runs"]), _fmt(s["n_collapsed"]), _fmt(s["share_stable"], 3),
                     f"&ge; {median}" if s.get("median_is_lower_bound") else median, _fmt(s["mean_time_to_collapse_ps"]),
                     _fmt(s.get("km_median_time_to_collapse_ps")), _fmt(s["horizon_ps"]),
                     _e(", ".join(f"{k}: {v}" for k, v in (s.get("first_broken_bonds") or {}).items()) or "–"),
                     _e(", ".join(f"{k}: {v}" for k, v in (s.get("collapse_reasons") or {}).items()) or "–")])
    out = "<h2>Stability per model</h2>" + _table(
        header, rows, text_columns=1,
        caption="Runs that did not collapse count with their censoring time (the horizon); '≥' marks a median "
                "that is only a lower bound (at least half the runs stable). Kaplan-Meier median: n/a while more "
                "than half survive.")
    out += _figure(plots.plot_stability_per_model(stability_per_model), "stability per model",
                   "Share of stable runs and the time of every run per model.", "stability_per_model", figures_dir)
    return out


def _survival_section(stability_per_model: dict, figures_dir) -> str:
    return "<h2>Survival curves</h2>" + _figure(
        plots.plot_survival_curves(stability_per_model), "survival curves",
        "Kaplan-Meier estimate of the share of runs without a collapse, per model, up to the horizon.",
        "survival_curves", figures_dir)


def _comparisons_section(comparisons: list[dict]) -> str:
    """Rows {method, control, share_stable (method, low, high), ..., logrank_p, better}: each method against its control."""
    header = ["method", "control", "share stable, method [95 % CI]", "share stable, control [95 % CI]",
              "Kaplan-Meier median, method [ps]", "Kaplan-Meier median, control [ps]", "log-rank p", "longer survival"]
    rows = [[_e(c["method"]), _e(c["control"]),
             _with_interval(c["method_share_stable"], *c["method_share_stable_ci"]),
             _with_interval(c["control_share_stable"], *c["control_share_stable_ci"]),
             _fmt(c["method_km_median_ps"]), _fmt(c["control_km_median_ps"]), _fmt(c["logrank_p"], 3),
             _e(c["better"])] for c in comparisons]
    return "<h2>Each method against its control</h2>" + _table(
        header, rows, text_columns=2,
        caption="Share of stable runs with its Wilson 95 % interval; Kaplan-Meier median time to collapse (n/a "
                "while more than half survive); two-sided log-rank test of the two sets of runs (scipy.stats.logrank). "
                "'longer survival' is the sign of the log-rank statistic, whatever its p.")


def _per_start_section(stability_per_start: dict, figures_dir) -> str:
    header = ["model", "start", "runs", "collapsed", "collapse rate", "mean time to collapse [ps]"]
    rows = [[_e(model), _e(start), _fmt(entry["n_runs"]), _fmt(entry.get("n_collapsed")),
             _fmt(plots.collapse_rate(entry), 3), _fmt(entry.get("mean_time_to_collapse_ps"))]
            for model, per_start in stability_per_start.items() for start, entry in per_start.items()]
    return "<h2>Stability per starting conformation</h2>" + _table(header, rows, text_columns=2) + _figure(
        plots.plot_stability_per_start(stability_per_start), "collapse rate per model and start",
        "Collapse rate within the horizon for each model (rows) and starting conformation (columns).",
        "stability_per_start", figures_dir)


def _model_level_section(table: dict, figures_dir) -> str:
    rows = table["rows"]
    best = set(strongest_rows(rows))
    header = ["metric", "unit", "stability measure", "n models", "Spearman ρ [CI]", "p (ρ)", "Kendall τ [CI]", "p (τ)"]
    body = [[_e(r["metric"]), _e(r.get("metric_unit") or ""), _e(r["stability_measure"]), _fmt(r["n"]),
             _with_interval(r["spearman_rho"], r["spearman_ci_low"], r["spearman_ci_high"]), _fmt(r["spearman_p"], 2),
             _with_interval(r["kendall_tau"], r["kendall_ci_low"], r["kendall_ci_high"]), _fmt(r["kendall_p"], 2)]
            for r in rows]
    confidence = table.get("settings", {}).get("confidence", 0.95)
    out = "<h2>Correlation of force metrics with stability (model level)</h2>" + _notes(table.get("notes"))
    out += _table(header, body, text_columns=3, best=best,
                  caption=f"[CI]: {confidence:.0%} percentile bootstrap interval. Highlighted: the metric with the "
                          "largest |ρ| for each stability measure.")
    out += _figure(plots.plot_correlation_intervals(rows, best), "Spearman rho with intervals per metric",
                   "Spearman ρ of each metric with each stability measure and its bootstrap interval "
                   "(orange: strongest). Negative ρ: larger error, less stable.", "correlation_intervals", figures_dir)
    return out


def select_scatter_data(model_metrics: dict, stability_per_model: dict, model_level: dict | None, *,
                        metric_units: dict | None = None, n_metrics: int = DEFAULT_SCATTER_METRICS,
                        baseline: str | None = None, measures=tuple(MODEL_STABILITY_MEASURES)) -> list[dict]:
    """Scatter panels (see campaign_plots.plot_scatter_panels) for the metrics with the largest |Spearman ρ| at the
    model level, plus `baseline` (default: the global force MAE, "test.force_mae" when there is one) for
    comparison; one panel per (metric, stability measure)."""
    units = metric_units or {}
    rows = (model_level or {}).get("rows", [])
    rho = {(r["metric"], r["stability_measure"]): r["spearman_rho"] for r in rows}
    strength = {}
    for (metric, _), value in rho.items():
        if value is not None and math.isfinite(value):
            strength[metric] = max(strength.get(metric, 0.0), abs(value))
    chosen = sorted(strength, key=lambda m: -strength[m])[:n_metrics]
    names = list(dict.fromkeys(n for m in model_metrics.values() for n in m))
    if baseline is None:
        global_maes = [n for n in names if n.split(".")[-1] == "force_mae" and n.count(".") <= 1]
        baseline = next((n for n in global_maes if n.startswith("test.")), global_maes[0] if global_maes else None)
    if baseline in names and baseline not in chosen:
        chosen.append(baseline)
    models = [m for m in model_metrics if m in stability_per_model]
    return [{"metric": metric, "metric_unit": units.get(metric, ""), "measure": measure,
             "measure_unit": MODEL_STABILITY_MEASURES.get(measure, ""),
             "x": [model_metrics[m].get(metric) for m in models],
             "y": [stability_per_model[m][measure] for m in models], "labels": models,
             "rho": rho.get((metric, measure))}
            for metric in chosen for measure in measures]


def _scatter_section(scatter_data: list[dict], figures_dir) -> str:
    if not scatter_data:
        return ""
    return "<h2>Metrics against stability</h2>" + _figure(
        plots.plot_scatter_panels(jsonable(scatter_data)), "scatter plots of metrics against stability",
        "Each point is a model: a force metric (x) against a stability measure (y).", "scatter", figures_dir)


def _conformation_section(conformation_level: dict, figures_dir) -> str:
    out = "<h2>Conformation level: error near the start against the fate of its runs</h2>"
    notes = next((t.get("notes") for t in conformation_level.values() if t.get("notes")), None)
    out += _notes(notes)
    for model, table in conformation_level.items():
        by_metric: dict[str, dict] = {}
        for row in table["rows"]:
            by_metric.setdefault(row["metric"], {})[row["stability_measure"]] = row
        measures = table.get("stability_measures") or []
        header = ["metric", "unit", "starts", "runs", "collapsed", "ROC AUC [CI]"] + [
            f"ρ vs {_e(m)} [CI]" for m in measures]
        body, aucs = [], []
        for metric, per_measure in by_metric.items():
            first = next(iter(per_measure.values()))
            aucs.append(first["roc_auc"])
            body.append([_e(metric), _e(first.get("metric_unit") or ""), _fmt(first["n_starts"]), _fmt(first["n_runs"]),
                         _fmt(first["n_collapsed"]),
                         _with_interval(first["roc_auc"], first["roc_auc_ci_low"], first["roc_auc_ci_high"])] + [
                _with_interval(per_measure[m]["spearman_rho"], per_measure[m]["spearman_ci_low"],
                               per_measure[m]["spearman_ci_high"]) if m in per_measure else "n/a" for m in measures])
        finite = [k for k, a in enumerate(aucs) if a is not None and math.isfinite(a)]
        best = {max(finite, key=lambda k: abs(aucs[k] - 0.5))} if finite else set()
        out += f"<h3>{_e(model)}</h3>" + _table(header, body, text_columns=2, best=best,
                                                 caption="Highlighted: the ROC AUC farthest from 0.5.")
    if any(t.get("roc_curves") for t in conformation_level.values()):
        out += _figure(plots.plot_roc_curves(conformation_level), "ROC curves of the conformation level",
                       "Predicting a collapse within the horizon from the metric of the starting conformation "
                       "(the metrics whose AUC is farthest from 0.5). Models whose runs all collapsed, or none did, "
                       "have no curve.",
                       "roc_curves", figures_dir)
    return out


def diagnosis_entry(run_id: str, summary: dict, *, model: str, start: str | None = None,
                    atom_records: list[dict] | None = None) -> dict:
    """One row of the collapse diagnoses from a run's summary.json: time, reason, first broken bond, and the
    model's errors on the bond's atoms when atom_records (openmlff.analysis.atom_error_summary: one record per
    atom with element, fnm_mae, fnm_max, fnm_mae_rank, ...) are given."""
    bond = summary.get("first_broken_bond") or None
    atoms = [atom_records[i] for i in bond["atoms"]] if bond and atom_records else []
    return {"run_id": str(run_id), "model": model, "start": start, "collapse_time_ps": summary.get("collapse_time_ps"),
            "collapse_reason": summary.get("collapse_reason"), "first_broken_bond": bond, "atom_errors": atoms}


def _bond_label(bond: dict | None) -> str:
    if not bond:
        return "–"
    (i, j), (a, b) = bond["atoms"], bond["elements"]
    return f"{a}{i}–{b}{j}"


def _diagnoses_section(diagnoses: list[dict], fnm_unit: str) -> str:
    header = ["run", "model", "start", "collapse time [ps]", "reason", "first broken bond", "deviation [Å]",
              f"FNM MAE of its atoms [{_e(fnm_unit)}] (rank by FNM MAE, 1 = worst)", "elements"]
    rows = []
    for d in diagnoses:
        bond = d.get("first_broken_bond")
        atoms = d.get("atom_errors") or []
        errors = "; ".join(f"{a['element']}{a['index']}: {_fmt(a['fnm_mae'], 3)} (rank {a['fnm_mae_rank']})"
                           for a in atoms) or "–"
        rows.append([_e(d["run_id"]), _e(d.get("model") or ""), _e(d.get("start") or ""), _fmt(d.get("collapse_time_ps")),
                     _e(d.get("collapse_reason") or ""), _bond_label(bond),
                     _fmt(bond.get("deviation_angstrom"), 3) if bond else "–", _e(errors),
                     _e("–".join(bond["elements"])) if bond else "–"])
    return "<h2>Collapse diagnoses</h2>" + _table(
        header, rows, text_columns=3,
        caption="The first bond beyond the deviation limit in each collapsed run, with the model's FNM errors on its "
                "two atoms (from its evaluation on the training data) and their rank among all atoms.")


def _answer_section(answer: dict) -> str:
    """The page's opening: how many runs held, the metric that ranks stability best, where the global test force
    MAE ranks, which bond broke first (openmlff.stability.correlation.campaign_answer)."""
    items = [f"<b>{answer['n_stable']} of {answer['n_runs']} runs held</b> to the horizon ("
             + ", ".join(f"{_e(m)} {v}" for m, v in answer["stable_per_model"].items()) + ")."]
    if answer["best"]:
        b = answer["best"][0]
        items.append(f"<b>Best predictor of the share of stable runs: {_e(b['metric'])}</b>, Spearman ρ "
                     f"{_with_interval(b['spearman_rho'], b['spearman_ci_low'], b['spearman_ci_high'])} over "
                     f"{b['n']} models (of {answer['n_metrics']} metrics; intervals overlapping means the data do "
                     "not separate the metrics).")
    else:
        items.append("No metric ranks the models: a rank correlation needs at least 3 models whose stability "
                     "differs.")
    ref = answer.get("reference")
    if ref:
        items.append(f"The global test force MAE ranks {ref['rank']} of {answer['n_metrics']}: ρ "
                     f"{_with_interval(ref['spearman_rho'], ref['spearman_ci_low'], ref['spearman_ci_high'])}.")
    if answer["first_broken_bonds"]:
        items.append("First bond to break in the collapsed runs: " + ", ".join(
            f"{_e(pair)} {count}×" for pair, count in answer["first_broken_bonds"].items()) + ".")
    return "<h2>The answer</h2><ul class=\"answer\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _folded(section: str) -> str:
    """A section whose heading opens it: <details> with the <h2> as its summary."""
    if not section.startswith("<h2>"):
        return section
    head, _, body = section.partition("</h2>")
    return f"<details><summary>{head}</h2></summary>{body}</details>"


# --- the page -----------------------------------------------------------------------------------------

def write_campaign_report(out_html, *, title: str, metrics_table: dict, stability_per_model: dict,
                          metric_units: dict | None = None, stability_per_start: dict | None = None,
                          correlation: dict | None = None, scatter_data: list[dict] | None = None,
                          diagnoses: list[dict] | None = None, notes: list[str] | None = None,
                          comparisons: list[dict] | None = None, survival: bool = False, figures_dir=None,
                          answer: dict | None = None) -> Path:
    """Write the campaign report to out_html and return its path.

    metrics_table: {model: {metric: value}}; metric_units {metric: unit} for the headers. stability_per_model:
    {model: stability_of_runs(...)}; stability_per_start: {model: {start: entry}}, entries of per_start_outcomes
    or stability_of_runs. correlation: the correlation document (see correlation_outputs). scatter_data: panels
    of campaign_plots.plot_scatter_panels (None: chosen by select_scatter_data). diagnoses: rows of
    diagnosis_entry. notes: lines shown at the top. comparisons: method-against-control rows; survival: add
    Kaplan-Meier curves. figures_dir: also write every figure there as PNG (the page never refers to it).
    answer: campaign_answer's (openmlff.stability.correlation); the page then opens with it and folds every table.
    """
    figures_dir = Path(figures_dir) if figures_dir is not None else None
    correlation = correlation or {}
    units = dict(metric_units or correlation.get("metric_units") or {})
    model_level = correlation.get("model_level")
    if scatter_data is None:
        scatter_data = select_scatter_data(metrics_table, stability_per_model, model_level, metric_units=units)
    fnm_unit = (correlation.get("units") or {}).get("fnm", "(kcal/mol/Å)/Da")
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [f"<h1>{_e(title)}</h1>",
            f'<p class="meta">Generated {generated} by openmlff. Numbers: correlation.json and the CSV tables '
            "beside this page.</p>"]
    if answer:
        head.append(_answer_section(answer))
    head.append(_notes(notes))
    parts = [_metrics_section(metrics_table, units)]
    if comparisons:
        parts.append(_comparisons_section(comparisons))
    parts.append(_stability_section(stability_per_model, figures_dir))
    if survival:
        parts.append(_survival_section(stability_per_model, figures_dir))
    if stability_per_start:
        parts.append(_per_start_section(stability_per_start, figures_dir))
    if model_level and model_level.get("rows"):
        parts.append(_model_level_section(model_level, figures_dir))
    parts.append(_scatter_section(scatter_data, figures_dir))
    if correlation.get("conformation_level"):
        parts.append(_conformation_section(correlation["conformation_level"], figures_dir))
    if diagnoses:
        parts.append(_diagnoses_section(diagnoses, fnm_unit))
    if answer:
        parts = [_folded(part) for part in parts]
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(p for p in head + parts if p)
            + "\n</body>\n</html>\n")
    return atomic_write_text(out_html, page)


def trust_notes(alarm: dict | None) -> list[str]:
    """The committee alarm of a campaign (trust_alarm) in sentences."""
    if not alarm:
        return []
    roc = alarm["roc"]
    lines = [f"Committee force spread as a predictor of collapse: ROC AUC {_fmt(roc['roc_auc'], 3)} "
             f"[{_fmt(roc['roc_auc_ci_low'], 3)}, {_fmt(roc['roc_auc_ci_high'], 3)}] over {alarm['n_runs']} runs "
             f"({alarm['n_collapsed']} collapsed), score: each run's largest spread ({alarm['unit']})."]
    if alarm["lead_times_ps"]:
        lines.append(f"Alarm lead time before the collapse: median {_fmt(alarm['median_lead_time_ps'])} ps over "
                     f"{len(alarm['lead_times_ps'])} collapsed runs that crossed the threshold; "
                     f"{_fmt(alarm['warned_before_collapse'], 3)} of the collapses were warned; "
                     f"{alarm['false_alarms']} runs without a collapse were untrusted.")
    window = alarm.get("fixed_window")
    if window and window["roc"]:
        w = window["roc"]
        lines.append(f"Without run-length bias (each run's largest spread in its first {_fmt(window['window_ps'])} ps, "
                     f"against a collapse after it): ROC AUC {_fmt(w['roc_auc'], 3)} [{_fmt(w['roc_auc_ci_low'], 3)}, "
                     f"{_fmt(w['roc_auc_ci_high'], 3)}] over {window['n_runs']} runs ({window['n_collapsed_later']} "
                     f"collapsed later; {window['n_excluded']} ended within the window and are left out).")
    if alarm["stopped_untrusted"]:
        lines.append(f"{alarm['stopped_untrusted']} runs were stopped when untrusted (no collapse, no lead time).")
    return lines


def write_correlation_report(out_html, document: dict, *, title: str, diagnoses: list[dict] | None = None,
                             notes: list[str] | None = None, figures_dir=None) -> Path:
    """write_campaign_report with everything taken from a correlation document
    (openmlff.stability.correlation.campaign_correlation): its metrics, units, stability and correlation tables;
    a "trust" entry (openmlff.stability.correlation.trust_alarm) becomes notes on the committee's alarm."""
    notes = list(notes or []) + trust_notes(document.get("trust"))
    return write_campaign_report(
        out_html, title=title, metrics_table=document.get("model_metrics") or {},
        metric_units={**(document.get("start_metric_units") or {}), **(document.get("metric_units") or {})},
        stability_per_model=document["stability_per_model"], stability_per_start=document.get("stability_per_start"),
        correlation=document, diagnoses=diagnoses, notes=notes, figures_dir=figures_dir,
        answer=campaign_answer(document, diagnoses or ()))
