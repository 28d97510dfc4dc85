"""The stability study of docs/study.md (issue 35), in resumable stages.

    python protocols/study.py train     [--out results/study] [--workers 2] [--seeds 0 1]
    python protocols/study.py pilot     [--out results/study] [--workers 2]
    python protocols/study.py campaign  [--out results/study] [--workers 2] [--temperature K] [--six-models DIR]
    python protocols/study.py screen    [--out results/study] [--workers 2] [--six-models DIR]
    python protocols/study.py arms      [--out results/study] [--workers 2] [--temperature K]
    python protocols/study.py alarm     [--out results/study] [--workers 2] [--temperature K]
    python protocols/study.py active    [--out results/study] [--workers 2] [--temperature K]
    python protocols/study.py chignolin [--out results/study] [--workers 2] [--temperature K]
    python protocols/study.py analyse   [--out results/study]
    python protocols/study.py status    [--out results/study]
    python protocols/study.py keep      [--out results/study]   (then git commit: see below)

Stages (docs/study.md, "Design"):
- train: 42 aspirin models, ET, ViSNet and NequIP x 7 training-set sizes (25 ... 950 frames, nested within a seed,
  `openmlff train --split`) x 2 seeds, on the split of protocols/six_models.py (950/50/200, seed 0: the same 200
  test frames for every model). Each trains for the smaller of 600 s and 400 epochs on one thread, compiled, then
  is exported. Seed 0's 21 models first, so that a stopped stage leaves a whole design of one seed.
- pilot: the worst, median and best of the trained models by validation force MAE, 8 test starts x 5 ps at 500,
  700 and 900 K; prints the share of stable runs per model and temperature and the temperature the plan's rule picks.
- campaign: the 42 models and the six-model study's six (protocols/six_models.py's folder: its openmlff models
  compiled, the TorchMD-Net, nequip and MACE models served) x 16 test starts x 10 ps at the pilot's temperature.
- screen (H4): every campaign model, 4 test starts x 1 ps at the campaign's temperature + 200 K, MD seed 1.
- arms (H2 a-d): from each parent (the 100-frame ET and NequIP of seed 0), 100 epochs of: MSE (control), 0.5 MSE
  + 0.5 FNM, 0.5 MSE + 0.5 element-balanced; fine-tuning plain (control) and reweighted to an effective sample
  size of half the frames; 50 recruited frames (clusters) and 50 random ones (control), continued. Then a campaign
  of 16 starts x 3 seeds x 10 ps per model at the campaign's temperature.
- alarm (H3): committees of 3 ETs for the ET models of 100 and 950 frames (seed 0) watching those models' runs
  from the campaign's 16 starts.
- active (H2 e, after alarm): the 50 most uncertain pre-collapse frames of the ET 100-frame model's alarm runs,
  labelled with PBE/def2-SVP, the model continued on them like the recruit arms; a campaign like the arms'.
- chignolin (item 6): 1000 amber14 frames at 500 K labelled by GFN2-xTB, ET and NequIP trained an hour each, a
  campaign of both from 16 test frames x 10 ps at 500 K (its frames' sampling temperature).
- analyse: H1-H4 (docs/study.md "Statistics") into OUT/analysis.json.

Between sessions: results/ is ignored by git, and a session may start in a new checkout without it. `keep` adds to
git's index what the later stages and the analysis read (kept_files: models, specs, finished runs' records, no
trajectories; about 2 MB per model); commit after each chunk of work.

Every stage resumes where it stopped: a campaign from its runs' checkpoints; a training stopped before its end
starts over (its 600 s count the minute or two of compiling, which a resume would spend again). `workers`
processes of one thread each run at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "study"
CLI = [sys.executable, "-m", "openmlff.cli"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
ARCHITECTURES = ("et", "visnet", "nequip")
SIZES = (25, 50, 100, 200, 300, 600, 950)
SEEDS = (0, 1)
BUDGET_S = 600.0
MAX_EPOCHS = 400
PILOT_TEMPERATURES_K = (500.0, 700.0, 900.0)
PILOT_STARTS, PILOT_LENGTH_PS = 8, 5.0
CAMPAIGN_STARTS, CAMPAIGN_LENGTH_PS = 16, 10.0
SCREEN_STARTS, SCREEN_LENGTH_PS = 4, 1.0
SCREEN_METRICS = ("screen.share_stable", "screen.mean_time_to_collapse_ps")
#: H4's exploratory bond-deformation screen (metrics/bond_scan.py), fixed in docs/study.md before any scan.
BOND_SCAN_METRICS = ("bond_scan.H.wrong_sign_share", "bond_scan.H.spurious_minimum_share",
                     "bond_scan.wrong_sign_share", "bond_scan.spurious_minimum_share")
SCREEN_ABOVE_K, SCREEN_SEEDS = 200.0, (1,)  # changed after the pilot picked its top temperature (docs/study.md)
#: H2: the parents, their arms' epochs and settings (fixed in docs/study.md before any run) and each arm's control.
PARENTS = ("et_n100_s0", "nequip_n100_s0")
ARM_EPOCHS, LR_FRACTION, BLEND, TARGET_ESS, RECRUIT = 100, 0.25, 0.5, 0.5, 50
ARM_SEEDS = (0, 1, 2)
ARM_CONTROLS = {"fnm_blend": "mse", "element_blend": "mse", "finetune_ess": "finetune_plain",
                "recruit_clusters": "recruit_random", "active_learning": "recruit_random"}
#: H2 (e): the parent whose alarm campaign explores, and the frames labelled with ACTIVE_METHOD (rMD17's level).
ACTIVE_PARENT, ACTIVE_FRAMES, ACTIVE_METHOD = "et_n100_s0", 50, "dft"
ARM_CAMPAIGNS = ("arms_campaign", "active_campaign")
CHIGNOLIN_FRAMES, CHIGNOLIN_BUDGET_S = 1000, 3600.0
CHIGNOLIN_METRICS = ("test.force_mae", "test.H.fnm_mae", "test.H.fnm_max", "test.C.fnm_mae", "test.fnm_max")
CHIGNOLIN_T_K = 500.0  # its data's sampling temperature (docs/study.md: fixed before any chignolin run)
#: H3: the models whose runs a committee watches, and its size.
ALARM_MODELS, COMMITTEE = ("et_n100_s0", "et_n950_s0"), 3
#: H1's primary metric, fixed in docs/study.md before any run.
PRIMARY_METRIC = "test.H.fnm_max"
#: The six-model study's training budget (results/six_models/table.md: 1200 s each).
SIX_MODELS_BUDGET_S = 1200.0
#: The plan's rule: the campaign runs at the lowest pilot temperature at which the median model's stable share is in
#: this range.
GRADED = (0.3, 0.7)


def say(msg: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def env() -> dict:
    return {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def data_path() -> Path:
    from openmlff.data.shipped import shipped_dataset_path

    return shipped_dataset_path().resolve()


def split_path(out: Path) -> Path:
    """The six-model study's split (make_split(1200, 950, 50, 200, seed 0)), written once."""
    from openmlff.data import load_dataset
    from openmlff.data.splits import make_split

    path = out / "split.json"
    if not path.is_file():
        make_split(load_dataset(data_path()).n_frames, n_train=950, n_val=50, n_test=200, seed=0).save(path)
    return path


# --- models ----------------------------------------------------------------------------------------

def trained_models(out: Path) -> dict[str, dict]:
    """The study's 42 openmlff models: name -> folder, architecture, size, seed (seed 0's first)."""
    return {f"{arch}_n{size}_s{seed}": {"folder": out / "models" / f"{arch}_n{size}_s{seed}", "architecture": arch,
                                        "n_train": size, "seed": seed}
            for seed in SEEDS for size in SIZES for arch in ARCHITECTURES}


def train_commands(job: dict, data: Path, split: Path) -> list[list[str]]:
    """`openmlff train` of one study model, then `export`."""
    folder = job["folder"]
    return [[*CLI, "train", "--data", str(data), "--out", str(folder), "--architecture", job["architecture"],
             "--split", str(split), "--n-train", str(job["n_train"]), "--seed", str(job["seed"]), "--time-budget",
             f"{BUDGET_S:g}", "--max-epochs", str(MAX_EPOCHS), "--compile", "--threads", "1", "--quiet"],
            export_command(folder)]


def export_command(folder: Path) -> list[str]:
    return [*CLI, "export", str(folder / "model.ckpt"), "--out", str(folder / "model.pt")]


def run_commands(name: str, job: dict) -> str:
    """Run a job's commands one after another, their output appended to FOLDER.log beside its folder."""
    job["folder"].mkdir(parents=True, exist_ok=True)
    with open(job["folder"].parent / f"{job['folder'].name}.log", "ab") as log:
        for command in job["commands"]:
            subprocess.run(command, env=env(), stdout=log, stderr=subprocess.STDOUT, check=True)
    return name


def _finished(checkpoint: Path) -> bool:
    from openmlff.training.checkpoint import read_checkpoint

    return read_checkpoint(checkpoint).state["status"] == "finished"


def start_over(todo: dict) -> None:
    """A stopped training starts over: its clock counts compiling, which a resume would repeat."""
    for job in todo.values():
        if (job["folder"] / "model.ckpt").is_file() and not _finished(job["folder"] / "model.ckpt"):
            shutil.rmtree(job["folder"])


def stage_train(out: Path, workers: int, seeds) -> None:
    data, split = data_path(), split_path(out)
    todo = {name: {**job, "commands": train_commands(job, data, split)} for name, job in trained_models(out).items()
            if not (job["folder"] / "model.pt").is_file() and job["seed"] in seeds}
    start_over(todo)
    say(f"train (seeds {list(seeds)}): "
        f"{len(todo)} to go, {workers} at a time, each <= {BUDGET_S:g} s or {MAX_EPOCHS} epochs")
    run_all(todo, run_commands, workers, "trained")
    write_page("study_models", "The stability study's aspirin models", models_table(out))


def run_all(todo: dict, work, workers: int, done: str) -> None:
    """work(name, job) for each job, `workers` at a time; the first failure stops the rest (its log says why)."""
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(work, name, job): name for name, job in todo.items()}
        for future in as_completed(futures):
            try:
                say(f"{done} {future.result()}")
            except subprocess.CalledProcessError:
                pool.shutdown(cancel_futures=True)
                folder = todo[futures[future]]["folder"]
                raise SystemExit(f"{futures[future]} failed: see its log {folder.parent / (folder.name + '.log')}")


def training_summary(out: Path) -> dict[str, dict]:
    """Per trained model: epochs, seconds, stop reason and best validation force MAE (kcal/mol/Å), from its exported
    file's metadata (the checkpoints of most models are not kept: see `kept_files`)."""
    rows = {}
    for name, job in trained_models(out).items():
        if (job["folder"] / "model.pt").is_file():
            rows[name] = {**exported_training(job["folder"] / "model.pt"),
                          **{k: job[k] for k in ("architecture", "n_train", "seed")}}
    return rows


def exported_training(model: Path) -> dict:
    """An exported model's training record: epochs, elapsed_s, stop_reason, best_epoch, best validation force MAE."""
    from openmlff.model_file.reader import read_model_metadata

    t = read_model_metadata(model)["training"]
    return {"epochs": t["epochs"], "elapsed_s": t["elapsed_s"], "stop_reason": t["stop_reason"],
            "best_epoch": t["best_epoch"],
            "val_force_mae_kcal_per_mol_per_A": t["metrics"].get("val_force_mae_kcal_per_mol_per_A")}


# --- campaigns ------------------------------------------------------------------------------------

def campaign_spec(out: Path, name: str, models: dict, temperatures_K, starts: int, length_ps: float,
                  seeds=(0,), compiled: bool = True, replicas: int | None = None, trust: dict | None = None,
                  data: Path | None = None, split: Path | None = None) -> Path:
    """A campaign of `models` (label -> model file or entry) from the split's first `starts` test frames; reports
    every 50 fs, checkpoints every 1 ps. compiled: openmlff's models, compiled, in replica batches of `replicas`
    runs of one model and temperature (default up to 16); else (models of other codes, served) one run per Context.
    trust: the spec's [trust] table (a committee watching every run)."""
    md = {"length_ps": length_ps, "timestep_fs": 0.5, "report_interval_steps": 100, "checkpoint_interval_steps": 2000}
    md.update({"backend": "compiled", "replicas_per_context": replicas or min(16, starts)} if compiled else
              {"replicas_per_context": 1})
    document = {"name": name, "models": models, "seeds": list(seeds), "temperatures_K": list(temperatures_K),
                "starts": {"data": str(data or data_path()), "frames_from_split": "test",
                           "checkpoint": str(split or split_path(out)), "count": starts},
                "md": md, **({"trust": trust} if trust else {})}
    path = out / f"{name}.json"
    path.write_text(json.dumps(document, indent=1))
    return path


def run_campaign_stage(spec: Path, directory: Path, workers: int) -> None:
    from openmlff.campaign import run_campaign

    run_campaign(spec, out=directory, n_workers=workers, retry_failed=True, progress=True)


def outcomes(directory: Path) -> list[dict]:
    """One row per finished run: run_id, model, temperature_K, start, seed, its summary.json, collapsed, time_ps (to
    collapse, or simulated)."""
    from openmlff.campaign import campaign_status
    from openmlff.stability.runs import run_outcome

    status = campaign_status(directory)
    if status["counts"].get("failed"):
        say(f"{directory.name}: {status['counts']['failed']} runs failed (their error.json says why): left out")
    horizon_ps = status["steps_per_run"] * status["timestep_fs"] / 1000.0
    rows = []
    for run in status["runs"]:
        path = directory / "runs" / run["run_id"] / "summary.json"
        if path.is_file():
            summary = json.loads(path.read_text())
            collapsed, t, _ = run_outcome(summary, horizon_ps, run["run_id"])
            rows.append({**{k: run.get(k) for k in ("run_id", "model", "start", "temperature_K", "seed")},
                         "summary": summary, "collapsed": collapsed, "time_ps": t})
    return rows


def runs_by_model(out: Path, campaigns) -> dict[str, list]:
    """Model label -> the summaries of its finished runs in the campaigns (folders under OUT that exist)."""
    runs: dict[str, list] = {}
    for name in campaigns:
        for row in outcomes(out / name) if (out / name).is_dir() else []:
            runs.setdefault(row["model"], []).append(row["summary"])
    return runs


def survival_by_model(out: Path, campaigns, horizon_ps: float = CAMPAIGN_LENGTH_PS) -> dict[str, dict]:
    """Model label -> stability_of_runs over its finished runs in the campaigns."""
    from openmlff.stability.runs import stability_of_runs

    return {m: stability_of_runs(r, horizon_ps) for m, r in runs_by_model(out, campaigns).items()}


def pilot_models(out: Path) -> dict[str, str]:
    """The worst, median and best of seed 0's models by best validation force MAE (docs/study.md, "Condition"),
    label -> model file; picked once into OUT/pilot_models.json, so a resumed pilot keeps its models."""
    chosen = out / "pilot_models.json"
    if not chosen.is_file():
        pick_pilot_models(out, chosen)
    return {f"{k}_{v['name']}": str(trained_models(out)[v["name"]]["folder"] / "model.pt")
            for k, v in json.loads(chosen.read_text()).items()}


def pick_pilot_models(out: Path, chosen: Path) -> None:
    rows = sorted(((n, r) for n, r in training_summary(out).items() if r["seed"] == 0),
                  key=lambda item: item[1]["val_force_mae_kcal_per_mol_per_A"])
    if len(rows) < len(SIZES) * len(ARCHITECTURES):
        raise SystemExit(f"the pilot picks among seed 0's {len(SIZES) * len(ARCHITECTURES)} models: {len(rows)} trained "
                         "so far (run the train stage with --seeds 0)")
    picked = {"best": rows[0], "median": rows[len(rows) // 2], "worst": rows[-1]}
    chosen.write_text(json.dumps({k: {"name": n, **v} for k, (n, v) in picked.items()}, indent=1))


def pick_temperature(share_by_t: dict[float, float]) -> dict:
    """The plan's rule: the lowest temperature at which the median model's stable share lies in GRADED; if none
    does, the one whose share is closest to 0.5, the lower on a tie (fixed before the pilot ran)."""
    graded = [t for t in sorted(share_by_t) if GRADED[0] <= share_by_t[t] <= GRADED[1]]
    closest = min(sorted(share_by_t), key=lambda t: abs(share_by_t[t] - 0.5))
    return {"campaign_temperature_K": graded[0] if graded else closest, "in_graded_range": bool(graded),
            "rule": f"lowest pilot temperature with the median model's stable share in [{GRADED[0]}, {GRADED[1]}]; "
                    "if none, the share closest to 0.5 (lower temperature on a tie)"}


def stage_pilot(out: Path, workers: int) -> None:
    models = pilot_models(out)
    say(f"pilot: {', '.join(models)}: {PILOT_STARTS} starts x {PILOT_LENGTH_PS:g} ps at "
        f"{', '.join(f'{t:g}' for t in PILOT_TEMPERATURES_K)} K")
    spec = campaign_spec(out, "pilot", models, PILOT_TEMPERATURES_K, PILOT_STARTS, PILOT_LENGTH_PS)
    run_campaign_stage(spec, out / "pilot", workers)
    rows = outcomes(out / "pilot")
    shares = {}
    for row in rows:
        shares.setdefault(row["model"], {}).setdefault(row["temperature_K"], []).append(not row["collapsed"])
    table = {m: {f"{t:g}": f"{sum(v)}/{len(v)}" for t, v in sorted(by_t.items())} for m, by_t in shares.items()}
    median = next(m for m in shares if m.startswith("median_"))
    result = {"stable_runs": table, "median_model": median,
              **pick_temperature({t: float(np.mean(v)) for t, v in shares[median].items()})}
    (out / "pilot_result.json").write_text(json.dumps(result, indent=1))
    picked = json.loads((out / "pilot_models.json").read_text())
    temperatures = sorted({t for by_t in table.values() for t in by_t}, key=float)
    lines = [f"The study's pilot (docs/study.md, \"Condition\"): the worst, median and best of the trained models by "
             f"validation force MAE, {PILOT_STARTS} test starts x {PILOT_LENGTH_PS:g} ps at 0.5 fs. Stable runs:", "",
             "| model | validation force MAE (kcal/mol/Å) | " + " | ".join(f"{t} K" for t in temperatures) + " |",
             "|---|---|" + "---|" * len(temperatures)]
    for label, info in picked.items():
        model = f"{label}_{info['name']}"
        lines.append(f"| {model} | {info['val_force_mae_kcal_per_mol_per_A']:.3f} | "
                     + " | ".join(table.get(model, {}).get(t, "-") for t in temperatures) + " |")
    lines += ["", f"Campaign temperature: **{result['campaign_temperature_K']:g} K** "
                  f"({'in' if result['in_graded_range'] else 'not in'} the graded range). Rule: {result['rule']}."]
    write_page("study_pilot", "The stability study's pilot", "\n".join(lines) + "\n")


def campaign_models(out: Path, six: Path, seeds=SEEDS) -> tuple[dict, dict]:
    """(openmlff's models: the trained ones of `seeds` and the six-model study's three, label -> file; the six-model
    study's models of other codes, label -> entry). SystemExit naming a missing trained model. The six-model study's
    six join only when all their files exist (said so otherwise): a campaign's spec grows, so they can join later."""
    ours = {n: str(job["folder"] / "model.pt") for n, job in trained_models(out).items() if job["seed"] in seeds}
    missing = [n for n, path in ours.items() if not Path(path).is_file()]
    if missing:
        raise SystemExit(f"the campaign needs the trained models of seeds {list(seeds)}; missing {missing[:3]}... "
                         "(run the train stage)")
    six_ours = {f"six_{a}": str(six / f"openmlff_{a}" / "model.pt") for a in ARCHITECTURES}
    foreign = {f"six_{n}": entry for n, entry in six_foreign(six).items()}
    absent = [p for p in [*six_ours.values(), *map(foreign_file, foreign.values())] if not Path(p).is_file()]
    if absent:
        say(f"the six-model study's models are not all there (e.g. {absent[0]}): they are left out until "
            f"protocols/six_models.py --budget {SIX_MODELS_BUDGET_S:g} --stop-after train --out {six} trains them")
        return ours, {}
    return {**ours, **six_ours}, foreign


def campaign_temperature(out: Path, given: float | None) -> float:
    if given is not None:
        return given
    pilot = out / "pilot_result.json"
    if not pilot.is_file():
        raise SystemExit("run the pilot stage first (it fixes the campaign's temperature), or give --temperature")
    return float(json.loads(pilot.read_text())["campaign_temperature_K"])


def stage_campaign(out: Path, workers: int, six: Path, temperature: float | None, seeds=SEEDS) -> None:
    """The campaign of docs/study.md: 48 models x 16 test starts x 10 ps at the pilot's temperature. openmlff's
    models run first (compiled replica batches), then the other codes' (served, one run at a time)."""
    from openmlff.potentials.model_ref import CODE_CONSENT_ENV

    ours, foreign = campaign_models(out, six, seeds)
    t = campaign_temperature(out, temperature)
    say(f"campaign: {len(ours)} openmlff models and {len(foreign)} of other codes x {CAMPAIGN_STARTS} starts x "
        f"{CAMPAIGN_LENGTH_PS:g} ps at {t:g} K")
    run_campaign_stage(campaign_spec(out, "campaign", ours, [t], CAMPAIGN_STARTS, CAMPAIGN_LENGTH_PS),
                       out / "campaign", workers)
    if not foreign:
        return
    os.environ[CODE_CONSENT_ENV] = "1"  # the six-model study's own models: trained by protocols/six_models.py
    run_campaign_stage(campaign_spec(out, "campaign_other_codes", foreign, [t], CAMPAIGN_STARTS, CAMPAIGN_LENGTH_PS,
                                     compiled=False), out / "campaign_other_codes", workers)


def stage_screen(out: Path, workers: int, six: Path, seeds=SEEDS) -> None:
    """H4's screen: every campaign model, 4 test starts x 1 ps at the campaign's temperature + 200 K with MD seed 1
    (not the campaign's seed 0, whose first picosecond it would replay), 2.5 % of the campaign's steps."""
    from openmlff.potentials.model_ref import CODE_CONSENT_ENV

    ours, foreign = campaign_models(out, six, seeds)
    t = campaign_temperature(out, None) + SCREEN_ABOVE_K
    say(f"screen: {len(ours) + len(foreign)} models x {SCREEN_STARTS} starts x {SCREEN_LENGTH_PS:g} ps at {t:g} K")
    run_campaign_stage(campaign_spec(out, "screen", ours, [t], SCREEN_STARTS, SCREEN_LENGTH_PS, seeds=SCREEN_SEEDS),
                       out / "screen", workers)
    if foreign:
        os.environ[CODE_CONSENT_ENV] = "1"
        run_campaign_stage(campaign_spec(out, "screen_other_codes", foreign, [t], SCREEN_STARTS, SCREEN_LENGTH_PS,
                                         seeds=SCREEN_SEEDS, compiled=False), out / "screen_other_codes", workers)
    stage_bond_scans(out, {**ours, **foreign}, workers)


def stage_bond_scans(out: Path, models: dict, workers: int) -> None:
    """H4's exploratory bond-deformation screen (metrics/bond_scan.py, after BSCT): every model's bonds scanned on
    the screen's 4 starts; one JSON per model in OUT/bond_scan, kept."""
    from openmlff.campaign import CampaignSpec

    folder = out / "bond_scan"
    folder.mkdir(exist_ok=True)
    starts = list(CampaignSpec.from_file(out / "screen.json").starts.frames)
    todo = {m: {"folder": folder / m, "commands": [[
        sys.executable, str(Path(__file__).resolve()), "bond-scan", "--out", str(out), "--model", m]]}
        for m in models if not (folder / f"{m}.json").is_file()}
    say(f"bond scans: {len(models) - len(todo)} of {len(models)} done; {len(todo)} to go on test frames {starts}")
    run_all(todo, run_commands, workers, "scanned")


def bond_scan_one(out: Path, model: str) -> None:
    """One model's bond scans (a process of its own, one thread) into OUT/bond_scan/MODEL.json."""
    from openmlff.campaign import CampaignSpec
    from openmlff.core.atomic_io import atomic_write_json, jsonable
    from openmlff.core.threads import set_threads
    from openmlff.data import load_dataset
    from openmlff.metrics.bond_scan import bond_scans
    from openmlff.potentials.model_ref import CODE_CONSENT_ENV

    set_threads(1)
    os.environ[CODE_CONSENT_ENV] = "1"  # the six-model study's models of other codes
    screen = CampaignSpec.from_file(out / "screen.json")
    other = out / "screen_other_codes.json"
    models = {**screen.models, **(CampaignSpec.from_file(other).models if other.is_file() else {})}
    data = load_dataset(data_path())
    frames = list(screen.starts.frames)
    t0 = time.perf_counter()
    result = bond_scans(models[model], data.z, data.R[frames])
    atomic_write_json(out / "bond_scan" / f"{model}.json", jsonable(
        {**result, "model": model, "frames": frames, "wall_s": round(time.perf_counter() - t0, 1)}, finite=True))


# --- repairs (H2) ----------------------------------------------------------------------------------

def arm_schedule(out: Path, parent: str) -> list[str]:
    """Every arm's training schedule from `parent`: ARM_EPOCHS epochs at LR_FRACTION of the architecture's default
    learning rate, 50 warm-up steps, no early stop, one thread."""
    arch = trained_models(out)[parent]["architecture"]
    lr = f"{LR_FRACTION * {'et': 1e-3, 'visnet': 1e-3, 'nequip': 1e-2}[arch]:g}"
    return ["--max-epochs", str(ARM_EPOCHS), "--learning-rate", lr, "--warmup-steps", "50",
            "--early-stopping-patience-epochs", "10000", "--threads", "1", "--quiet"]


def arm_jobs(out: Path) -> dict[str, dict]:
    """Every repair arm and control of docs/study.md H2 (a)-(d), for each parent: label -> folder, commands."""
    data = str(data_path())
    jobs = {}
    for parent in PARENTS:
        ckpt = trained_models(out)[parent]["folder"] / "model.ckpt"
        root = out / "arms" / parent
        fine = arm_schedule(out, parent)
        cont = ["--data", data, "--continue-from", str(ckpt), *fine, "--compile"]
        losses = {"mse": [], "fnm_blend": ["--loss", "fnm", "--loss-options", json.dumps({"blend": BLEND})],
                  "element_blend": ["--loss", "element_balanced", "--loss-options", json.dumps({"blend": BLEND})]}
        for arm, loss in losses.items():
            jobs[f"{parent}.{arm}"] = {"folder": root / arm,
                                       "commands": [[*CLI, "train", "--out", str(root / arm), *cont, *loss]]}
        for arm, rule in (("finetune_plain", ["--reweight", "none"]),
                          ("finetune_ess", ["--reweight", "frames", "--reweight-options",
                                            json.dumps({"target_ess": TARGET_ESS})])):
            jobs[f"{parent}.{arm}"] = {"folder": root / arm,
                                       "commands": [[*CLI, "finetune", str(ckpt), "--out", str(root / arm), *rule,
                                                     *fine]]}
        for strategy in ("random", "clusters"):
            picked = root / f"recruited_{strategy}.npz"
            recruit = [] if picked.is_file() else [  # recruited once: a resumed arm trains on the same frames
                [*CLI, "recruit", str(ckpt), "--pool", data, "--count", str(RECRUIT), "--strategy", strategy,
                 "--out", str(picked), "--threads", "1", "--quiet"]]
            jobs[f"{parent}.recruit_{strategy}"] = {
                "folder": root / f"recruit_{strategy}",
                "commands": [*recruit, [*CLI, "train", "--out", str(root / f"recruit_{strategy}"), "--add-data",
                                        str(picked), *cont]]}
    for job in jobs.values():
        job["commands"].append(export_command(job["folder"]))
    return jobs


def stage_arms(out: Path, workers: int, temperature: float | None) -> None:
    """H2: train every arm and control (each pair at equal epochs), then the arms campaign: 16 test starts x 3
    seeds x 10 ps per model at the campaign's temperature."""
    todo = {n: job for n, job in arm_jobs(out).items() if not (job["folder"] / "model.pt").is_file()}
    say(f"arms: {len(arm_jobs(out)) - len(todo)} of {len(arm_jobs(out))} trained; {len(todo)} to go")
    run_all(todo, run_commands, workers, "trained")
    t = campaign_temperature(out, temperature)
    models = {n: str(job["folder"] / "model.pt") for n, job in arm_jobs(out).items()}
    say(f"arms campaign: {len(models)} models x {CAMPAIGN_STARTS} starts x {len(ARM_SEEDS)} seeds x "
        f"{CAMPAIGN_LENGTH_PS:g} ps at {t:g} K")
    run_campaign_stage(campaign_spec(out, "arms_campaign", models, [t], CAMPAIGN_STARTS, CAMPAIGN_LENGTH_PS,
                                     seeds=ARM_SEEDS), out / "arms_campaign", workers)


def arms_result(out: Path) -> dict:
    """Per parent and pooled: each arm against its control, log-rank and hazard ratio with their intervals."""
    from openmlff.stability.runs import comparison_row, hazard_ratio, stability_of_runs

    runs = runs_by_model(out, ARM_CAMPAIGNS)
    result = {}
    for parent in (*PARENTS, "pooled"):
        for arm, control in ARM_CONTROLS.items():
            parents = [p for p in (PARENTS if parent == "pooled" else (parent,))
                       if f"{p}.{arm}" in runs and f"{p}.{control}" in runs]  # pooled over parents that ran both

            def stability(label):
                members = [r for p in parents for r in runs.get(f"{p}.{label}", [])]
                return stability_of_runs(members, CAMPAIGN_LENGTH_PS) if members else None

            a, c = stability(arm), stability(control)
            if a and c:
                result[f"{parent}: {arm} vs {control}"] = {**comparison_row(arm, control, a, c),
                                                          **{f"hr_{k}": v for k, v in hazard_ratio(a, c).items()},
                                                          "n_method": a["n_runs"], "n_control": c["n_runs"]}
    return result


# --- the committee alarm (H3) ----------------------------------------------------------------------

def stage_alarm(out: Path, workers: int, temperature: float | None) -> None:
    """H3: a committee of 3 ETs (seeds 0-2, the same nested frames, each <= 600 s or 400 epochs) for the ET models of
    100 and 950 frames, watching that model's runs from the campaign's 16 starts (10 ps, one run per Context, the
    spread at every report)."""
    data, split = str(data_path()), str(split_path(out))
    t = campaign_temperature(out, temperature)
    for name in ALARM_MODELS:
        job, folder = trained_models(out)[name], out / "alarm" / name
        if not (folder / "committee.pt").is_file():
            start_over({f"{name}.member_{k}": {"folder": folder / f"member_{k}"} for k in range(COMMITTEE)})
            say(f"alarm: a committee of {COMMITTEE} for {name}")
            run_commands(name, {"folder": folder, "commands": [[
                *CLI, "train", "--data", data, "--out", str(folder), "--architecture", job["architecture"], "--split",
                split, "--n-train", str(job["n_train"]), "--seed", "0", "--ensemble", str(COMMITTEE),
                "--ensemble-workers", str(workers), "--time-budget", f"{BUDGET_S:g}", "--max-epochs", str(MAX_EPOCHS),
                "--compile", "--threads", "1", "--quiet"]]})
        spec = campaign_spec(out, f"alarm_{name}", {name: str(job["folder"] / "model.pt")}, [t], CAMPAIGN_STARTS,
                             CAMPAIGN_LENGTH_PS, compiled=False,
                             trust={"committee": str(folder / "committee.pt"), "threshold_kcal_per_mol_per_A": 5.0})
        run_campaign_stage(spec, out / f"alarm_{name}", workers)


def alarm_result(out: Path) -> dict | None:
    """H3's ROC AUC over the runs of both alarm campaigns: the largest spread in the first 1 ps of each run that
    lived past it, against a collapse later (stability.correlation.windowed_trust_alarm)."""
    from openmlff.campaign.correlate import spread_series
    from openmlff.stability.correlation import windowed_trust_alarm

    runs = []
    for name in ALARM_MODELS:
        directory = out / f"alarm_{name}"
        for row in outcomes(directory) if directory.is_dir() else []:
            runs.append({**row, "spread_series": spread_series(directory / "runs" / row["run_id"])})
    return windowed_trust_alarm(runs, CAMPAIGN_LENGTH_PS) if runs else None


# --- active learning (H2 e) -----------------------------------------------------------------------

def stage_active(out: Path, workers: int, temperature: float | None) -> None:
    """H2 (e): the ACTIVE_FRAMES most uncertain pre-collapse frames of the alarm campaign of ACTIVE_PARENT (its
    committee's spread; improve.active's selection), labelled with PBE/def2-SVP, the parent continued on them like
    the recruit arms, and a campaign with the arms' settings. Its control is the parent's recruit_random arm."""
    from openmlff.campaign import campaign_status
    from openmlff.data import load_dataset, save_dataset
    from openmlff.improve.active import candidate_frames, select_frames
    from openmlff.reference import label_conformations

    alarm = out / f"alarm_{ACTIVE_PARENT}"
    counts = campaign_status(alarm)["counts"] if alarm.is_dir() else {}
    if not counts or any(counts.get(state) for state in ("pending", "running", "interrupted")):
        raise SystemExit(f"run the alarm stage first: H2 (e) explores with {alarm.name}'s finished runs")
    folder = out / "arms" / ACTIVE_PARENT / "active_learning"
    picked = folder.parent / "active_labelled.npz"
    if not picked.is_file():
        R, sigma, labels = candidate_frames(alarm)
        later = np.array([not label.endswith("@0") for label in labels], dtype=bool)  # not the test starts themselves
        R, sigma = R[later], sigma[later]
        if not len(sigma):
            raise SystemExit(f"{alarm}: no reported frame before a collapse to label")
        chosen = select_frames(R, sigma, ACTIVE_FRAMES)
        say(f"active: labelling {len(chosen)} of {len(sigma)} pre-collapse frames with {ACTIVE_METHOD} "
            f"(spread {sigma[chosen].min():.2f}-{sigma[chosen].max():.2f} kcal/mol/Å), {workers} workers")
        labelled = label_conformations(ACTIVE_METHOD, load_dataset(data_path()).z, R[chosen],
                                       folder.parent / "active_labels", chunk_size=1, n_workers=workers,
                                       name=f"{ACTIVE_PARENT} alarm campaign, most uncertain")
        if labelled.dataset is None:
            raise SystemExit(f"active: every selected frame failed with {ACTIVE_METHOD} (see {folder.parent})")
        if labelled.n_failed:
            say(f"active: {labelled.n_failed} frames failed to label (listed in the dataset's provenance)")
        save_dataset(labelled.dataset, picked)
    job = {"folder": folder, "commands": [
        [*CLI, "train", "--out", str(folder), "--data", str(data_path()), "--add-data", str(picked), "--continue-from",
         str(trained_models(out)[ACTIVE_PARENT]["folder"] / "model.ckpt"), *arm_schedule(out, ACTIVE_PARENT),
         "--compile"], export_command(folder)]}
    if not (folder / "model.pt").is_file():
        run_all({"active": job}, run_commands, 1, "trained")
    t = campaign_temperature(out, temperature)
    run_campaign_stage(campaign_spec(out, "active_campaign", {f"{ACTIVE_PARENT}.active_learning": str(
        folder / "model.pt")}, [t], CAMPAIGN_STARTS, CAMPAIGN_LENGTH_PS, seeds=ARM_SEEDS), out / "active_campaign",
        workers)


# --- chignolin (item 6) ----------------------------------------------------------------------------

def stage_chignolin(out: Path, workers: int, temperature: float | None) -> None:
    """Chignolin: amber14 Langevin MD at 500 K, CHIGNOLIN_FRAMES frames labelled by GFN2-xTB
    (benchmarks/ml_vs_classical.chignolin_data, resumable in chunks), ET and NequIP trained on them (an hour each,
    one thread, compiled; 50 validation and 100 test frames), and a campaign of both from 16 test frames x 10 ps
    at 500 K, the temperature its frames were sampled at."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ml_vs_classical

    folder = out / "chignolin"
    data = ml_vs_classical.chignolin_data(argparse.Namespace(out=out, temperature=500.0, workers=workers,
                                                             chignolin_frames=CHIGNOLIN_FRAMES)).resolve()
    jobs = {arch: {"folder": folder / arch, "commands": [
        [*CLI, "train", "--data", str(data), "--out", str(folder / arch), "--architecture", arch, "--n-val", "50",
         "--n-test", "100", "--time-budget", f"{CHIGNOLIN_BUDGET_S:g}", "--compile", "--threads", "1", "--quiet"],
        export_command(folder / arch)]} for arch in ("et", "nequip")}
    todo = {a: j for a, j in jobs.items() if not (j["folder"] / "model.pt").is_file()}
    start_over(todo)
    run_all(todo, run_commands, workers, "trained chignolin")
    t = CHIGNOLIN_T_K if temperature is None else temperature
    models = {f"chignolin_{a}": str(j["folder"] / "model.pt") for a, j in jobs.items()}
    spec = campaign_spec(out, "chignolin_campaign", models, [t], CAMPAIGN_STARTS, CAMPAIGN_LENGTH_PS,
                         replicas=1,  # batching 166 atoms measured slower (campaign/batches.py)
                         data=data, split=folder / "et" / "model.ckpt")
    run_campaign_stage(spec, out / "chignolin_campaign", workers)
    write_page("study_chignolin", "The stability study's chignolin models (item 6)", chignolin_table(out, data, t))


def chignolin_table(out: Path, data: Path, temperature: float) -> str:
    """Item 6's page: each chignolin model's training, test-set errors, campaign outcome, the element pairs that broke
    first and the FNM MAE rank of their hydrogens among the molecule's hydrogens (chance beside it)."""
    from openmlff.data import load_dataset

    doc = correlation_documents(out, ["chignolin_campaign"])
    dataset = load_dataset(data)
    provenance = dataset.provenance
    lines = [f"Chignolin (166 atoms): {dataset.n_frames} amber14 frames at 500 K labelled by GFN2-xTB "
             f"({len(provenance.get('scf_retry', {}).get('frames', []))} after an SCF retry, "
             f"{provenance.get('first_picosecond', {}).get('frames', 0)} from the sampling run's first picosecond; "
             "docs/study.md), ET and NequIP trained for the smaller of "
             f"{CHIGNOLIN_BUDGET_S:g} s and early stopping on one thread, compiled, 50 validation and 100 test frames; "
             f"{CAMPAIGN_STARTS} test starts x {CAMPAIGN_LENGTH_PS:g} ps at {temperature:g} K, 0.5 fs, collapse = a bond "
             "0.5 Å off its reference length. Forces in kcal/mol/Å, FNM in (kcal/mol/Å)/Da, on the 100 test frames; "
             "the broken hydrogens' ranks by FNM MAE on the training frames (`correlate`'s collapse diagnosis).",
             "", "| model | epochs | training s | test force MAE | H force MAE | H FNM MAE | H FNM max | stable | mean time "
             "to collapse (ps) | first broken bonds | broken H's FNM MAE rank among the H (median; chance) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, s in doc["stability_per_model"].items():
        m, h = doc["model_metrics"][model], doc["first_broken_hydrogens"].get(model, {})
        state = exported_training(out / "chignolin" / model.split("_", 1)[1] / "model.pt")
        bonds = ", ".join(f"{pair} {n}" for pair, n in sorted(s["first_broken_bonds"].items(), key=lambda kv: -kv[1]))
        rank = (f"{h['median_rank']:g} of {h['n_hydrogens']}; {h['chance_median_rank']:g}"
                if h.get("median_rank") is not None else "-")
        lines.append(f"| {model} | {state['epochs']} | {state['elapsed_s']:.0f} | {m['test.force_mae']:.2f} | "
                     f"{m['test.H.force_mae']:.2f} | {m['test.H.fnm_mae']:.2f} | {m['test.H.fnm_max']:.1f} | "
                     f"{s['n_stable']}/{s['n_runs']} | {s['mean_time_to_collapse_ps']:.3f} | {bonds or '-'} | {rank} |")
    return "\n".join(lines) + "\n"


# --- analysis -------------------------------------------------------------------------------------

def correlation_documents(out: Path, names) -> dict:
    """The campaigns' correlation documents merged: model metrics, units and stability of every model
    (`openmlff correlate` on each campaign, kept in OUT/correlation_<name>)."""
    from openmlff.campaign.correlate import correlate_campaign

    from openmlff.potentials.model_ref import CODE_CONSENT_ENV

    os.environ[CODE_CONSENT_ENV] = "1"  # the other codes' models of the six-model study: trained by its protocol
    merged = {"model_metrics": {}, "metric_units": {}, "stability_per_model": {}, "first_broken_hydrogens": {}}
    for name in names:
        if not (out / name).is_dir():
            continue
        target = out / f"correlation_{name}"
        path = target / "correlation.json"
        doc = json.loads(path.read_text()) if path.is_file() else None
        if doc is None or doc.get("n_runs") != len(outcomes(out / name)):  # computed before the last runs ended
            doc = correlate_campaign(out / name, target, progress=False)
        for key in merged:
            merged[key].update(doc.get(key) or {})
    return merged


def screen_predictors(out: Path) -> dict[str, dict]:
    """Per model, the screens' outcomes as predictors: the short hot run's stable share and mean time to collapse
    (ps), and the bond scans' summary (exploratory, "bond_scan.*")."""
    found = {m: dict(zip(SCREEN_METRICS, (st["share_stable"], st["mean_time_to_collapse_ps"])))
             for m, st in survival_by_model(out, ("screen", "screen_other_codes"), SCREEN_LENGTH_PS).items()}
    for path in sorted((out / "bond_scan").glob("*.json")):
        summary = json.loads(path.read_text())["summary"]
        found.setdefault(path.stem, {}).update({f"bond_scan.{k}": v for k, v in summary.items()})
    return found


def screen_against(metrics: dict, stability: dict, models: list, rows: list) -> dict:
    """H4: each screen outcome's rank correlation (the short hot run's, and the exploratory bond scans') and its paired
    bootstrap against the primary metric and against the best-ranked force metric (chosen after seeing the data:
    said so)."""
    from openmlff.stability.correlation import paired_rho_difference

    best = next((r["metric"] for r in rows if not r["metric"].startswith(("screen.", "bond_scan."))), None)
    y = [stability[m]["share_stable"] for m in models]
    out = {"best_force_metric (post hoc)": best}
    for name in (*SCREEN_METRICS, *BOND_SCAN_METRICS):
        row = next((r for r in rows if r["metric"] == name), None)
        if row is None:
            continue
        out[name] = {"spearman_rho": row["spearman_rho"], "ci": [row["spearman_ci_low"], row["spearman_ci_high"]],
                     **{f"versus {other}": paired_rho_difference([metrics[m].get(name, np.nan) for m in models],
                                                                 [metrics[m].get(other, np.nan) for m in models], y)
                        for other in {PRIMARY_METRIC, best} if other}}
    return out


def stage_analyse(out: Path, campaigns=("campaign", "campaign_other_codes")) -> None:
    """H1 and H4 as docs/study.md fixes them: every metric's Spearman rho against the models' stable share with
    its bootstrap interval, the paired bootstrap of |rho| against the global test force MAE's (primary: test H FNM
    max), the same among the third of models of median-like MAE, and the screen next to them. Writes
    OUT/analysis.json."""
    from openmlff.stability.correlation import model_level_correlation, paired_rho_difference

    merged = correlation_documents(out, campaigns)
    metrics = {m: dict(v) for m, v in merged["model_metrics"].items()}
    for model, screen in screen_predictors(out).items():
        if model in metrics:
            metrics[model].update(screen)
    stability = merged["stability_per_model"]
    table = model_level_correlation(metrics, stability, measures=("share_stable",), metric_units=merged["metric_units"])
    rows = sorted(table["rows"], key=lambda r: -abs(r["spearman_rho"]) if r["spearman_rho"] == r["spearman_rho"] else 0)
    by_metric = {r["metric"]: r for r in rows}
    shares = [stability[m]["share_stable"] for m in table["models"]]
    extreme = sum(v in (0.0, 1.0) for v in shares)
    mae = {m: metrics[m]["test.force_mae"] for m in table["models"]}
    median = float(np.median(list(mae.values())))
    similar = sorted(mae, key=lambda m: abs(mae[m] - median))[:len(mae) // 3]

    def on(models, metric):
        return [metrics[m].get(metric, np.nan) for m in models]

    secondary = paired_rho_difference(on(similar, PRIMARY_METRIC), on(similar, "test.force_mae"),
                                      [stability[m]["share_stable"] for m in similar])
    result = {
        "n_models": len(table["models"]), "models_at_0_or_100_percent": extreme,
        "graded_enough": extreme <= len(shares) / 3,
        "primary": {"metric": PRIMARY_METRIC, **by_metric.get(PRIMARY_METRIC, {})},
        "reference": by_metric.get("test.force_mae"),
        "reference_rank": [r["metric"] for r in rows].index("test.force_mae") + 1,
        "similar_error": {"models": similar, "median_test_force_mae": median, **secondary},
        "screen": screen_against(metrics, stability, table["models"], rows),
        "ranking": [{k: r.get(k) for k in ("metric", "spearman_rho", "spearman_ci_low", "spearman_ci_high",
                                           "versus_reference_abs_rho_difference",
                                           "versus_reference_abs_rho_difference_ci_low",
                                           "versus_reference_abs_rho_difference_ci_high")} for r in rows],
    }
    if (out / "arms_campaign").is_dir():
        result["arms"] = arms_result(out)
    result["alarm"] = alarm_result(out)
    result["first_broken_hydrogens"] = {"aspirin": merged["first_broken_hydrogens"]}
    if (out / "chignolin_campaign").is_dir():  # item 6: its own molecule, so not among H1's models
        chignolin = correlation_documents(out, ["chignolin_campaign"])
        result["chignolin"] = {m: {"stability": {k: s[k] for k in ("n_runs", "n_stable", "mean_time_to_collapse_ps")},
                                   **{k: chignolin["model_metrics"][m].get(k) for k in CHIGNOLIN_METRICS}}
                               for m, s in chignolin["stability_per_model"].items()}
        result["first_broken_hydrogens"]["chignolin"] = chignolin["first_broken_hydrogens"]
    result["figures"] = write_figures(out, metrics, stability, table, merged["metric_units"],
                                      [PRIMARY_METRIC, "test.force_mae", *SCREEN_METRICS[:1],
                                       next((r["metric"] for r in rows), PRIMARY_METRIC)])
    from openmlff.core.atomic_io import atomic_write_json, jsonable

    result = jsonable(result, finite=True)  # strict JSON: NaN and inf as null
    atomic_write_json(out / "analysis.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "ranking"}, indent=1), flush=True)


def arm_survival(out: Path) -> dict[str, dict]:
    """Per parent: {arm: stability_of_runs} over the arms' and the active arm's campaigns."""
    survival = survival_by_model(out, ARM_CAMPAIGNS)
    return {parent: {label.split(".", 1)[1]: s for label, s in sorted(survival.items())
                     if label.startswith(parent + ".")} for parent in PARENTS}


def write_figures(out: Path, metrics: dict, stability: dict, table: dict, units: dict, panels: list[str]) -> list[str]:
    """The answers' figures, in docs/study/ for the default OUT (docs/study.md shows them), else in OUT/figures:
    each of `panels` (metrics) against the models' stable share, and Kaplan-Meier curves of the arms (per parent)
    and of chignolin's campaign."""
    from openmlff.report.campaign_plots import plot_scatter_panels, plot_survival_curves
    from openmlff.report.figures import save_png

    folder = ROOT / "docs" / "study" if out == DEFAULT_OUT else out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    rho = {r["metric"]: r["spearman_rho"] for r in table["rows"]}
    models = table["models"]
    scatter = [{"metric": m, "metric_unit": units.get(m, ""), "measure": "share_stable", "measure_unit": "",
                "x": [metrics[k].get(m) for k in models], "y": [stability[k]["share_stable"] for k in models],
                "labels": models, "rho": rho.get(m)} for m in dict.fromkeys(panels) if m in rho]
    written = [save_png(plot_scatter_panels(scatter), folder / "metrics_vs_stability.png")] if scatter else []
    curves = {f"survival_{parent}": arms for parent, arms in arm_survival(out).items() if arms}
    chignolin = survival_by_model(out, ("chignolin_campaign",))
    if chignolin:
        curves["survival_chignolin"] = chignolin
    written += [save_png(plot_survival_curves(c), folder / f"{name}.png") for name, c in curves.items()]
    return [str(p) for p in written]


def write_page(name: str, title: str, text: str) -> None:
    """docs/benchmarks/NAME.md (benchmarks/pages.py: date, processor, versions, this command, the text)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pages import write_result

    print(text, flush=True)
    say(f"wrote {write_result(name, title, text, True)}")


def models_table(out: Path) -> str:
    rows = training_summary(out)
    lines = ["The study's aspirin models (docs/study.md), trained by `protocols/study.py train`: the smaller of "
             f"{BUDGET_S:g} s (compiling included) and {MAX_EPOCHS} epochs, one thread, two trainings at a time on the "
             "two cores, early stopping after 60 epochs without improvement (the default). Validation: the split's 50 "
             "frames, the best epoch's EMA weights.", "",
             "| model | architecture | training frames | seed | epochs | training s | stopped | validation force MAE "
             "(kcal/mol/Å) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['architecture']} | {r['n_train']} | {r['seed']} | {r['epochs']} | "
                     f"{r['elapsed_s']:.0f} | {r['stop_reason']} | {r['val_force_mae_kcal_per_mol_per_A']:.3f} |")
    return "\n".join(lines) + "\n"


def stage_status(out: Path) -> None:
    print(models_table(out), flush=True)


# --- what git carries between sessions ----------------------------------------------------------------

#: Files of a finished campaign run that `keep` leaves out: trajectories and resume checkpoints (the analysis reads
#: summary.json, state.csv and the run records; a finished run is never resumed).
LEFT_OUT = ("*.dcd", "*.h5", "checkpoint*", ".lock*")


def kept_files(out: Path, six: Path) -> list[Path]:
    """What later stages and the analysis read, for git to carry: results/ is ignored and a new checkout starts
    without it (the first training of 2026-12-07 was lost so). Exported models and their training logs; the
    checkpoints that later stages continue from (the arms' parents, chignolin's ET, whose split its campaign reads);
    specs, picks, scans, labelled frames; every campaign's record and its finished runs' small files. Unfinished runs
    and replica batches are left out: a new checkout plans them afresh (their runs have no files yet)."""
    from fnmatch import fnmatch

    files = [*out.glob("*.json"), *(out / "bond_scan").glob("*.json"), *out.glob("models/*.log")]
    for folder in (*(job["folder"] for job in trained_models(out).values()), *(out / "arms").glob("*/*"),
                   *(out / "alarm").glob("*"), *(out / "chignolin").glob("*")):
        if (folder / "model.pt").is_file() or (folder / "committee.pt").is_file():  # finished trainings only
            files += [folder / name for name in ("model.pt", "committee.pt", "training_log.csv")]
    files += [trained_models(out)[p]["folder"] / "model.ckpt" for p in PARENTS]
    files += [out / "chignolin" / "et" / "model.ckpt", *(out / "arms").glob("*/*.npz"),
              *(out / "chignolin").glob("*.npz")]
    files += [six / "split.json", *six.glob("openmlff_*/model.pt"),
              *(Path(foreign_file(e)) for e in six_foreign(six).values())]
    for record in out.glob("*/campaign.json"):
        files.append(record)
        for run in (record.parent / "runs").glob("*"):
            if (run / "summary.json").is_file():
                files += [f for f in run.iterdir() if f.is_file() and not any(fnmatch(f.name, x) for x in LEFT_OUT)]
    return sorted({f for f in files if f.is_file()})


def six_foreign(six: Path) -> dict:
    """The six-model study's models of other codes (protocols/six_models.py's campaign entries), label -> entry."""
    sys.path.insert(0, str(ROOT / "protocols"))
    import six_models

    return six_models.foreign_models(six, SIX_MODELS_BUDGET_S, data_path(), six / "split.json")


def foreign_file(entry: dict) -> str:
    """The model file of a six-model study's entry of another code (openmm-ml's modelPath, MACE's model_paths)."""
    return entry.get("modelPath") or entry["model_paths"]


def stage_keep(out: Path, six: Path) -> None:
    """`git add -f` the kept files (kept_files), so that the next commit carries them to the next session."""
    files = kept_files(out, six)
    for first in range(0, len(files), 500):
        subprocess.run(["git", "add", "-f", "--", *map(str, files[first:first + 500])], cwd=ROOT, check=True)
    size = sum(f.stat().st_size for f in files) / 2**20
    say(f"keep: {len(files)} files ({size:.1f} MiB) added to git's index; commit them to carry them to the next "
        "session")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["train", "pilot", "campaign", "screen", "arms", "alarm", "active", "chignolin",
                                     "analyse", "status", "keep", "bond-scan"])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--workers", type=int, default=2, help="processes at a time, one thread each")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="train: the seeds to train; campaign, screen: the seeds whose models run (a campaign's spec grows)")
    p.add_argument("--six-models", default=str(ROOT / "results" / "six_models"),
                   help="campaign: protocols/six_models.py's results folder (its six models join the campaign)")
    p.add_argument("--model", help="bond-scan: the one model to scan (the screen stage runs this for every model)")
    p.add_argument("--temperature", type=float, default=None,
                   help="campaign: temperature in K (default: the pilot's; another is a change of plan)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    {"train": lambda: stage_train(out, args.workers, args.seeds),
     "pilot": lambda: stage_pilot(out, args.workers),
     "campaign": lambda: stage_campaign(out, args.workers, Path(args.six_models).resolve(), args.temperature,
                                        args.seeds),
     "screen": lambda: stage_screen(out, args.workers, Path(args.six_models).resolve(), args.seeds),
     "arms": lambda: stage_arms(out, args.workers, args.temperature),
     "alarm": lambda: stage_alarm(out, args.workers, args.temperature),
     "active": lambda: stage_active(out, args.workers, args.temperature),
     "chignolin": lambda: stage_chignolin(out, args.workers, args.temperature),
     "analyse": lambda: stage_analyse(out),
     "bond-scan": lambda: bond_scan_one(out, args.model),
     "status": lambda: stage_status(out),
     "keep": lambda: stage_keep(out, Path(args.six_models).resolve())}[args.stage]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
