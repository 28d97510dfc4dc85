"""`openmlff metrics` outputs: JSON with conformation clusters, CSV tables with units, PNG figures; the error
for a dataset of other atoms; and evaluation in bounded memory (predictions streamed batch by batch, only
per-frame scalars kept)."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from openmlff.cli import main as cli_main
from openmlff.data import Dataset, load_dataset
from openmlff.model_file.writer import ModelFileError
from openmlff.metrics import ForceErrorAccumulator
from openmlff.metrics.evaluation import evaluate_model, predict_batches
from openmlff.metrics.report import metrics_report
from openmlff.report import PLOT_NAMES, TABLE_NAMES, read_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from untrained_model import write_untrained_et  # noqa: E402

FORCE = "kcal/mol/Å"
FNM = "(kcal/mol/Å)/Da"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_path(test_data) -> Path:
    return test_data / "datasets" / "rmd17_aspirin_100.npz"


@pytest.fixture(scope="module")
def model(tmp_path_factory, data_path) -> Path:
    return write_untrained_et(tmp_path_factory.mktemp("model") / "et.pt", load_dataset(data_path))


def run_metrics(*args) -> int:
    return cli_main(["metrics", *map(str, args)])


def test_metrics_adds_bond_scans_of_the_first_frames(model, data_path, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert run_metrics("--model", model, "--data", data_path, "--out", out, "--frames", "20:60",
                       "--bond-scan-starts", 2) == 0, capsys.readouterr().err
    scan = json.loads(out.read_text())["bond_scan"]
    assert scan["dataset_frames"] == [20, 21] and len(scan["scans"]) == 2 * 21
    assert {s["start"] for s in scan["scans"]} == {0, 1}
    assert set(scan["summary"]) == {"wrong_sign_share", "spurious_minimum_share", "H.wrong_sign_share",
                                    "H.spurious_minimum_share"}
    assert "bond scans (42): force pushing the bond away in" in capsys.readouterr().out
    assert run_metrics("--model", model, "--data", data_path, "--out", out, "--bond-scan-starts", -1) != 0
    assert "bond_scan_starts" in capsys.readouterr().err


def test_metrics_writes_clusters_tables_and_plots(model, data_path, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert run_metrics("--model", model, "--data", data_path, "--out", out, "--frames", "20:60", "--n-clusters", 3,
                       "--csv-dir", tmp_path / "tables", "--plots", tmp_path / "plots") == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    clusters = report["clusters"]
    assert clusters["info"]["n_clusters"] == 3 and clusters["info"]["rule"] == "given"
    assert sum(clusters["info"]["cluster_sizes"]) == 40 == report["global"]["n_frames"]
    assert sorted(set(report["frames"]["cluster"])) == [0, 1, 2]
    assert report["frames"]["dataset_frame"] == list(range(20, 60))

    tables = {name: read_table(tmp_path / "tables" / name) for name in TABLE_NAMES}
    elements = tables["elements.csv"]
    assert elements["element"].tolist() == ["H", "C", "O"] and elements["n_atoms"].tolist() == [8, 9, 4]
    for column in (f"force_mae [{FORCE}]", f"force_rmse [{FORCE}]", f"force_max [{FORCE}]", f"fnm_mae [{FNM}]",
                   f"fnm_rmse [{FNM}]", f"fnm_max [{FNM}]"):
        assert column in elements and column in tables["atoms.csv"] and column in tables["frames.csv"]
    assert elements[f"fnm_max [{FNM}]"].tolist() == [report["elements"][s]["fnm_max"] for s in ("H", "C", "O")]
    assert tables["atoms.csv"]["atom"].tolist() == list(range(21))

    frames = tables["frames.csv"]
    assert frames[f"force_mae [{FORCE}]"].tolist() == report["frames"]["force_mae"]
    assert "energy_error [kcal/mol]" in frames and frames["dataset_frame"].tolist() == list(range(20, 60))
    # Per-cluster MAE and ratio of bad points, recomputed from the frame table by hand.
    per_cluster = tables["clusters.csv"]
    global_mae = report["global"]["force_mae"]
    for row, cluster in enumerate(per_cluster["cluster"].astype(int)):
        members = frames["cluster"] == cluster
        mae = frames[f"force_mae [{FORCE}]"][members]
        assert per_cluster["n_frames"][row] == members.sum()
        assert per_cluster[f"force_mae [{FORCE}]"][row] == pytest.approx(mae.mean())
        assert per_cluster["ratio_bad_points"][row] == pytest.approx(np.mean(mae > global_mae))
        assert per_cluster[f"fnm_max [{FNM}]"][row] == pytest.approx(frames[f"fnm_max [{FNM}]"][members].max())
    assert per_cluster[f"global_force_mae [{FORCE}]"] == pytest.approx([global_mae] * 3)

    for name in PLOT_NAMES:
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == PNG_SIGNATURE and len(png) > 10_000, name


def test_default_table_folder_and_cluster_rule(model, data_path, tmp_path):
    out = tmp_path / "run1" / "metrics.json"
    assert run_metrics("--model", model, "--data", data_path, "--out", out, "--frames", ":30") == 0
    assert sorted(p.name for p in (tmp_path / "run1" / "metrics_csv").iterdir()) == sorted(TABLE_NAMES)
    info = json.loads(out.read_text())["clusters"]["info"]
    assert "silhouette" in info["rule"]
    assert info["n_clusters"] == info["k_candidates"][int(np.argmax(info["silhouette"]))]
    assert not (tmp_path / "run1" / "element_errors.png").exists()  # figures only with --plots


def _without_timings(report: dict) -> dict:
    return {**report, "evaluation": {k: v for k, v in report["evaluation"].items() if k == "batch_size"}}


def test_metrics_report_writes_the_schema_of_openmlff_metrics(model, data_path, tmp_path):
    """The one metrics report (also the quick start's metrics_test.json) is what `openmlff metrics` writes."""
    out = tmp_path / "m.json"
    assert run_metrics("--model", model, "--data", data_path, "--out", out, "--frames", "20:60", "--n-clusters", 3,
                       "--cluster-seed", 2) == 0
    written = json.loads(out.read_text())
    frames = np.arange(20, 60)
    report = metrics_report(model, load_dataset(data_path).subset(frames), frames_label="20:60", dataset_frames=frames,
                            n_clusters=3, cluster_seed=2)
    assert list(report) == list(written) and list(report["frames"]) == list(written["frames"])
    assert json.loads(json.dumps(_without_timings(report))) == _without_timings(written)
    with pytest.raises(ValueError, match="one per frame"):
        metrics_report(model, load_dataset(data_path).subset(frames), dataset_frames=frames[:5])


def test_dataset_of_other_atoms_is_refused_naming_both_files(model, test_data, capsys):
    other = test_data / "datasets" / "md22_Ac-Ala3-NHMe_5.npz"
    with pytest.raises(ModelFileError, match=r"et\.pt: the model's atomic numbers") as error:
        evaluate_model(model, load_dataset(other))
    assert "md22_Ac-Ala3-NHMe_5.npz" in str(error.value)
    assert run_metrics("--model", model, "--data", other, "--out", "x.json") == 1
    err = capsys.readouterr().err
    assert "et.pt" in err and "md22_Ac-Ala3-NHMe_5.npz" in err


# --- bounded memory ------------------------------------------------------------------------------------

def _retained_bytes_per_frame(n_frames: int, n_atoms: int, batch: int = 500) -> float:
    """Memory the accumulator holds after n_frames (tracemalloc), per frame."""
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        acc = ForceErrorAccumulator(np.full(n_atoms, 6))
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n_frames // batch):
            F_ref = rng.normal(size=(batch, n_atoms, 3))
            acc.add(F_ref + 0.1, F_ref, E_pred=np.zeros(batch), E_ref=np.ones(batch))
            del F_ref
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert acc.n_frames == n_frames
    return retained / n_frames


def test_accumulator_keeps_only_per_frame_scalars():
    # A frame of predicted forces of 100 atoms is 2400 bytes; the accumulator keeps 7 floats per frame
    # (force/FNM MAE, RMSE, max and the energy error: 56 bytes) whether it saw 2 000 or 20 000 frames.
    prediction_bytes = 100 * 3 * 8
    small, large = _retained_bytes_per_frame(2_000, 100), _retained_bytes_per_frame(20_000, 100)
    assert 56 <= small < 80 and 56 <= large < 80
    assert large < prediction_bytes / 20


def _repeated(dataset: Dataset, n_frames: int) -> Dataset:
    idx = np.arange(n_frames) % dataset.n_frames
    return Dataset(z=dataset.z, R=dataset.R[idx], E=dataset.E[idx], F=dataset.F[idx], name="repeated frames")


def test_predictions_are_streamed_batch_by_batch(model, data_path):
    # Peak memory of going through all predictions does not grow with the number of frames: 200 and 800
    # frames (predicted forces of 100 and 400 kB) peak at the same size, that of one batch.
    base = load_dataset(data_path)
    peaks = {}
    for n in (200, 800):
        dataset = _repeated(base, n)
        tracemalloc.start()
        try:
            frames = sum(len(idx) for idx, _, _ in predict_batches(model, dataset, batch_size=50))
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert frames == n
    all_predictions_800 = 800 * base.n_atoms * 3 * 8
    assert peaks[800] - peaks[200] < 0.1 * all_predictions_800
    # evaluate_model gives the same metrics whatever the batch size (to float32 rounding: the model is float32).
    one = evaluate_model(model, _repeated(base, 60), batch_size=7, include_frames=False)
    other = evaluate_model(model, _repeated(base, 60), batch_size=60, include_frames=False)
    assert one["force_mae"] == pytest.approx(other["force_mae"], rel=1e-6)
    assert one["atoms"]["fnm_max"] == pytest.approx(other["atoms"]["fnm_max"], rel=1e-6)
