"""Does a committee see a collapse coming? Uncertainty against error on held-out frames, and the trust alarm's
lead time before MD collapses, on rMD17 aspirin.

1. a committee of K ET models trained like protocols/improve_stability.py's baseline (50 training
   frames, 120 epochs, split seed 0; member k has seed k, so member 0 is that baseline, reused when
   its results folder is given), exported as one committee file;
2. on the 200 held-out test frames: Spearman rho of the committee's force spread against its force
   error (per frame and per atom) and the calibration curve (openmlff metrics on a committee);
3. a campaign driven by member 0 alone (so it collapses as the baseline does) from held-out starts at
   500 K, 0.5 fs, with the committee's spread at every report ([trust]); the threshold is the 95th
   percentile of the per-frame largest spread on the held-out frames, stated in the output;
4. the spread as a predictor of collapse (ROC AUC over runs) and the lead time of the first
   untrusted report before the collapse (openmlff correlate's trust_alarm).
Writes OUT/results.json and OUT/answer.txt. About 15 minutes on 2 cores; --quick: 8 starts, 2 ps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pages import result_page  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="results folder (default results/trust_alarm[_quick])")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--baseline", default="results/improve_stability/models/baseline/model.ckpt",
                   help="member 0 if it exists (protocols/improve_stability.py's baseline)")
    p.add_argument("--starts", type=int, default=16)
    p.add_argument("--length-ps", type=float, default=5.0)
    p.add_argument("--temperature", type=float, default=500.0)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--quick", action="store_true", help="8 starts, 2 ps")
    args = p.parse_args(argv)
    if args.quick:
        args.starts, args.length_ps = 8, 2.0
    args.out = args.out or ("results/trust_alarm_quick" if args.quick else "results/trust_alarm")
    return args


def say(msg: str) -> None:
    print(f"[trust-alarm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from openmlff.core.threads import set_threads

    from openmlff.core.atomic_io import atomic_write_json
    from openmlff.campaign import CampaignDirectory, run_campaign
    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.model_file.writer import export_committee
    from openmlff.md import read_run_summary
    from openmlff.stability.correlation import trust_alarm
    from openmlff.metrics.uncertainty import committee_spread, uncertainty_report
    from openmlff.training import TrainingConfig, train
    from openmlff.training.checkpoint import read_checkpoint

    t0 = time.perf_counter()
    set_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = shipped_dataset_path()
    dataset = load_dataset(data_path)
    base = TrainingConfig(n_train=50, n_val=50, n_test=200, seed=0, split_seed=0, warmup_steps=100, max_epochs=120,
                          early_stopping_patience_epochs=10_000, torch_threads=1)
    members = []
    for k in range(args.members):
        reuse = Path(args.baseline)
        if k == 0 and reuse.is_file():
            members.append(reuse)
            continue
        say(f"[1/4] training member {k} (seed {k})")
        cfg = TrainingConfig(**{**base.to_dict(), "seed": k})
        members.append(train(dataset, out / f"member_{k}", cfg, progress=False).checkpoint)
    committee = export_committee(members, out / "committee.pt")
    member0 = out / "member_0.pt"
    from openmlff.model_file.writer import export_checkpoint

    export_checkpoint(members[0], member0)
    split = read_checkpoint(members[0]).split
    test = dataset.subset(split.test)

    say("[2/4] uncertainty against error on the held-out frames")
    unc = uncertainty_report(committee, test)
    threshold = float(np.percentile(committee_spread(committee, test.R).max(axis=1), 95))

    starts = sorted(int(f) for f in np.random.default_rng(0).choice(split.test, size=args.starts, replace=False))
    steps = int(round(args.length_ps * 1000 / 0.5))
    spec = {"name": "trust_alarm", "models": {"member_0": str(member0.resolve())},
            "starts": {"data": str(Path(data_path).resolve()), "frames": starts}, "seeds": [0],
            "temperatures_K": [args.temperature],
            "md": {"steps": steps, "timestep_fs": 0.5, "report_interval_steps": 100, "checkpoint_interval_steps": 2000},
            "trust": {"committee": str(committee.resolve()), "threshold_kcal_per_mol_per_A": round(threshold, 4)}}
    (out / "campaign.json").write_text(json.dumps(spec, indent=1))
    say(f"[3/4] campaign: member 0 from {len(starts)} held-out starts, {args.length_ps:g} ps at {args.temperature:g} K, "
        f"committee spread at each report, threshold {threshold:.3f} kcal/mol/Å")
    run_campaign(out / "campaign.json", out=out / "campaign", n_workers=args.workers, retry_failed=True, progress=True,
                 status_interval_s=120)
    where = CampaignDirectory(out / "campaign")
    runs = [{"run_id": r.run_id, "start": r.start, "summary": read_run_summary(where.run_dir(r.run_id))}
            for r in where.spec().expand()]
    say("[4/4] the spread as a predictor of collapse, and the alarm's lead time")
    alarm = trust_alarm(runs, steps * 0.5e-3, n_bootstrap=2000)
    doc = {"members": [str(m) for m in members], "threshold_kcal_per_mol_per_A": threshold,
           "threshold_rule": "95th percentile of the per-frame largest committee force spread on the 200 test frames",
           "held_out_uncertainty": {k: unc[k] for k in ("spearman", "calibration", "units")},
           "alarm": alarm, "settings": vars(args), "wall_time_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "results.json", doc)
    sp, roc = unc["spearman"], alarm["roc"]
    lines = [f"Committee of {len(members)} ET models (50 training frames each, one split), {len(test.R)} held-out frames:",
             f"  Spearman rho, spread vs error: per frame (mean spread vs force MAE) {sp['frame_mean_uncertainty_vs_force_mae']:+.2f}, "
             f"per frame (max spread vs max error) {sp['frame_max_uncertainty_vs_max_error']:+.2f}, "
             f"per atom {sp['atom_uncertainty_vs_error']:+.2f}",
             f"  calibration (RMS spread -> RMS error, kcal/mol/Å, {unc['calibration']['bins']} bins): " + ", ".join(
                 f"{a:.2f}->{b:.2f}" for a, b in zip(unc["calibration"]["rms_uncertainty"], unc["calibration"]["rms_error"])),
             f"Campaign: {alarm['n_runs']} runs of member 0, {alarm['n_collapsed']} collapsed within {steps * 0.5e-3:g} ps.",
             f"  largest spread of a run as a predictor of its collapse: ROC AUC {roc['roc_auc']:.2f} "
             f"[{roc['roc_auc_ci_low']:.2f}, {roc['roc_auc_ci_high']:.2f}]",
             f"  threshold {threshold:.3f} kcal/mol/Å: lead times before collapse "
             f"{[round(t, 3) for t in alarm['lead_times_ps']]} ps (median "
             f"{'n/a' if alarm['median_lead_time_ps'] is None else round(alarm['median_lead_time_ps'], 3)}); "
             f"warned before collapse: {alarm['warned_before_collapse']}; false alarms: {alarm['false_alarms']} of "
             f"{alarm['n_runs'] - alarm['n_collapsed']} runs without a collapse",
             f"Wall time {doc['wall_time_s'] / 60:.1f} min."]
    text = "\n".join(lines) + "\n"
    (out / "answer.txt").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    with result_page("trust_alarm", "Does a committee see a collapse coming?"):
        code = main()
    sys.exit(code)
