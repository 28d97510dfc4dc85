"""Do metric-guided methods make an MLFF's MD more stable? Each method against its control, on rMD17 aspirin.

The protocol (issue 12; Wang et al., J. Chem. Phys. 159, 035101, 2023, third result):

1. baseline: ET with the MSE loss on few of the shipped rMD17 aspirin frames (--n-train, default 50;
   50 validation and 200 test frames, seed 0) for a fixed number of epochs (--epochs, default 120),
   so that it collapses in a fair share of the runs at 500 K, 0.5 fs within the horizon. Calibrated
   with --calibrate (8 starts, 5 ps): 50 frames and 200 epochs collapsed in 2 of 8 runs, 100 frames
   and 200 epochs in 0 of 8, 50 frames and 120 epochs in 3 of 8 (0.1-0.8 ps), the default. The 900 frames
   outside its split are the pool of unexplored labelled data.
2. arms, each with the same data and the same number of optimiser steps as its control (equal CPU
   budget: one thread each, the pair trained side by side):
     fnm_loss          FNM loss from scratch                 control: baseline (MSE from scratch)
     finetune_frames   fine-tuned, frames reweighted         control: finetune_plain (same epochs, uniform)
     finetune_clusters fine-tuned, clusters reweighted       control: finetune_plain
     recruit_clusters  + N pool frames picked by clusters,   control: recruit_random (+ N random pool
                       continued training                             frames, same epochs)
   through the CLI forms users run (`train --loss`, `finetune --reweight`, `recruit`, `train
   --continue-from --add-data`);
3. one stability campaign: every arm from the same held-out starting conformations (test frames) and
   seeds (--starts x --seeds runs per arm, default 16 x 1), 500 K, 0.5 fs, --length-ps;
4. per arm: share of stable runs with its Wilson 95 % interval, Kaplan-Meier median time to collapse,
   the force metrics on the 200 held-out test frames (force MAE, max, FNM MAE, H FNM MAE, energy MAE);
   per method a two-sided log-rank test against its control;
5. metrics against stability over the arms (openmlff correlate on the campaign), and whether, among
   arms of similar held-out force MAE, H FNM, maximum errors or the bad-frame share rank stability
   better than the MAE;
6. writes OUT/report.html (the campaign report with survival curves), OUT/results.json, OUT/answer.txt.

A method that does not beat its control is reported as such. Everything resumes (trainings, the
recruited files, the campaign). Defaults take about an hour on 2 CPU cores; --quick (4 starts,
2 ps, fewer epochs) about 12 minutes, and is too small to decide anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pages import result_page  # noqa: E402

#: arm -> its control (None: the baseline itself).
CONTROLS = {"baseline": None, "fnm_loss": "baseline", "finetune_plain": None, "finetune_frames": "finetune_plain",
            "finetune_clusters": "finetune_plain", "recruit_random": None, "recruit_clusters": "recruit_random"}
HELD_OUT = ("force_mae", "force_max", "fnm_mae", "H.fnm_mae", "H.fnm_max", "energy_mae")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="results folder (default results/improve_stability, with --quick "
                                               "results/improve_stability_quick)")
    p.add_argument("--n-train", type=int, default=50, help="baseline training frames (default 50)")
    p.add_argument("--epochs", type=int, default=120, help="epochs of the baseline and the FNM arm (default 120)")
    p.add_argument("--finetune-epochs", type=int, default=60, help="epochs of every fine-tuning arm (default 60)")
    p.add_argument("--recruit", type=int, default=50, help="frames recruited from the pool (default 50)")
    p.add_argument("--continue-epochs", type=int, default=60, help="epochs of continued training (default 60)")
    p.add_argument("--starts", type=int, default=16, help="held-out starting conformations (default 16)")
    p.add_argument("--seeds", type=int, default=1, help="MD seeds per start (default 1)")
    p.add_argument("--length-ps", type=float, default=5.0, help="MD horizon per run in ps (default 5)")
    p.add_argument("--temperature", type=float, default=500.0, help="K (default 500)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="jobs at a time (default 2)")
    p.add_argument("--calibrate", action="store_true",
                   help="train the baseline only and run it from the starts: its collapse share within the horizon "
                        "(aim for 30-80 %%); the full protocol reuses the trained baseline")
    p.add_argument("--quick", action="store_true",
                   help="4 starts, 2 ps, 20 epochs of fine-tuning and continued training: a smoke test of the "
                        "whole protocol, too small to decide anything")
    args = p.parse_args(argv)
    if args.quick:
        args.starts, args.seeds, args.length_ps = 4, 1, 2.0
        args.finetune_epochs, args.continue_epochs = 20, 20
    args.out = args.out or ("results/improve_stability_quick" if args.quick else "results/improve_stability")
    return args


def say(msg: str) -> None:
    print(f"[improve-stability {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def openmlff_cli(out: Path, name: str, *arguments) -> float:
    """Run `python -m openmlff ARGUMENTS` (one thread), output into OUT/logs/NAME.log; the wall time in s."""
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log, "a", encoding="utf-8") as fh:
        done = subprocess.run([sys.executable, "-m", "openmlff", *map(str, arguments)], stdout=fh,
                              stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise SystemExit(f"openmlff {arguments[0]} for {name} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - t0


def train_arms(args, out: Path, data: Path, only=None) -> dict:
    """Train every arm (in pairs, side by side) and export it; returns arm -> {model, wall_s, training_frames}.
    only: train and export just these arms."""
    models = out / "models"
    common = ["--threads", "1", "--quiet"]
    scratch = ["--data", data, "--n-train", args.n_train, "--n-val", 50, "--n-test", 200, "--seed", 0,
               "--warmup-steps", 100, "--max-epochs", args.epochs, "--early-stopping-patience-epochs", 10_000, *common]
    baseline = models / "baseline" / "model.ckpt"
    fine = ["--max-epochs", args.finetune_epochs, *common]
    cont = ["--data", data, "--continue-from", baseline, "--max-epochs", args.continue_epochs, "--warmup-steps", 50,
            "--learning-rate", 2.5e-4, "--early-stopping-patience-epochs", 10_000, *common]

    def recruit_then_train(strategy):
        def job():
            picked = models / f"recruited_{strategy}.npz"
            wall = 0.0
            if not picked.exists():
                wall += openmlff_cli(out, f"recruit_{strategy}_pick", "recruit", baseline, "--pool", data, "--count",
                                     args.recruit, "--strategy", strategy, "--out", picked, "--threads", 1, "--quiet")
            return wall + openmlff_cli(out, f"recruit_{strategy}", "train", "--out", models / f"recruit_{strategy}",
                                       "--add-data", picked, *cont)
        return job

    stage_one = {
        "baseline": lambda: openmlff_cli(out, "baseline", "train", "--out", models / "baseline", "--loss", "mse", *scratch),
        "fnm_loss": lambda: openmlff_cli(out, "fnm_loss", "train", "--out", models / "fnm_loss", "--loss", "fnm", *scratch),
    }
    stage_two = {f"finetune_{rule}": (lambda rule=rule: openmlff_cli(
        out, f"finetune_{rule}", "finetune", baseline, "--reweight", "none" if rule == "plain" else rule,
        "--out", models / f"finetune_{rule}", *fine)) for rule in ("plain", "frames", "clusters")}
    stage_two.update({f"recruit_{s}": recruit_then_train(s) for s in ("random", "clusters")})
    walls = {}
    for stage, jobs in (("baseline and FNM loss", stage_one), ("fine-tuning and recruiting", stage_two)):
        jobs = {k: v for k, v in jobs.items() if only is None or k in only}
        if not jobs:
            continue
        say(f"[1/5] training: {stage} ({', '.join(jobs)}), {args.workers} at a time, 1 thread each")
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            futures = {name: pool.submit(job) for name, job in jobs.items()}
            walls.update({name: f.result() for name, f in futures.items()})
    arms = {}
    for name in (only or CONTROLS):
        ckpt = models / name / "model.ckpt"
        model = models / name / "model.pt"
        if not model.exists() or model.stat().st_mtime < ckpt.stat().st_mtime:
            openmlff_cli(out, f"{name}_export", "export", ckpt, "--out", model)
        from openmlff.training.checkpoint import read_checkpoint

        state = read_checkpoint(ckpt).state
        arms[name] = {"model": str(model.resolve()), "control": CONTROLS[name],
                      "training_frames": len(state["split"]["train"]), "epochs": state["epoch"],
                      "optimizer_steps": state["step"], "training_wall_s": round(state["elapsed_s"], 1),
                      "this_session_wall_s": round(walls.get(name, 0.0), 1), "loss": state["config"]["loss"],
                      "origin": (state.get("origin") or {}).get("kind", "from scratch")}
    return arms


def held_out_metrics(arms: dict, data: Path) -> dict:
    """arm -> force metrics on the baseline's 200 test frames (kcal/mol/Å, (kcal/mol/Å)/Da, kcal/mol)."""
    from openmlff.data import load_dataset
    from openmlff.metrics.evaluation import evaluate_model
    from openmlff.training.checkpoint import read_checkpoint

    dataset = load_dataset(data)
    test = read_checkpoint(Path(arms["baseline"]["model"]).with_name("model.ckpt")).split.test
    out = {}
    for name, arm in arms.items():
        ev = evaluate_model(arm["model"], dataset.subset(test), include_frames=False)
        out[name] = {"force_mae": ev["force_mae"], "force_max": ev["force_max"], "fnm_mae": ev["fnm_mae"],
                     "H.fnm_mae": ev["elements"]["H"]["fnm_mae"], "H.fnm_max": ev["elements"]["H"]["fnm_max"],
                     "energy_mae": ev["energy_mae"]}
        units = ev["units"]
    return {"frames": int(len(test)), "units": units, "arms": out}


def stability_per_arm(campaign_dir: Path, arms: dict, horizon_ps: float) -> dict:
    from openmlff.campaign import CampaignDirectory
    from openmlff.md import read_run_summary
    from openmlff.stability.runs import share_stable_interval, stability_of_runs

    where = CampaignDirectory(campaign_dir)
    summaries = {name: {} for name in arms}
    for run in where.spec().expand():
        summary = read_run_summary(where.run_dir(run.run_id))
        if summary is not None:
            summaries[run.model][run.run_id] = summary
    out = {}
    for name, runs in summaries.items():
        s = stability_of_runs(runs, horizon_ps)
        s["share_stable_ci95"] = list(share_stable_interval(s["n_stable"], s["n_runs"]))
        out[name] = s
    return out


def comparisons(stability: dict) -> list[dict]:
    from openmlff.stability.runs import comparison_row

    return [comparison_row(method, control, stability[method], stability[control])
            for method, control in CONTROLS.items() if control is not None]


def write_answer(out: Path, arms: dict, held_out: dict, stability: dict, rows: list[dict], correlation_answer: str,
                 settings: dict) -> str:
    """answer.txt: the table of arms, each method against its control, and the metrics-vs-stability answer."""
    u = held_out["units"]
    lines = [f"Metric-guided improvement on rMD17 aspirin: {settings['runs_per_arm']} runs per arm, "
             f"{settings['temperature_K']:g} K, 0.5 fs, horizon {settings['horizon_ps']:g} ps; "
             f"held-out metrics on {held_out['frames']} test frames.",
             f"{'arm':<18} {'frames':>6} {'steps':>6} {'train s':>8} {'F MAE':>7} {'H FNM MAE':>10} {'F max':>7} "
             f"{'stable [95% CI]':>22} {'KM median ps':>12} {'log-rank p':>10}  vs control"]
    p_of = {r["method"]: r for r in rows}
    for name, arm in arms.items():
        m, s = held_out["arms"][name], stability[name]
        lo, hi = s["share_stable_ci95"]
        km = s["km_median_time_to_collapse_ps"]
        cmp = p_of.get(name)
        p = "" if cmp is None or cmp["logrank_p"] is None else f"{cmp['logrank_p']:.3f}"
        lines.append(f"{name:<18} {arm['training_frames']:>6} {arm['optimizer_steps']:>6} {arm['training_wall_s']:>8.0f} "
                     f"{m['force_mae']:>7.3f} {m['H.fnm_mae']:>10.4f} {m['force_max']:>7.2f} "
                     f"{s['n_stable']:>3}/{s['n_runs']:<3}{s['share_stable']:.2f} [{lo:.2f}, {hi:.2f}] "
                     f"{'n/a' if km is None else f'{km:.2f}':>12} {p:>10}  {arm['control'] or '-'}")
    lines.append(f"Units: force {u['force']}, FNM {u['fnm']}; 'train s' is the arm's own training wall time "
                 "(fine-tuned and continued arms start from the baseline, whose time is not included).")
    for r in rows:
        verdict = (f"no difference to test ({r['note']})" if r["logrank_p"] is None else
                   f"{'longer survival than' if r['better'] == 'method' else 'shorter survival than' if r['better'] == 'control' else 'the same survival as'} "
                   f"{r['control']}, log-rank p = {r['logrank_p']:.3f}"
                   + (" (significant at 0.05)" if r["logrank_p"] < 0.05 else " (not significant at 0.05)"))
        lines.append(f"  {r['method']}: {verdict}")
    lines.append("")
    lines.append(correlation_answer)
    text = "\n".join(lines) + "\n"
    (out / "answer.txt").write_text(text, encoding="utf-8")
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    from openmlff.core.threads import set_threads  # first: openmlff sets OMP_WAIT_POLICY before torch starts OpenMP

    from openmlff.core.atomic_io import atomic_write_json
    from openmlff.core.versions import processor_name
    from openmlff.campaign import run_campaign
    from openmlff.campaign.correlate import correlate_campaign
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.report.campaign_page import write_campaign_report
    from openmlff.training.checkpoint import read_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from metrics_vs_stability import answer as correlation_answer

    from openmlff.stability.correlation import similar_error_ranking

    t0 = time.perf_counter()
    set_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = shipped_dataset_path()
    arms = train_arms(args, out, data, only=["baseline"] if args.calibrate else None)
    test = read_checkpoint(Path(arms["baseline"]["model"]).with_name("model.ckpt")).split.test
    starts = sorted(int(f) for f in np.random.default_rng(0).choice(test, size=args.starts, replace=False))
    steps = int(round(args.length_ps * 1000 / 0.5))
    horizon_ps = steps * 0.5 / 1000
    name = "calibration" if args.calibrate else "campaign"
    spec = {"name": "aspirin_improve_stability" + ("_calibration" if args.calibrate else ""), "models": {a: arm["model"] for a, arm in arms.items()},
            "starts": {"data": str(Path(data).resolve()), "frames": starts}, "seeds": list(range(args.seeds)),
            "temperatures_K": [args.temperature],
            "md": {"steps": steps, "timestep_fs": 0.5, "report_interval_steps": 100, "checkpoint_interval_steps": 2000}}
    spec_path = out / f"{name}.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    n_runs = len(arms) * len(starts) * args.seeds
    say(f"[3/5] {name}: {len(arms)} arms x {len(starts)} held-out starts x {args.seeds} seeds = {n_runs} runs of "
        f"{horizon_ps:g} ps at {args.temperature:g} K")
    run_campaign(spec_path, out=out / name, n_workers=args.workers, retry_failed=True, progress=True,
                 status_interval_s=120)
    if args.calibrate:
        s = stability_per_arm(out / name, arms, horizon_ps)["baseline"]
        lo, hi = s["share_stable_ci95"]
        say(f"calibration: the baseline collapsed in {s['n_collapsed']} of {s['n_runs']} runs within {horizon_ps:g} ps "
            f"(stable share {s['share_stable']:.2f} [{lo:.2f}, {hi:.2f}]); collapse times "
            f"{sorted(t for t, c in zip(s['times_ps'], s['collapsed']) if c)} ps")
        return 0
    say("[2/5] held-out force metrics of every arm")
    held_out = held_out_metrics(arms, data)

    say("[4/5] stability per arm, each method against its control")
    stability = stability_per_arm(out / "campaign", arms, horizon_ps)
    rows = comparisons(stability)
    say("[5/5] metrics against stability over the arms (openmlff correlate)")
    doc = correlate_campaign(out / "campaign", out / "correlation", n_bootstrap=1000, progress=False)
    similar = similar_error_ranking(doc["model_metrics"], doc["stability_per_model"])
    settings = {"n_train": args.n_train, "epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
                "recruit": args.recruit, "continue_epochs": args.continue_epochs, "starts": starts,
                "seeds": args.seeds, "runs_per_arm": len(starts) * args.seeds, "horizon_ps": horizon_ps,
                "temperature_K": args.temperature, "timestep_fs": 0.5, "quick": args.quick,
                "processor": f"{processor_name()}, {os.cpu_count()} cores", "threads_per_job": 1, "jobs_at_a_time": args.workers}
    metrics_table = {a: {f"test.{k}": v for k, v in m.items()} for a, m in held_out["arms"].items()}
    u = held_out["units"]
    units = {f"test.{k}": (u["energy"] if k == "energy_mae" else u["fnm"] if "fnm" in k else u["force"]) for k in HELD_OUT}
    notes = [f"Arms and controls: {', '.join(f'{m} vs {c}' for m, c in CONTROLS.items() if c)}.",
             f"{len(starts)} held-out starts x {args.seeds} seeds per arm, {args.temperature:g} K, 0.5 fs, "
             f"horizon {horizon_ps:g} ps." + (" Quick mode: too few runs to decide anything." if args.quick else ""),
             "The metrics-vs-stability correlation over these arms: correlation/report.html."]
    write_campaign_report(out / "report.html", title="openmlff: metric-guided improvement of MD stability (aspirin)",
                          metrics_table=metrics_table, metric_units=units, stability_per_model=stability,
                          comparisons=rows, survival=True, notes=notes, figures_dir=out / "figures")
    text = write_answer(out, arms, held_out, stability, rows, correlation_answer(doc), settings)
    wall = time.perf_counter() - t0
    atomic_write_json(out / "results.json", {
        "settings": settings, "arms": arms, "held_out": held_out,
        "stability": {a: {k: v for k, v in s.items() if k not in ("run_ids",)} for a, s in stability.items()},
        "comparisons": rows, "similar_mae_ranking": similar, "wall_time_s": round(wall, 1),
        "wall_time_note": "this invocation only; resumed work done earlier is not counted"})
    print(text, flush=True)
    say(f"done in {wall / 60:.1f} min: {out / 'report.html'}, {out / 'results.json'}, {out / 'answer.txt'}")
    return 0


if __name__ == "__main__":
    with result_page("improve_stability", "Metric-guided repairs against their controls: MD stability"):
        code = main()
    sys.exit(code)
