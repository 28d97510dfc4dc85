"""Which force metric predicts MD stability? Models of deliberately different quality on aspirin, a
stability campaign from held-out conformations at 500 K, and the correlation of every metric with
the runs' fates, next to what Wang et al. (J. Chem. Phys. 159, 035101, 2023) report.

1. trains each architecture (ET, ViSNet, NequIP by default) with several wall-clock budgets on the
   shipped rMD17 aspirin frames (same seed and split: 950 train / 50 validation / 200 test), so the
   models range from poor to good, and exports each;
2. runs a campaign: every model x N held-out test conformations x seeds at 500 K, 0.5 fs
   (openmlff.campaign: local process pool, or --scheduler for a Dask cluster);
3. correlates every force metric (global, per element, FNM, maxima, share of bad frames; on the
   training, validation and test frames) with stability (share of stable runs, median time to
   collapse), and per start the cluster / neighbourhood metrics with its runs' fates (ROC AUC);
4. writes results/metrics_vs_stability/{campaign,correlation/report.html} and answer.txt: the
   metrics ranked by how well they predict stability here.

Everything resumes: trainings from their checkpoints, the campaign from its runs' checkpoints.
The defaults take about an hour on 2 CPU cores; --quick is a smaller version (about 15 minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pages import result_page  # noqa: E402

WANG_2023 = ("Wang et al. 2023 found the global force MAE a poor predictor of MD stability, while fine-grained "
             "metrics did better: the force-over-mass (FNM) errors of hydrogen atoms, maximum errors, and the "
             "ratio of bad points of the conformation clusters.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/metrics_vs_stability")
    p.add_argument("--architectures", nargs="+", default=["et", "visnet", "nequip"])
    p.add_argument("--budgets", type=float, nargs="+", default=[30.0, 120.0, 480.0], help="training budgets, s")
    p.add_argument("--starts", type=int, default=8, help="held-out starting conformations (>= 8)")
    p.add_argument("--seeds", type=int, default=2, help="MD seeds per start")
    p.add_argument("--length-ps", type=float, default=5.0, help="MD length per run, ps")
    p.add_argument("--temperature", type=float, default=500.0)
    p.add_argument("--workers", type=int, default=None, help="MD runs at a time (default: cores)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (default: local process pool)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for training (default: openmlff.core.threads' choice for the work, 1 for aspirin)")
    p.add_argument("--add-model", action="append", default=[], metavar="LABEL=MODEL.pt",
                   help="also put this exported model in the campaign (trained on the same data and split)")
    p.add_argument("--improvement-arms", default=None, metavar="DIR",
                   help="also put every arm of protocols/improve_stability.py's results folder DIR in the campaign "
                        "(models of similar force MAE but different fine-grained errors)")
    p.add_argument("--quick", action="store_true", help="ET and NequIP, budgets 20 and 90 s, 8 starts, 1 seed, 2 ps")
    args = p.parse_args(argv)
    if args.quick:
        args.architectures, args.budgets, args.seeds, args.length_ps = ["et", "nequip"], [20.0, 90.0], 1, 2.0
    args.starts = max(8, args.starts)
    return args


def say(msg: str) -> None:
    print(f"[metrics-vs-stability {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from openmlff.core.threads import set_threads  # first: openmlff sets OMP_WAIT_POLICY before torch starts OpenMP

    from openmlff.campaign import run_campaign
    from openmlff.campaign.correlate import correlate_campaign
    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.model_file.writer import export_checkpoint
    from openmlff.training import TrainingConfig, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = shipped_dataset_path()
    dataset = load_dataset(data_path)
    threads = set_threads(args.threads, atoms_per_call=TrainingConfig.batch_size * dataset.n_atoms)

    models = {}
    for architecture in args.architectures:
        for budget in args.budgets:
            label = f"{architecture}_{budget:g}s"
            say(f"[1/4] training {label}")
            config = TrainingConfig(architecture=architecture, seed=0, time_budget_s=budget, torch_threads=threads)
            result = train(dataset, out / "models" / label, config, progress=True)
            models[label] = str(export_checkpoint(result.checkpoint, out / "models" / label / "model.pt"))
            say(f"      {label}: {result.epochs} epochs, best validation force MAE "
                f"{result.best_val_force_mae_kcal_per_mol_per_A:.2f} kcal/mol/Å")
    if args.improvement_arms:
        found = sorted(Path(args.improvement_arms).glob("models/*/model.pt"))
        if not found:
            raise SystemExit(f"--improvement-arms {args.improvement_arms}: no models/*/model.pt; run "
                             "protocols/improve_stability.py first")
        args.add_model += [f"arm_{p.parent.name}={p}" for p in found]
    for item in args.add_model:
        label, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            raise SystemExit(f"--add-model {item!r}: expected LABEL=PATH of an exported model file")
        models[label] = path
    checkpoint = out / "models" / next(iter(models)) / "model.ckpt"
    from openmlff.training.checkpoint import read_checkpoint

    test_frames = read_checkpoint(checkpoint).split.test
    starts = [int(f) for f in np.random.default_rng(0).choice(test_frames, size=args.starts, replace=False)]

    steps = int(round(args.length_ps * 1000 / 0.5))
    spec = {"name": "aspirin_metrics_vs_stability", "models": {k: str(Path(v).resolve()) for k, v in models.items()},
            "starts": {"data": str(Path(data_path).resolve()), "frames": sorted(starts)}, "seeds": list(range(args.seeds)),
            "temperatures_K": [args.temperature],
            "md": {"steps": steps, "timestep_fs": 0.5, "report_interval_steps": 100, "checkpoint_interval_steps": 2000}}
    spec_path = out / "campaign.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    n_runs = len(models) * len(starts) * args.seeds
    say(f"[2/4] campaign: {len(models)} models x {len(starts)} starts x {args.seeds} seeds = {n_runs} runs of "
        f"{args.length_ps:g} ps at {args.temperature:g} K")
    run_campaign(spec_path, out=out / "campaign", executor="dask" if args.scheduler else "local",
                 scheduler_address=args.scheduler, n_workers=args.workers, retry_failed=True, progress=True)

    say("[3/4] correlating metrics with stability")
    doc = correlate_campaign(out / "campaign", out / "correlation")

    say("[4/4] answer")
    text = answer(doc)
    (out / "answer.txt").write_text(text)
    print(text, flush=True)
    return 0


def answer(doc: dict) -> str:
    """The metrics ranked by Spearman rho against each stability measure, with intervals, and the paper's finding."""
    level = doc.get("model_level") or {}
    lines = []
    for measure in ("median_time_to_collapse_ps", "share_stable"):
        lines.append(f"Which force metric predicts MD stability? Model level, Spearman rho against {measure} "
                     f"(a good predictor has rho < 0: larger error, less stable); the 8 best of all metrics:")
        rows = [r for r in level.get("rows", []) if r.get("stability_measure") == measure
                and r.get("spearman_rho") is not None and np.isfinite(r["spearman_rho"])]
        rows.sort(key=lambda r: (r["spearman_rho"], r.get("kendall_tau", 0.0)))
        for r in rows[:8]:
            lines.append(f"  {r['metric']:<28} rho {r['spearman_rho']:+.2f} [{r['spearman_ci_low']:+.2f}, "
                         f"{r['spearman_ci_high']:+.2f}]  tau {r['kendall_tau']:+.2f}")
        for name in ("test.force_mae", "test.force_max", "test.fnm_max", "test.H.fnm_max", "test.H.fnm_mae"):
            match = [r for r in rows if r["metric"] == name]
            if match:
                lines.append(f"  for comparison {name:<20} rho {match[0]['spearman_rho']:+.2f} "
                             f"(rank {rows.index(match[0]) + 1} of {len(rows)})")
    from openmlff.stability.correlation import similar_error_ranking

    lines.extend(similar_lines(similar_error_ranking(doc["model_metrics"], doc["stability_per_model"]), "models"))
    stab = doc["stability_per_model"]
    lines.append("Stability per model: " + ", ".join(
        f"{m} {s['n_stable']}/{s['n_runs']} stable, median time to collapse {s['median_time_to_collapse_ps']:.2f} ps"
        for m, s in sorted(stab.items())))
    lines.append(WANG_2023)
    lines.append(f"Runs: {doc['n_runs']}; horizon {doc['horizon_ps']:g} ps. With few models the intervals are wide: "
                 "read the ranking as evidence, not proof.")
    return "\n".join(lines) + "\n"


def similar_lines(similar: dict, what: str) -> list[str]:
    """The answer of openmlff.stability.correlation.similar_error_ranking in words: among models of similar
    MAE, do the fine-grained metrics rank stability better than the MAE?"""
    lines = [f"Among {what} of similar {similar['mae_metric']} (within ±{similar['tolerance']:.0%} of "
             f"{similar['median_mae']:.3f}): {', '.join(similar['models']) or 'none'}."]
    if similar.get("note"):
        return lines + ["  " + similar["note"]]
    for measure, better in similar["better_than_mae"].items():
        rows = sorted((r for r in similar["rows"] if r["measure"] == measure and np.isfinite(r["spearman_rho"])),
                      key=lambda r: r["spearman_rho"])
        if not rows:
            lines.append(f"  Spearman rho against {measure}: undefined (the stability or the metrics do not vary)")
            continue
        lines.append(f"  Spearman rho against {measure} (negative: larger error, less stable): "
                     + ", ".join(f"{r['metric']} {r['spearman_rho']:+.2f}" for r in rows))
        lines.append(f"  -> {'ranks stability better than the MAE: ' + ', '.join(better) if better else 'no fine-grained metric ranks stability better than the MAE'}"
                     f" ({len(similar['models'])} {what}: a hint, not a result)")
    return lines


if __name__ == "__main__":
    with result_page("metrics_vs_stability", "Which force metric predicts MD stability?"):
        code = main()
    sys.exit(code)
