"""Trust in a run: a committee's force spread in state.csv and the summary, untrusted frames, the stop, and
a resumed run that reports what an uninterrupted one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openmlff.cli import main
from openmlff.data import load_dataset
from openmlff.model_file.writer import export_committee, load_exported
from openmlff.md import ResumeMismatchError, SimulationConfig, run_simulation
from openmlff.md.state_table import read_state_csv
from openmlff.md.reporters import UNCERTAINTY_COLUMN
from openmlff.md.trust import UNTRUSTED_FRAMES_FILE, TrustSettings
from openmlff.training import TrainingConfig
from openmlff.training.trainer import train_committee

TINY = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}
KJ_NM_TO_KCAL_A = 1 / 41.84


@pytest.fixture(scope="module")
def dataset(test_data):
    return load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")


@pytest.fixture(scope="module")
def committee(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("committee")
    config = TrainingConfig(hyperparameters=TINY, n_train=20, n_val=5, n_test=5, batch_size=5, warmup_steps=4,
                            learning_rate=3e-3, max_epochs=2, torch_threads=1)
    members = [r.checkpoint for r in train_committee(dataset, out, 2, config, progress=False)]
    return export_committee(members, out / "committee.pt")


def md(steps=60, **kw):
    return SimulationConfig(temperature_K=300, steps=steps, report_interval_steps=10, checkpoint_interval_steps=20,
                            **kw)


def test_uncertainty_column_and_summary(toy_model, aspirin, committee, tmp_path):
    summary = run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "run", md(),
                             progress=False, trust=TrustSettings(committee))
    table = read_state_csv(tmp_path / "run" / "state.csv")
    sigma = table[UNCERTAINTY_COLUMN]
    assert len(sigma) == 7 and np.all(np.isfinite(sigma)) and np.all(sigma > 0)
    assert summary.max_force_uncertainty_kcal_per_mol_per_A == pytest.approx(sigma.max())
    assert summary.first_untrusted_time_ps is None and not summary.stopped_untrusted
    module, _ = load_exported(committee)  # row 0 is the starting structure: recompute its spread by hand
    expected = module.uncertainty(torch.as_tensor(aspirin.positions_angstrom / 10)).numpy().max() * KJ_NM_TO_KCAL_A
    assert sigma[0] == pytest.approx(expected, rel=1e-5)


def test_threshold_keeps_untrusted_frames_and_stop_ends_the_run(toy_model, aspirin, committee, tmp_path):
    run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "free", md(),
                   progress=False, trust=TrustSettings(committee))
    sigma = read_state_csv(tmp_path / "free" / "state.csv")[UNCERTAINTY_COLUMN]
    threshold = float(np.sort(sigma)[3])  # three reports lie above it
    first = int(np.flatnonzero(sigma > threshold)[0])
    watched = run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "watched", md(),
                             progress=False, trust=TrustSettings(committee, threshold))
    assert watched.steps_completed == 60 and watched.first_untrusted_time_ps == pytest.approx(first * 10 * 0.5e-3)
    with np.load(tmp_path / "watched" / UNTRUSTED_FRAMES_FILE) as frames:
        assert frames["steps"].tolist() == [10 * k for k in np.flatnonzero(sigma > threshold)]
        assert frames["positions_angstrom"].shape == (3, 21, 3)
    stopped = run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "stop", md(),
                             progress=False, trust=TrustSettings(committee, threshold, stop_when_untrusted=True))
    assert stopped.stopped_untrusted and stopped.stable and stopped.steps_completed == 10 * first
    assert len(read_state_csv(tmp_path / "stop" / "state.csv")["step"]) == first + 1
    again = run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "stop", md(),
                           progress=False, trust=TrustSettings(committee, threshold, stop_when_untrusted=True))
    assert again.steps_completed == stopped.steps_completed and again.steps_this_session == stopped.steps_this_session


def test_extended_run_reports_what_an_uninterrupted_one_does(toy_model, aspirin, committee, tmp_path):
    threshold = 1e-9  # every report untrusted: the frames file must hold each exactly once
    whole = run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "whole", md(60),
                           progress=False, trust=TrustSettings(committee, threshold))
    run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "parts", md(30),
                   progress=False, trust=TrustSettings(committee, threshold))
    parts = run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "parts", md(60),
                           progress=False, trust=TrustSettings(committee, threshold))
    assert parts.resumed_from_step is not None
    a = read_state_csv(tmp_path / "whole" / "state.csv")[UNCERTAINTY_COLUMN]
    b = read_state_csv(tmp_path / "parts" / "state.csv")[UNCERTAINTY_COLUMN]
    np.testing.assert_allclose(b, a, rtol=1e-6)
    assert parts.max_force_uncertainty_kcal_per_mol_per_A == pytest.approx(whole.max_force_uncertainty_kcal_per_mol_per_A)
    with np.load(tmp_path / "parts" / UNTRUSTED_FRAMES_FILE) as frames:
        assert frames["steps"].tolist() == list(range(0, 70, 10))
    with pytest.raises(ResumeMismatchError, match="trust"):
        run_simulation(toy_model, aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "parts", md(80),
                       progress=False, trust=TrustSettings(committee, 2.0))


def test_cli_trust_options(toy_model, committee, tmp_path, capsys):
    assert main(["simulate", "--model", str(toy_model), "--structure", "aspirin", "--temperature", "300", "--timestep",
                 "0.5", "--steps", "20", "--report-interval", "10", "--out", str(tmp_path / "r"), "--committee",
                 str(committee), "--stop-when-untrusted", "1e-9", "--quiet"]) == 0
    assert "stopped UNTRUSTED at 0 ps" in capsys.readouterr().out
    assert main(["simulate", "--model", str(toy_model), "--structure", "aspirin", "--temperature", "300", "--timestep",
                 "0.5", "--steps", "20", "--out", str(tmp_path / "x"), "--stop-when-untrusted", "1"]) == 1
    assert "need --committee" in capsys.readouterr().err
    assert main(["simulate", "--model", str(toy_model), "--structure", "aspirin", "--temperature", "300", "--timestep",
                 "0.5", "--steps", "20", "--out", str(tmp_path / "y"), "--committee", str(toy_model)]) == 1
    assert "not a committee" in capsys.readouterr().err


# --- campaigns ----------------------------------------------------------------------------------------

def _summary(collapse=None, sigma=1.0, first=None, stopped=False, length=5.0):
    return {"stable": collapse is None, "collapse_time_ps": collapse, "simulated_time_ps": collapse or length,
            "max_force_uncertainty_kcal_per_mol_per_A": sigma, "first_untrusted_time_ps": first,
            "stopped_untrusted": stopped}


def test_trust_alarm_by_hand():
    from openmlff.stability.correlation import trust_alarm

    runs = [{"run_id": "a", "start": "s0", "summary": _summary(collapse=2.0, sigma=9.0, first=1.5)},
            {"run_id": "b", "start": "s1", "summary": _summary(collapse=3.0, sigma=7.0, first=3.2)},
            {"run_id": "c", "start": "s2", "summary": _summary(sigma=2.0, first=4.0)},
            {"run_id": "d", "start": "s3", "summary": _summary(sigma=1.0)},
            {"run_id": "e", "start": "s4", "summary": {"stable": True, "simulated_time_ps": 5.0}}]  # no committee
    alarm = trust_alarm(runs, horizon_ps=5.0, n_bootstrap=200)
    assert alarm["n_runs"] == 4 and alarm["n_collapsed"] == 2
    assert alarm["roc"]["roc_auc"] == 1.0  # both collapsed runs had the largest spreads
    assert alarm["lead_times_ps"] == pytest.approx([0.5, -0.2]) and alarm["median_lead_time_ps"] == pytest.approx(0.15)
    assert alarm["warned_before_collapse"] == 0.5 and alarm["false_alarms"] == 1
    assert trust_alarm(runs[-1:], 5.0) is None


def test_the_fixed_window_alarm_scores_every_run_on_the_same_first_picosecond():
    """A run that collapsed within the window is left out; the others are scored by their largest spread up to
    1 ps (a later, larger spread does not count) against collapsing later."""
    from openmlff.stability.correlation import trust_alarm, windowed_trust_alarm

    t = np.arange(0.0, 5.01, 0.5)
    def run(name, collapse, spreads, start):
        return {"run_id": name, "start": start, "summary": _summary(collapse=collapse, sigma=max(spreads)),
                "spread_series": (t[:len(spreads)], np.asarray(spreads, dtype=float))}
    runs = [run("early", 0.5, [1.0, 50.0], "s0"),  # collapsed within the window: not scored
            run("late", 3.0, [1.0, 4.0, 6.0, 2.0, 2.0, 2.0, 2.0], "s1"),  # window max 6.0 (t <= 1 ps)
            run("held1", None, [1.0, 2.0, 3.0, 99.0] + [1.0] * 7, "s2"),  # window max 3.0; 99 after it
            run("held2", None, [0.5] * 11, "s3")]
    alarm = windowed_trust_alarm(runs, horizon_ps=5.0, n_bootstrap=100)
    assert alarm["n_runs"] == 3 and alarm["n_excluded"] == 1 and alarm["n_collapsed_later"] == 1
    assert alarm["roc"]["roc_auc"] == 1.0  # 6.0 above 3.0 and 0.5, though held1's whole-run maximum is 99
    assert trust_alarm(runs, 5.0, n_bootstrap=100)["fixed_window"] == alarm
    assert windowed_trust_alarm([{k: v for k, v in r.items() if k != "spread_series"} for r in runs], 5.0) is None


@pytest.mark.slow
def test_campaign_with_a_committee(tmp_path, aspirin, committee, test_data):
    import json

    from openmlff.campaign import CampaignDirectory, CampaignSpecError, run_campaign
    from openmlff.md import read_run_summary
    from toy_models import write_toy_model

    data = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")
    models = {"stable": write_toy_model(tmp_path / "stable.pt", data.z, data.R[0]),
              "blowup": write_toy_model(tmp_path / "blowup.pt", data.z, data.R[0], stretch_bond=(0, 14))}
    spec = {"name": "trusted", "models": {k: str(v) for k, v in models.items()},
            "starts": {"data": str(test_data / "datasets" / "rmd17_aspirin_100.npz"), "frames": [3]},
            "temperatures_K": [500], "md": {"steps": 100, "report_interval_steps": 10, "platform": "Reference"},
            "trust": {"committee": str(committee), "threshold_kcal_per_mol_per_A": 1e-9}}
    (tmp_path / "trusted.json").write_text(json.dumps(spec))
    result = run_campaign(tmp_path / "trusted.json", n_workers=1, progress=False)
    folder = CampaignDirectory(result.directory)
    summaries = {r.model: read_run_summary(folder.run_dir(r.run_id)) for r in folder.spec().expand()}
    assert summaries["blowup"].collapsed and summaries["blowup"].first_untrusted_time_ps == 0.0
    assert summaries["stable"].stable and summaries["stable"].max_force_uncertainty_kcal_per_mol_per_A > 0
    from openmlff.campaign.correlate import spread_series  # what correlate's fixed-window alarm reads

    run_id = next(r.run_id for r in folder.spec().expand() if r.model == "stable")
    times, spreads = spread_series(folder.run_dir(run_id))
    assert len(times) == len(spreads) > 1 and spreads.max() == pytest.approx(
        summaries["stable"].max_force_uncertainty_kcal_per_mol_per_A, rel=1e-6)
    spec["trust"]["stop_when_untrusted"] = True
    del spec["trust"]["threshold_kcal_per_mol_per_A"]
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    with pytest.raises(CampaignSpecError, match="trust.stop_when_untrusted"):
        run_campaign(tmp_path / "bad.json", n_workers=1, progress=False)
