"""`openmlff correlate`: real models of different quality, a real campaign, correlation tables and the HTML page."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

import pytest
import torch

from openmlff.campaign import run_campaign
from openmlff.cli import main as cli_main
from openmlff.data import load_dataset
from openmlff.model_file.writer import export_checkpoint
from openmlff.training import TrainingConfig, train
from openmlff.training.checkpoint import read_checkpoint

TINY = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, test_data):
    """Two ET models (1 and 6 epochs) on 100 rMD17 aspirin frames, 3 test starts x 1 seed each, 300 steps at 500 K."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("correlate")
    data_path = test_data / "datasets" / "rmd17_aspirin_100.npz"
    data = load_dataset(data_path)
    models = {}
    for label, epochs in (("et_1epoch", 1), ("et_6epochs", 6)):
        config = TrainingConfig(hyperparameters=TINY, n_train=40, n_val=10, n_test=20, batch_size=8, warmup_steps=5,
                                learning_rate=5e-3, max_epochs=epochs, torch_threads=1)
        result = train(data, root / label, config, progress=False)
        models[label] = str(export_checkpoint(result.checkpoint, root / label / "model.pt"))
    test_frames = read_checkpoint(root / "et_1epoch" / "model.ckpt").split.test[:3]
    spec = {"name": "quality", "models": models, "starts": {"data": str(data_path), "frames": [int(f) for f in test_frames]},
            "seeds": [0], "temperatures_K": [500],
            "md": {"steps": 300, "timestep_fs": 0.5, "report_interval_steps": 50, "checkpoint_interval_steps": 150,
                   "platform": "CPU"}}
    spec_path = root / "quality.json"
    spec_path.write_text(json.dumps(spec))
    run_campaign(spec_path, out=root / "campaign", n_workers=2, progress=False)
    return root / "campaign"


def test_correlate_writes_tables_and_a_self_contained_report(campaign):
    assert cli_main(["correlate", str(campaign), "--bootstrap", "200", "--n-clusters", "2", "--quiet"]) == 0
    out = campaign / "correlation"
    doc = json.loads((out / "correlation.json").read_text())
    assert doc["n_runs"] == 6 and set(doc["stability_per_model"]) == {"et_1epoch", "et_6epochs"}
    assert doc["horizon_ps"] == pytest.approx(0.15)
    # both models were evaluated on their own split: train/val/test metrics exist and differ between models
    m1, m6 = doc["model_metrics"]["et_1epoch"], doc["model_metrics"]["et_6epochs"]
    for name in ("train.force_mae", "val.force_mae", "test.force_mae", "test.H.fnm_max", "test.fnm_max"):
        assert m1[name] is not None and m6[name] is not None
    assert m6["train.force_mae"] < m1["train.force_mae"]  # more training, smaller errors
    with open(out / "model_level.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["metric"] for r in rows} >= {"test.force_mae", "test.fnm_max"}
    # per start: cluster, neighbourhood and own-frame metrics of each start in the training data
    starts = doc["conformation_level"]
    assert set(starts) <= {"et_1epoch", "et_6epochs"}

    class Images(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.scripts = [], 0

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.images.append(attrs.get("src", ""))
            self.scripts += tag == "script"

    page = Images()
    page.feed((out / "report.html").read_text())
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.scripts == 0
    # the page opens with its answer; the tables come after it, folded
    text = (out / "report.html").read_text()
    held = sum(s["n_stable"] for s in doc["stability_per_model"].values())
    for model, s in doc["stability_per_model"].items():  # every collapse's first broken bond, counted per model
        hydrogens = doc["first_broken_hydrogens"].get(model, {"collapsed_runs": 0, "with_hydrogen": 0})
        assert hydrogens["collapsed_runs"] == s["n_runs"] - s["n_stable"]
        assert hydrogens["with_hydrogen"] == sum(n for pair, n in s["first_broken_bonds"].items() if "H" in
                                                 pair.split("-"))
    assert text.index("The answer") < text.index("<table") and f"{held} of 6 runs held" in text
    assert "No metric ranks the models: a rank correlation needs at least 3 models" in text  # two models here
    assert "First bond to break in the collapsed runs: " in text and text.count("<details>") >= 3


@pytest.mark.slow
def test_a_model_of_another_code_is_correlated_on_the_split_named_in_the_spec(campaign, test_data, tmp_path):
    """The 6-epoch model as another code's TorchScript file (no openmlff metadata): its split comes from the spec's
    `training` table, and its metrics equal the openmlff file's on the same frames."""
    from openmlff.data.splits import Split

    source = campaign.parent / "et_6epochs"
    torch.jit.load(str(source / "model.pt")).save(str(tmp_path / "foreign.pt"))
    read_checkpoint(source / "model.ckpt").split.save(tmp_path / "split.json")
    data_path = test_data / "datasets" / "rmd17_aspirin_100.npz"
    frames = [int(f) for f in Split.load(tmp_path / "split.json").test[:2]]
    spec = {"name": "foreign", "starts": {"data": str(data_path), "frames": frames}, "seeds": [0],
            "temperatures_K": [500], "models": {"foreign": {"potential": str(tmp_path / "foreign.pt"),
                                                            "training": {"data": str(data_path),
                                                                         "split": str(tmp_path / "split.json")}}},
            "md": {"steps": 100, "timestep_fs": 0.5, "report_interval_steps": 50, "checkpoint_interval_steps": 50,
                   "platform": "CPU"}}
    (tmp_path / "foreign.json").write_text(json.dumps(spec))
    run_campaign(tmp_path / "foreign.json", out=tmp_path / "campaign", n_workers=1, progress=False)
    assert cli_main(["correlate", str(tmp_path / "campaign"), "--bootstrap", "50", "--n-clusters", "2",
                     "--quiet"]) == 0
    foreign = json.loads((tmp_path / "campaign" / "correlation" / "correlation.json").read_text())
    own = json.loads((campaign / "correlation" / "correlation.json").read_text())
    for name in ("train.force_mae", "val.force_mae", "test.force_mae", "test.H.fnm_max"):
        assert foreign["model_metrics"]["foreign"][name] == pytest.approx(own["model_metrics"]["et_6epochs"][name],
                                                                          rel=1e-6)  # frame by frame vs batched
