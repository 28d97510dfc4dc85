"""The study's own setup with models trained by their own codes: six models of aspirin, one stability campaign, one
correlation, one table (issue 32, "Evidence").

On the shipped rMD17 aspirin split (950 train / 50 validation / 200 test, seed 0), each model trained for the
same wall-clock budget on one thread, by its own code with its own recipe:
- openmlff's ET, ViSNet and NequIP (`openmlff train`, default sizes, then `openmlff export`);
- TorchMD-Net 3.1's ET (benchmarks/peer_torchmdnet.py in .venv-torchmdnet: TorchMD-Net's Lightning module with
  its examples/ET-MD17.yaml recipe, kcal/mol), run through openmm-ml's `torchmdnet` served from that environment;
- nequip 0.19's NequIP (benchmarks/peer_nequip.py: `nequip-train` with its tutorial.yaml recipe, kcal/mol),
  through openmm-ml's `nequip` in openmlff's environment;
- a MACE model (mace-torch 0.3.16's own `mace_run_train` in .venv-mace: 32 channels, max_L 0 (as MACE-OFF23
  small), correlation 3, r_max 5 Å, EMA, AMSGrad, E0s averaged, eV; stopped at the budget (or at the end of its
  first epoch, if later: mace_work/marks.json says), then finished by its own --restart_latest), through its ASE
  calculator served from that environment.
The sizes of TorchMD-Net's and nequip's models are those benchmarks/peers.py gives both sides of its pairs.

Then one campaign (the same held-out test starts and seeds for all six, 500 K, 0.5 fs, 10 ps by default),
`openmlff correlate`, and results/six_models/table.md: test force MAE, H FNM max, share stable with its 95 %
interval (Wilson), median time to collapse, ns/day, per model.

    python protocols/six_models.py [--budget 600] [--starts 8] [--seeds 2] [--length-ps 10] [--workers 2]
                                   [--out results/six_models] [--stop-after train|campaign]

Resumes after a kill: a finished training is kept (openmlff's trainings resume from their checkpoints; the other
codes' trainings start over), the campaign resumes its runs. Needs the backend environments
(bash protocols/backend_envs.sh) and .venv-torchmdnet for TorchMD-Net's training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
MACE_PYTHON = ROOT / ".venv-mace" / "bin" / "python"
TORCHMDNET_PYTHON = ROOT / ".venv-torchmdnet" / "bin" / "python"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
KCAL_TO_KJ = 4.184
EV_TO_KJ = 96.48533212331002
#: MACE's own training command, its recipe scaled to the CPU (the budget decides the epochs).
MACE_RECIPE = ["--model=MACE", "--num_channels=32", "--max_L=0", "--correlation=3", "--r_max=5.0",
               "--num_interactions=2", "--E0s=average", "--energy_key=energy", "--forces_key=forces",
               "--energy_weight=1.0", "--forces_weight=100.0", "--ema", "--ema_decay=0.99", "--amsgrad", "--lr=0.01",
               "--scheduler_patience=5", "--batch_size=16", "--valid_batch_size=50", "--default_dtype=float64",
               "--device=cpu", "--num_workers=0", "--save_cpu", "--max_num_epochs=100000", "--eval_interval=1",
               "--patience=100000"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "results" / "six_models"))
    p.add_argument("--budget", type=float, default=600.0, help="training wall-clock budget per model, s (one thread)")
    p.add_argument("--starts", type=int, default=8, help="held-out test conformations")
    p.add_argument("--seeds", type=int, default=2, help="MD seeds per start")
    p.add_argument("--length-ps", type=float, default=10.0, help="MD length per run, ps")
    p.add_argument("--temperature", type=float, default=500.0)
    p.add_argument("--workers", type=int, default=2, help="trainings and MD runs at a time (one thread each)")
    p.add_argument("--stop-after", choices=["train", "campaign"], default=None)
    return p.parse_args(argv)


def say(msg: str) -> None:
    print(f"[six-models {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- training ------------------------------------------------------------------------------------

def prepare(out: Path) -> Path:
    """The split (split.json), the peers' data folders (benchmarks/peers.prepare: npy in kcal/mol) and MACE's
    extended-XYZ files (eV), all from the shipped frames and one make_split(950, 50, 200, seed 0)."""
    sys.path.insert(0, str(BENCHMARKS))
    import peers
    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.data.splits import make_split
    from openmlff.data.writers import write_extxyz

    split_path = out / "split.json"
    if split_path.is_file():
        return split_path
    ds = load_dataset(shipped_dataset_path())
    split = make_split(ds.n_frames, n_train=950, n_val=50, n_test=200, seed=0)
    peers.prepare(out / "torchmdnet_work", peers.PAIRS["et"], 0)
    peers.prepare(out / "nequip_work", peers.PAIRS["nequip"], 0)
    mace = out / "mace_work"
    mace.mkdir(parents=True, exist_ok=True)
    write_extxyz(ds.subset(split.train), mace / "train.xyz")
    write_extxyz(ds.subset(split.val), mace / "valid.xyz")
    split.save(split_path)  # last: its presence says the preparation is complete
    return split_path


def jobs(out: Path, budget: float, data: Path) -> dict[str, dict]:
    """Each training: its command(s), the environment, and the model file that says it is done."""
    py = sys.executable
    out_of = {a: out / f"openmlff_{a}" for a in ("et", "visnet", "nequip")}
    todo = {}
    for arch, folder in out_of.items():
        todo[f"openmlff_{arch}"] = {
            "commands": [[py, "-m", "openmlff.cli", "train", "--data", str(data), "--model", arch, "--out", str(folder),
                          "--time-budget", f"{budget:g}", "--seed", "0", "--threads", "1"],
                         [py, "-m", "openmlff.cli", "export", str(folder / "model.ckpt"), "--out",
                          str(folder / "model.pt")]],
            "done": folder / "model.pt"}
    todo["torchmdnet"] = {
        "commands": [[str(TORCHMDNET_PYTHON), str(BENCHMARKS / "peer_torchmdnet.py"), "train",
                      str(out / "torchmdnet_work"), "--marks", f"{budget:g}", "--seed", "0"]],
        "done": out / "torchmdnet_work" / "torchmdnet" / f"weights_{budget:g}s.ckpt"}
    todo["nequip"] = {
        "commands": [[py, str(BENCHMARKS / "peer_nequip.py"), "train", str(out / "nequip_work"), "--marks",
                      f"{budget:g}", "--seed", "0"]],
        "done": out / "nequip_work" / "nequip" / f"weights_{budget:g}s.ckpt"}
    todo["mace"] = {"mace": True, "done": out / "mace_work" / "aspirin_mace.model"}
    return todo


def run_mace(out: Path, budget: float, log) -> None:
    """mace_run_train for `budget` seconds of its own loop, then its own --restart_latest with no epochs left,
    which loads the last checkpoint and writes the .model as a finished training does."""
    work = out / "mace_work"
    trainer = str(MACE_PYTHON.parent / "mace_run_train")
    common = [trainer, "--name=aspirin_mace", "--seed=0", f"--train_file={work / 'train.xyz'}",
              f"--valid_file={work / 'valid.xyz'}", *MACE_RECIPE]
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    env = {**os.environ, **ONE_THREAD}
    proc = subprocess.Popen(common, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    started, elapsed = None, math.nan
    while proc.poll() is None:  # the clock starts when MACE starts its loop, as the others' at their first step
        time.sleep(1)
        if started is None and any("Started training" in p.read_text(errors="replace")
                                   for p in (work / "logs").glob("*.log")):
            started = time.monotonic()
        # at the budget, or after it as soon as the first epoch is saved (a budget shorter than an epoch)
        if started is not None and time.monotonic() - started >= budget and _mace_epochs(work):
            elapsed = time.monotonic() - started
            proc.terminate()
            proc.wait()
    if proc.returncode not in (0, -15) or not _mace_epochs(work):
        raise SystemExit(f"MACE's training ended with exit {proc.returncode} and no checkpoint")
    epochs = max(_mace_epochs(work))
    (work / "marks.json").write_text(json.dumps([{"mark_s": budget, "elapsed_s": round(elapsed, 1),
                                                  "epochs": epochs}]))
    finish = [c if not c.startswith("--max_num_epochs") else f"--max_num_epochs={epochs}" for c in common]
    subprocess.run(finish + ["--restart_latest"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def _mace_epochs(work: Path) -> list[int]:
    """The epochs of MACE's saved checkpoints (checkpoints/NAME_run-SEED_epoch-N.pt)."""
    return [int(m.group(1)) for p in (work / "checkpoints").glob("*.pt") if (m := re.search(r"epoch-(\d+)", p.name))]


def train_all(out: Path, budget: float, workers: int, data: Path) -> None:
    """The six trainings, `workers` at a time, each on one thread; finished ones are skipped."""
    todo = {name: job for name, job in jobs(out, budget, data).items() if not Path(job["done"]).is_file()}
    running: dict[str, tuple] = {}
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    import threading

    def launch(name: str, job: dict):
        log = open(logs / f"train_{name}.log", "ab")
        if job.get("mace"):
            thread = threading.Thread(target=run_mace, args=(out, budget, log), daemon=True)
            thread.start()
            return thread, log

        def chain():
            for command in job["commands"]:
                subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)

        thread = threading.Thread(target=chain, daemon=True)
        thread.start()
        return thread, log

    queue = list(todo.items())
    while queue or running:
        while queue and len(running) < workers:
            name, job = queue.pop(0)
            say(f"training {name} for {budget:g} s")
            running[name] = launch(name, job)
        time.sleep(5)
        for name, (thread, log) in list(running.items()):
            if not thread.is_alive():
                log.close()
                del running[name]
                if not Path(todo[name]["done"]).is_file():
                    raise SystemExit(f"{name}: training failed; see {logs / f'train_{name}.log'}")
                say(f"{name} trained")


# --- campaign, correlation, table ----------------------------------------------------------------

def spec(out: Path, args, data: Path, split: Path) -> Path:
    models = {a: str(out / f"openmlff_{a}" / "model.pt") for a in ("et", "visnet", "nequip")}
    models.update(foreign_models(out, args.budget, data, split))
    document = {"name": "six_models", "models": models, "seeds": list(range(args.seeds)),
                "temperatures_K": [args.temperature],
                "starts": {"data": str(data), "frames_from_split": "test", "checkpoint": str(split),
                           "count": args.starts},
                "md": {"length_ps": args.length_ps, "timestep_fs": 0.5, "report_interval_steps": 100,
                       "checkpoint_interval_steps": 2000}}
    path = out / "campaign.json"
    path.write_text(json.dumps(document, indent=1))
    return path


def foreign_models(out: Path, budget: float, data: Path, split: Path) -> dict[str, dict]:
    """The campaign entries of the models trained by the other codes in `out` (served from their environments,
    or through openmm-ml), with the data and split they were trained on (for the metrics)."""
    budget = f"{budget:g}s"
    training = {"data": str(data), "split": str(split)}
    models = {}
    models["torchmdnet_et"] = {"potential": "openmm-ml:torchmdnet", "python": str(TORCHMDNET_PYTHON),
                               "modelPath": str(out / "torchmdnet_work" / "torchmdnet" / f"weights_{budget}.ckpt"),
                               "lengthScale": 0.1, "energyScale": KCAL_TO_KJ, "training": training}
    models["nequip_own"] = {"potential": "openmm-ml:nequip",
                            "modelPath": str(out / "nequip_work" / "nequip" / f"weights_{budget}.ckpt"),
                            "lengthScale": 0.1, "energyScale": KCAL_TO_KJ, "training": training}
    models["mace"] = {"potential": "ase:mace.calculators:MACECalculator", "python": str(MACE_PYTHON),
                      "model_paths": str(out / "mace_work" / "aspirin_mace.model"), "device": "cpu",
                      "default_dtype": "float64", "training": training}
    return models


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a share k/n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (
        1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


#: What each campaign model is (the protocol's names).
MODEL_CODES = {
    "et": "openmlff 0.1.2 ET", "visnet": "openmlff ViSNet", "nequip": "openmlff NequIP",
    "torchmdnet_et": "TorchMD-Net 3.1.0 ET (its ET-MD17 recipe, served through openmm-ml)",
    "nequip_own": "nequip 0.19.1 NequIP (its tutorial recipe, through openmm-ml)",
    "mace": "MACE 0.3.16 (32 channels, max_L 0, its own trainer; its ASE calculator, served)",
}


def table(campaign: Path, doc: dict, budget: float) -> str:
    """One row per model: test force MAE, H FNM max, share stable [95 % CI], median collapse time, ns/day."""
    from openmlff.campaign import campaign_status

    speeds: dict[str, list[float]] = {}
    for run in campaign_status(campaign)["runs"]:
        summary_path = campaign / "runs" / run["run_id"] / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            if summary.get("ns_per_day"):
                speeds.setdefault(run["run_id"].split("__")[0], []).append(summary["ns_per_day"])
    units = doc.get("units", {})
    lines = [f"Six models of aspirin, each trained {budget:g} s on one thread by its own code; {doc['n_runs']} runs of "
             f"{doc['horizon_ps']:g} ps at 500 K (protocols/six_models.py). Models: "
             + "; ".join(f"`{name}` {what}" for name, what in MODEL_CODES.items()) + ". Test frames: the 200 of the "
             "split none of the codes trained on; stable share with its Wilson 95 % interval; ns/day: the median "
             "run's MD speed, two runs at a time on the two cores (served models include the socket; at times other "
             "jobs shared the cores), not a speed benchmark (docs/benchmarks/md_speed.md, served_models.md).", "",
             f"| model | test force MAE ({units.get('force', 'kcal/mol/Å')}) | test H FNM max ({units.get('fnm', '')}) "
             "| stable (95 % CI) | median time to collapse (ps) | ns/day (median) |", "|---|---|---|---|---|---|"]
    for model, stab in sorted(doc["stability_per_model"].items()):
        metrics = doc["model_metrics"].get(model, {})
        lo, hi = wilson(stab["n_stable"], stab["n_runs"])
        speed = np.median(speeds[model]) if speeds.get(model) else math.nan
        lines.append(f"| {model} | {metrics.get('test.force_mae', math.nan):.3f} | "
                     f"{metrics.get('test.H.fnm_max', math.nan):.3f} | {stab['n_stable']}/{stab['n_runs']} "
                     f"[{lo:.2f}, {hi:.2f}] | {stab['median_time_to_collapse_ps']:.2f} | {speed:.3f} |")
    return "\n".join(lines) + "\n"


def answer_text(doc: dict, campaign: Path) -> str:
    """What the correlation says, in sentences (openmlff.stability.correlation.campaign_answer): the best predictors of the
    share of stable runs with their intervals, the global test force MAE's rank, the first bonds to break."""
    from openmlff.stability.correlation import campaign_answer
    from openmlff.report.campaign_page import diagnosis_entry

    diagnoses = []
    for run in sorted((campaign / "runs").iterdir()):
        summary_path = run / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            if not summary.get("stable", True):
                diagnoses.append(diagnosis_entry(run.name, summary, model=run.name.split("__")[0]))
    answer = campaign_answer(doc, diagnoses)
    lines = [f"{answer['n_stable']} of {answer['n_runs']} runs held to the horizon."]
    for k, best in enumerate(answer["best"], 1):
        lines.append(f"{k}. {best['metric']}: Spearman rho {best['spearman_rho']:+.2f} "
                     f"[{best['spearman_ci_low']:+.2f}, {best['spearman_ci_high']:+.2f}] against the share of stable "
                     f"runs over {best['n']} models")
    ref = answer["reference"]
    if ref:
        lines.append(f"The global test force MAE ranks {ref['rank']} of {answer['n_metrics']} metrics: rho "
                     f"{ref['spearman_rho']:+.2f} [{ref['spearman_ci_low']:+.2f}, {ref['spearman_ci_high']:+.2f}].")
    if answer["first_broken_bonds"]:
        lines.append("First bonds to break: " + ", ".join(f"{pair} {n}x" for pair, n in answer["first_broken_bonds"].items())
                     + ".")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from openmlff.core.threads import set_threads

    set_threads(1)
    from openmlff.campaign import run_campaign
    from openmlff.campaign.correlate import correlate_campaign
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.potentials.model_ref import CODE_CONSENT_ENV

    for python in (MACE_PYTHON, TORCHMDNET_PYTHON):
        if not python.is_file():
            raise SystemExit(f"{python} is missing: bash protocols/backend_envs.sh")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = shipped_dataset_path().resolve()
    say("[1/4] the split and each code's data files")
    split = prepare(out)
    say(f"[2/4] six trainings of {args.budget:g} s, {args.workers} at a time")
    train_all(out, args.budget, args.workers, data)
    if args.stop_after == "train":
        return 0
    os.environ[CODE_CONSENT_ENV] = "1"  # this protocol's own models: it trained them
    spec_path = spec(out, args, data, split)
    say(f"[3/4] campaign: 6 models x {args.starts} starts x {args.seeds} seeds, {args.length_ps:g} ps at "
        f"{args.temperature:g} K")
    run_campaign(spec_path, out=out / "campaign", n_workers=args.workers, retry_failed=True, progress=True)
    if args.stop_after == "campaign":
        return 0
    say("[4/4] correlation and the table")
    doc = correlate_campaign(out / "campaign", out / "correlation")
    text = table(out / "campaign", doc, args.budget) + "\n" + answer_text(doc, out / "campaign")
    (out / "table.md").write_text(text)
    print(text, flush=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from pages import write_result

    say(f"wrote {write_result('six_models', 'Six models of aspirin, each trained by its own code', text, True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
