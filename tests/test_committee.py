"""Committees: members that share data and split, one TorchScript file whose forward is the mean and whose
uncertainty() is the members' force spread (by hand), MD on it in OpenMM, and its uncertainty metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openmlff.cli import main
from openmlff.data import load_dataset
from openmlff.model_file.writer import (
    ModelFileError, energies_and_forces, export_checkpoint, export_committee, load_exported,
)
from openmlff.md import SimulationConfig, run_simulation
from openmlff.metrics.report import metrics_report
from openmlff.metrics.uncertainty import calibration_curve
from openmlff.training import TrainingConfig, train
from openmlff.training.checkpoint import read_checkpoint
from openmlff.training.trainer import train_committee

TINY = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}


@pytest.fixture(scope="module")
def dataset(test_data):
    return load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")


def tiny(**kw):
    return TrainingConfig(**{**dict(hyperparameters=TINY, n_train=20, n_val=5, n_test=5, batch_size=5, warmup_steps=4,
                                    learning_rate=3e-3, max_epochs=2, torch_threads=1), **kw})


@pytest.fixture(scope="module")
def members(dataset, tmp_path_factory):
    return [r.checkpoint for r in train_committee(dataset, tmp_path_factory.mktemp("committee"), 3, tiny(seed=4),
                                                  progress=False)]


def test_members_share_the_split_and_differ_by_seed(members):
    states = [read_checkpoint(m).state for m in members]
    assert [s["config"]["seed"] for s in states] == [4, 5, 6]
    assert all(s["split"] == states[0]["split"] and s["config"]["split_seed"] == 4 for s in states)
    first, second = states[0]["best_state"], states[1]["best_state"]
    assert torch.equal(first["element_energy_ev"], second["element_energy_ev"])  # same training energies
    assert sum(not torch.equal(first[k], second[k]) for k in first) > len(first) // 2  # other initial weights


def test_committee_is_the_members_mean_and_its_spread(members, dataset, tmp_path):
    path = export_committee(members, tmp_path / "committee.pt")
    module, meta = load_exported(path)
    assert meta["committee"]["members"] == 3 and meta["committee"]["seeds"] == [4, 5, 6]
    singles = [energies_and_forces(load_exported(export_checkpoint(m, tmp_path / f"m{k}.pt"))[0], dataset.R[:4] / 10)
               for k, m in enumerate(members)]
    e_mean, f_mean = energies_and_forces(module, dataset.R[:4] / 10)
    np.testing.assert_allclose(e_mean, np.mean([e for e, _ in singles], axis=0), rtol=1e-6)
    np.testing.assert_allclose(f_mean, np.mean([f for _, f in singles], axis=0), rtol=1e-4, atol=1e-3)
    forces = np.stack([f for _, f in singles])  # (K, frames, atoms, 3) kJ/mol/nm
    expected = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0))
    got = module.frame_uncertainties(torch.as_tensor(dataset.R[:4] / 10)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(module.uncertainty(torch.as_tensor(dataset.R[0] / 10)).numpy(), expected[0],
                               rtol=1e-4, atol=1e-3)
    assert float(module(torch.as_tensor(dataset.R[0] / 10)).detach()) == pytest.approx(float(e_mean[0]), rel=1e-6)


def test_md_runs_on_the_committee_in_openmm(members, dataset, tmp_path):
    path = export_committee(members, tmp_path / "committee.pt")
    summary = run_simulation(path, dataset.z, dataset.R[0], tmp_path / "run",
                             SimulationConfig(temperature_K=300, steps=20, report_interval_steps=10,
                                              checkpoint_interval_steps=10), progress=False)
    assert summary.steps_completed == 20


def test_committee_members_must_share_data_and_split(members, dataset, tmp_path):
    other = train(dataset, tmp_path / "other", tiny(seed=9), progress=False).checkpoint  # split seed 9
    with pytest.raises(ModelFileError, match="another split"):
        export_committee([members[0], other], tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="at least 2"):
        export_committee(members[:1], tmp_path / "one.pt")


def test_uncertainty_metrics_and_calibration(members, dataset, tmp_path):
    path = export_committee(members, tmp_path / "committee.pt")
    report = metrics_report(path, dataset.subset(np.arange(30)))
    u = report["uncertainty"]
    assert u["units"] == {"uncertainty": "kcal/mol/Å", "error": "kcal/mol/Å"}
    assert len(u["frames"]["max_uncertainty"]) == 30 and len(u["atoms"]["mean_uncertainty"]) == 21
    assert sum(u["calibration"]["count"]) == 30 * 21
    assert -1 <= u["spearman"]["frame_mean_uncertainty_vs_force_mae"] <= 1
    np.testing.assert_allclose(u["frames"]["force_mae"], report["frames"]["force_mae"], rtol=1e-9)
    cal = calibration_curve(np.arange(1.0, 11.0), 2 * np.arange(1.0, 11.0), n_bins=5)
    assert cal["count"] == [2] * 5
    np.testing.assert_allclose(cal["rms_error"], 2 * np.asarray(cal["rms_uncertainty"]))
    np.testing.assert_allclose(cal["rms_uncertainty"][0], np.sqrt((1 + 4) / 2))


@pytest.mark.slow
def test_cli_ensemble_export_committee_and_metrics(tmp_path, test_data, capsys):
    data = test_data / "datasets" / "rmd17_aspirin_100.npz"
    args = ["--hyperparameters", '{"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}',
            "--n-train", "20", "--n-val", "5", "--n-test", "5", "--batch-size", "5", "--max-epochs", "1", "--quiet"]
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "c"), "--ensemble", "2",
                 "--ensemble-workers", "2", *args]) == 0
    assert (tmp_path / "c" / "committee.pt").is_file()
    ckpts = [str(tmp_path / "c" / f"member_{k}" / "model.ckpt") for k in range(2)]
    assert main(["export", "--committee", *ckpts, "--out", str(tmp_path / "again.pt")]) == 0
    assert main(["metrics", "--model", str(tmp_path / "again.pt"), "--data", str(data), "--frames", "0:20",
                 "--out", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "uncertainty_calibration.png").is_file()
    capsys.readouterr()
    assert main(["export", ckpts[0], "--committee", *ckpts, "--out", str(tmp_path / "x.pt")]) == 1
    assert "either one CHECKPOINT or --committee" in capsys.readouterr().err
