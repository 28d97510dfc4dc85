"""The campaign report: correlation JSON/CSV round trip, the self-contained HTML page and its PNG figures."""

from __future__ import annotations

import base64
import io
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from openmlff.analysis import atom_error_summary
from openmlff.metrics import ForceErrorAccumulator
from openmlff.stability.correlation import campaign_correlation, conformation_level_correlation
from openmlff.stability.runs import stability_of_runs, start_runs
from openmlff.report import read_table
from openmlff.report.campaign_page import (
    diagnosis_entry,
    select_scatter_data,
    write_campaign_report,
    write_correlation_report,
)
from openmlff.report.correlation_outputs import (
    CONFORMATION_LEVEL_COLUMNS,
    MODEL_LEVEL_COLUMNS,
    read_correlation,
    rows_as_arrays,
    write_correlation_tables,
)

HORIZON_PS = 10.0
UNITS = {"force": "kcal/mol/Å", "fnm": "(kcal/mol/Å)/Da", "energy": "kcal/mol"}
METRIC_UNITS = {"test.force_mae": UNITS["force"], "test.H.fnm_max": UNITS["fnm"], "test.energy_mae": UNITS["energy"]}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _summary(rng, rate: float) -> dict:
    t = float(rng.exponential(1.0 / rate))
    if t >= HORIZON_PS:
        return {"stable": True, "collapse_time_ps": None, "simulated_time_ps": HORIZON_PS, "first_broken_bond": None}
    return {"stable": False, "collapse_time_ps": t, "simulated_time_ps": t, "collapse_reason": "bond_deviation",
            "first_broken_bond": {"atoms": [6, 13], "elements": ["C", "H"], "reference_length_angstrom": 1.09,
                                  "length_angstrom": 1.65, "deviation_angstrom": 0.56}}


@pytest.fixture(scope="module")
def campaign():
    """A small synthetic campaign: 5 models x 4 starts x 3 runs, hydrogen FNM max driving the collapse rate."""
    rng = np.random.default_rng(0)
    hardness = {"s0": 0.2, "s1": 0.6, "s2": 1.0, "s3": 1.6}
    metrics, start_metrics, runs = {}, {}, []
    for k, u in enumerate([0.05, 0.15, 0.3, 0.5, 0.8]):
        model = f"model-{k}"
        metrics[model] = {"test.force_mae": float(rng.uniform(0.4, 1.0)), "test.H.fnm_max": float(u + 0.02 * k),
                          "test.energy_mae": float("nan") if k == 2 else float(rng.uniform(0.1, 0.2))}
        start_metrics[model] = {s: {"cluster.ratio_bad_points": h / 2, "neighbours.fnm_max": float(rng.normal())}
                                for s, h in hardness.items()}
        runs += [{"run_id": f"{model}-{start}-{seed}", "model": model, "start": start,
                  "summary": _summary(rng, u * h)} for start, h in hardness.items() for seed in range(3)]
    document = campaign_correlation(runs, HORIZON_PS, model_metrics=metrics, start_metrics=start_metrics,
                                    metric_units=METRIC_UNITS, start_metric_units={"neighbours.fnm_max": UNITS["fnm"]},
                                    units=UNITS, n_bootstrap=300)
    return {"document": document, "runs": runs, "start_metrics": start_metrics}


def test_campaign_correlation_assembles_stability_and_both_levels(campaign):
    document, runs = campaign["document"], campaign["runs"]
    assert document["n_runs"] == 60 and list(document["stability_per_model"]) == [f"model-{k}" for k in range(5)]
    model_runs = {r["run_id"]: r["summary"] for r in runs if r["model"] == "model-1"}
    assert document["stability_per_model"]["model-1"] == stability_of_runs(model_runs, HORIZON_PS)
    entries = [(r["start"], r["summary"]) for r in runs if r["model"] == "model-1"]
    expected = conformation_level_correlation(campaign["start_metrics"]["model-1"], start_runs(entries, HORIZON_PS),
                                              n_bootstrap=300)
    got = {(r["metric"], r["stability_measure"]): r for r in document["conformation_level"]["model-1"]["rows"]}
    assert len(got) == len(expected["rows"]) == 4
    for row in expected["rows"]:
        same = got[(row["metric"], row["stability_measure"])]
        assert same["roc_auc"] == row["roc_auc"] and same["spearman_ci_low"] == row["spearman_ci_low"]
    assert document["stability_per_start"]["model-1"]["s3"]["n_runs"] == 3
    assert document["model_level"]["models"] == list(document["model_metrics"])
    with pytest.raises(ValueError, match="twice"):
        campaign_correlation(runs + runs[:1], HORIZON_PS)
    with pytest.raises(ValueError, match="lacks"):
        campaign_correlation([{"model": "m", "summary": {}}], HORIZON_PS)


def test_correlation_tables_round_trip(campaign, tmp_path):
    document = campaign["document"]
    written = write_correlation_tables(document, tmp_path)
    assert set(written) == {"correlation.json", "model_level.csv", "conformation_level.csv", "stability_per_model.csv",
                            "stability_per_start.csv"}
    back = read_correlation(tmp_path)
    assert back["files"] == sorted(written)
    assert back["horizon_ps"] == HORIZON_PS and back["units"] == UNITS
    assert back["model_metrics"]["model-2"]["test.energy_mae"] is None  # NaN written as null (strict JSON)
    json.loads((tmp_path / "correlation.json").read_text())  # parses without NaN extensions
    assert "NaN" not in (tmp_path / "correlation.json").read_text()

    rows = document["model_level"]["rows"]
    csv = read_table(tmp_path / "model_level.csv")
    assert list(csv) == list(MODEL_LEVEL_COLUMNS)
    expected = rows_as_arrays(rows, MODEL_LEVEL_COLUMNS)
    for name in MODEL_LEVEL_COLUMNS:
        if expected[name].dtype.kind == "f":
            np.testing.assert_array_equal(csv[name], expected[name])  # bit-exact, NaN where NaN
        else:
            assert list(csv[name]) == list(expected[name])
    json_rows = back["model_level"]["rows"]
    assert [r["metric"] for r in json_rows] == [r["metric"] for r in rows]
    for original, restored in zip(rows, json_rows):
        for key, value in original.items():
            if isinstance(value, float) and math.isnan(value):
                assert restored[key] is None
            else:
                assert restored[key] == value

    conf = read_table(tmp_path / "conformation_level.csv")
    assert list(conf) == list(CONFORMATION_LEVEL_COLUMNS)
    all_rows = [r for table in document["conformation_level"].values() for r in table["rows"]]
    assert len(conf["model"]) == len(all_rows) == 5 * 2 * 2
    np.testing.assert_array_equal(conf["roc_auc"], rows_as_arrays(all_rows, ["roc_auc"])["roc_auc"])
    assert set(conf["model"]) == set(document["conformation_level"])
    stab = read_table(tmp_path / "stability_per_model.csv")
    np.testing.assert_allclose(stab["share_stable"], [s["share_stable"] for s in document["stability_per_model"].values()])
    assert "median_time_to_collapse [ps]" in stab
    per_start = read_table(tmp_path / "stability_per_start.csv")
    assert len(per_start["model"]) == 5 * 4
    assert per_start["collapse_rate"][7] == document["stability_per_start"]["model-1"]["s3"]["collapse_rate"]
    assert per_start["start"][7] == "s3" and per_start["model"][7] == "model-1"


class _PageParser(HTMLParser):
    """Collects the tables (as lists of rows of cell texts), the images and the tags of a page."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.tags, self.best_rows = [], [], set(), 0
        self._cell = None
        self._row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
            self.tables[-1].append(self._row)
            self.best_rows += attrs.get("class") == "best"
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _diagnoses(campaign) -> list[dict]:
    """Diagnosis rows of the collapsed runs, with atom errors from a real accumulator on a 21-atom molecule."""
    rng = np.random.default_rng(1)
    z = np.array([6] * 7 + [8] * 4 + [1] * 8 + [6, 6])  # 21 atoms, atoms 6 (C) and 13 (H) form the broken bond
    F = rng.normal(size=(4, 21, 3))
    acc = ForceErrorAccumulator(z)
    acc.add(F + rng.normal(scale=0.1, size=F.shape), F)
    records = atom_error_summary(acc.atom_metrics(), z)
    collapsed = [r for r in campaign["runs"] if not r["summary"]["stable"]][:3]
    return [diagnosis_entry(r["run_id"], r["summary"], model=r["model"], start=r["start"], atom_records=records)
            for r in collapsed]


def test_campaign_report_is_self_contained_with_tables_and_png_figures(campaign, tmp_path):
    document = campaign["document"]
    diagnoses = _diagnoses(campaign)
    assert diagnoses and diagnoses[0]["atom_errors"][1]["element"] == "H"
    path = write_correlation_report(tmp_path / "report.html", document, title="Aspirin <campaign>",
                                    diagnoses=diagnoses, notes=["synthetic campaign for the test"],
                                    figures_dir=tmp_path / "figures")
    text = path.read_text(encoding="utf-8")
    parser = _PageParser()
    parser.feed(text)
    assert "script" not in parser.tags and "<title>Aspirin &lt;campaign&gt;</title>" in text
    assert "http://" not in text and "https://" not in text  # nothing loaded from elsewhere

    headers = [t[0] for t in parser.tables]
    # metrics, stability per model, per start, model-level correlation, 5 conformation tables, diagnoses
    assert len(parser.tables) == 1 + 1 + 1 + 1 + 5 + 1
    metrics_table = parser.tables[0]
    assert headers[0][0] == "metric [unit]" and headers[0][1:] == list(document["model_metrics"])
    assert [row[0] for row in metrics_table[1:]] == [f"{m} [{u}]" for m, u in METRIC_UNITS.items()]
    assert metrics_table[3][3] == "n/a"  # model-2 has no energy MAE
    assert "median time to collapse [ps]" in headers[1]
    correlation = next(t for t in parser.tables if t[0][:1] == ["metric"] and "Spearman ρ [CI]" in t[0])
    assert len(correlation) - 1 == len(document["model_level"]["rows"])
    fnm_row = next(r for r in correlation[1:] if r[0] == "test.H.fnm_max" and r[2] == "share_stable")
    rho = document["model_level"]["rows"][2]
    assert fnm_row[4].startswith(f"{rho['spearman_rho']:.3g} [")
    with_auc = sum(any(math.isfinite(r["roc_auc"]) for r in t["rows"]) for t in document["conformation_level"].values())
    assert 0 < with_auc <= 5
    assert parser.best_rows == 2 + with_auc  # strongest metric per measure + best AUC of each model that has one
    diag = parser.tables[-1]
    assert diag[0][0] == "run" and diag[1][5] == "C6–H13" and "H13:" in diag[1][7]

    assert len(parser.images) == 5  # stability per model and per start, intervals, scatter, ROC curves
    for image in parser.images:
        src = image["src"]
        assert src.startswith("data:image/png;base64,") and image.get("alt")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == PNG_SIGNATURE
        with Image.open(io.BytesIO(png)) as img:
            img.verify()
        with Image.open(io.BytesIO(png)) as img:
            assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 150
    saved = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert saved == ["correlation_intervals.png", "roc_curves.png", "scatter.png", "stability_per_model.png",
                     "stability_per_start.png"]


def test_report_without_optional_sections(campaign, tmp_path):
    document = campaign["document"]
    path = write_campaign_report(tmp_path / "small.html", title="Stability only",
                                 metrics_table=document["model_metrics"],
                                 stability_per_model=document["stability_per_model"], scatter_data=[])
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    assert len(parser.tables) == 2 and len(parser.images) == 1
    assert "Collapse diagnoses" not in path.read_text(encoding="utf-8")


def test_report_with_comparisons_and_survival_curves(campaign, tmp_path):
    from openmlff.stability.runs import compare_stability, share_stable_interval

    stability = campaign["document"]["stability_per_model"]
    method, control = list(stability)[:2]
    row = {"method": method, "control": control, **compare_stability(stability[method], stability[control]),
           "method_share_stable": stability[method]["share_stable"],
           "method_share_stable_ci": share_stable_interval(stability[method]["n_stable"], stability[method]["n_runs"]),
           "control_share_stable": stability[control]["share_stable"],
           "control_share_stable_ci": share_stable_interval(stability[control]["n_stable"], stability[control]["n_runs"]),
           "method_km_median_ps": stability[method]["km_median_time_to_collapse_ps"],
           "control_km_median_ps": stability[control]["km_median_time_to_collapse_ps"]}
    path = write_campaign_report(tmp_path / "arms.html", title="Arms", metrics_table=campaign["document"]["model_metrics"],
                                 stability_per_model=stability, scatter_data=[], comparisons=[row], survival=True,
                                 figures_dir=tmp_path / "figures")
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    table = next(t for t in parser.tables if t[0][:2] == ["method", "control"])
    assert table[1][:2] == [method, control] and table[1][6] == f"{row['logrank_p']:.3g}"
    assert table[1][2].startswith(f"{row['method_share_stable']:.3g} [")
    assert len(parser.images) == 2 and (tmp_path / "figures" / "survival_curves.png").is_file()


def test_scatter_selection_takes_the_strongest_metrics_and_the_force_mae(campaign):
    document = campaign["document"]
    panels = select_scatter_data(document["model_metrics"], document["stability_per_model"], document["model_level"],
                                 metric_units=METRIC_UNITS, n_metrics=1)
    metrics = list(dict.fromkeys(p["metric"] for p in panels))
    assert metrics == ["test.H.fnm_max", "test.force_mae"]
    assert {p["measure"] for p in panels} == {"share_stable", "median_time_to_collapse_ps"}
    first = panels[0]
    assert first["labels"] == list(document["model_metrics"]) and first["metric_unit"] == UNITS["fnm"]
    assert first["y"] == [s[first["measure"]] for s in document["stability_per_model"].values()]
