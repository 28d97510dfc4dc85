"""Quick start: from the shipped rMD17 aspirin frames to MD in OpenMM and back to force metrics.

1. train ET on the CPU within a time budget (frames split seeded into train / validation / test),
2. export it to TorchScript (nm in, kJ/mol out, metadata inside),
3. measure the force metrics on the held-out test frames (kcal/mol/Å),
4. run Langevin MD at 500 K with a 0.5 fs step from held-out test conformations, in parallel
   (a one-model stability campaign), each watched by the bond-deviation stability monitor,
5. write results.json and summary.txt: which runs held, for how long, and the metrics.

Everything lands in one results folder; running the script again resumes what was interrupted
(training from its checkpoint, each MD run from its own) and skips what is finished.
Run it with `bash protocols/quickstart.sh` (installs what it needs first).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from openmlff.core.units import FS_IN_PS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pages import result_page  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/quickstart_aspirin", help="results folder")
    p.add_argument("--page", action="store_true", help="also record the run as docs/benchmarks/quickstart.md "
                                                      "(benchmarks/pages.py; for the project's own measurements)")
    p.add_argument("--time-budget", type=float, default=540.0, help="training wall-clock budget in s (default 540)")
    p.add_argument("--starts", type=int, default=4, help="MD starting conformations taken from the test frames (>= 4)")
    p.add_argument("--md-steps", type=int, default=20000, help="MD steps per run (default 20000 = 10 ps at 0.5 fs)")
    p.add_argument("--temperature", type=float, default=500.0, help="K")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="MD runs at a time")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for training (default: openmlff.core.threads' choice for the work, 1 for aspirin)")
    p.add_argument("--platform", default=None, help="OpenMM platform (default: fastest available)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def say(msg: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from openmlff.core.threads import set_threads  # first: openmlff sets OMP_WAIT_POLICY before torch starts OpenMP

    from openmlff.campaign import CampaignDirectory, CampaignSpec, DatasetFrames, run_campaign
    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.model_file.writer import export_checkpoint
    from openmlff.md import read_run_summary
    from openmlff.metrics.report import metrics_report
    from openmlff.training import TrainingConfig, train

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = shipped_dataset_path()
    dataset = load_dataset(data_path)
    threads = set_threads(args.threads, atoms_per_call=TrainingConfig.batch_size * dataset.n_atoms)
    say(f"data: {dataset.n_frames} frames of {dataset.name} ({dataset.n_atoms} atoms) from {data_path.name}, "
        f"{dataset.provenance.get('level_of_theory', 'level of theory unknown')}")

    say(f"[1/5] training ET on the CPU, budget {args.time_budget:.0f} s ({threads} thread(s))")
    config = TrainingConfig(architecture="et", seed=args.seed, time_budget_s=args.time_budget, torch_threads=threads)
    result = train(dataset, out / "training", config, progress=True)
    say(f"      {result.epochs} epochs in {result.elapsed_s:.0f} s ({result.stop_reason}); best validation force MAE "
        f"{result.best_val_force_mae_kcal_per_mol_per_A:.3f} kcal/mol/Å")

    say("[2/5] exporting to TorchScript")
    model_path = export_checkpoint(result.checkpoint, out / "model.pt")
    say(f"      {model_path}")

    say("[3/5] force metrics on the held-out test frames")
    from openmlff.training.checkpoint import read_checkpoint

    split = read_checkpoint(result.checkpoint).split
    test_idx, train_idx = split.test, split.train
    # The schema of `openmlff metrics --frames test`, conformation clusters included.
    metrics = metrics_report(model_path, dataset.subset(test_idx), frames_label="test", dataset_frames=test_idx,
                             cluster_seed=args.seed)
    _write_json(out / "metrics_test.json", metrics)
    g = metrics["global"]
    say(f"      {len(test_idx)} test frames: force MAE {g['force_mae']:.3f}, RMSE {g['force_rmse']:.3f}, "
        f"max {g['force_max']:.3f} kcal/mol/Å; FNM MAE {g['fnm_mae']:.4f} (kcal/mol/Å)/Da; "
        f"energy MAE {g['energy_mae']:.3f} kcal/mol")

    n_starts = max(4, args.starts)
    starts = [int(f) for f in test_idx[:n_starts]]
    say(f"[4/5] MD at {args.temperature:g} K, {args.timestep:g} fs, {args.md_steps} steps "
        f"({args.md_steps * args.timestep * FS_IN_PS:g} ps) from {n_starts} test conformations, "
        f"{args.workers} at a time")
    # A campaign of one model: the runs go to a process pool, each resumes from its own checkpoint, and the
    # bond reference lengths are the mean over the training frames.
    spec = CampaignSpec(
        name="md", models={"et": str(Path(model_path).resolve())},
        starts=DatasetFrames(data=str(data_path), frames=tuple(starts)),
        reference=DatasetFrames(data=str(data_path), frames=tuple(int(i) for i in train_idx)),
        seeds=[args.seed], temperatures_K=[args.temperature],
        md={"timestep_fs": args.timestep, "steps": args.md_steps, "platform": args.platform,
            "report_interval_steps": 100, "checkpoint_interval_steps": 2000})
    t_md = time.perf_counter()
    campaign = run_campaign(spec, out=out / "md", n_workers=args.workers, progress=True, status_interval_s=30.0)
    runs = []
    for k, run in enumerate(spec.expand()):
        run_dir = CampaignDirectory(campaign.directory).run_dir(run.run_id)
        summary = read_run_summary(run_dir)
        if summary is None:
            raise RuntimeError(f"{run_dir}: the run did not finish (see its error.json)")
        runs.append({"start": k, "frame": run.frame, "run_dir": str(run_dir), **summary.to_dict()})

    say("[5/5] writing results")
    results = _results(args, dataset, data_path, result, model_path, metrics, runs, time.perf_counter() - t_start,
                       time.perf_counter() - t_md)
    _write_json(out / "results.json", results)
    text = _summary_text(results)
    (out / "summary.txt").write_text(text)
    print(text, flush=True)
    say(f"done in {time.perf_counter() - t_start:.0f} s; results in {out}/")
    return 0


def _results(args, dataset, data_path, result, model_path, metrics, runs, wall_s, md_wall_s) -> dict:
    from openmlff import __version__

    stable = [r for r in runs if r["stable"]]
    collapse_times = [r["collapse_time_ps"] for r in runs if not r["stable"]]
    keys = ("force_mae", "force_rmse", "force_max", "fnm_mae", "fnm_rmse", "fnm_max", "energy_mae", "energy_rmse")
    g = metrics["global"]
    return {
        "openmlff_version": __version__,
        "data": {"file": str(data_path), "frames": dataset.n_frames, "atoms": dataset.n_atoms,
                 "level_of_theory": dataset.provenance.get("level_of_theory")},
        "training": {"checkpoint": str(result.checkpoint), "epochs": result.epochs, "wall_time_s": round(result.elapsed_s, 1),
                     "stop_reason": result.stop_reason, "best_epoch": result.best_epoch,
                     "best_val_force_mae_kcal_per_mol_per_A": result.best_val_force_mae_kcal_per_mol_per_A,
                     "best_val_energy_mae_kcal_per_mol": result.best_val_energy_mae_kcal_per_mol},
        "model": str(model_path),
        "test_metrics": {"units": metrics["units"], "n_frames": g["n_frames"], **{k: g[k] for k in keys},
                         "elements": metrics["elements"]},
        "md": {"temperature_K": args.temperature, "timestep_fs": args.timestep, "steps_per_run": args.md_steps,
               "length_ps_per_run": args.md_steps * args.timestep * FS_IN_PS, "runs": runs,
               "n_runs": len(runs), "n_stable": len(stable),
               "median_time_to_collapse_ps": float(np.median(collapse_times)) if collapse_times else None,
               "wall_time_s": round(md_wall_s, 1)},
        "wall_time_s": round(wall_s, 1),
    }


def _summary_text(res: dict) -> str:
    m, md, tr = res["test_metrics"], res["md"], res["training"]
    u = m["units"]
    lines = [
        "openmlff quick start: ET on rMD17 aspirin",
        f"  data      {res['data']['frames']} frames, {res['data']['atoms']} atoms, {res['data']['level_of_theory']}",
        f"  training  {tr['epochs']} epochs, {tr['wall_time_s']:.0f} s ({tr['stop_reason']})",
        f"  test set  {m['n_frames']} unseen frames",
        f"            force MAE  {m['force_mae']:.3f} {u['force']}   RMSE {m['force_rmse']:.3f}   max {m['force_max']:.3f}",
        f"            FNM MAE    {m['fnm_mae']:.4f} {u['fnm']}   max {m['fnm_max']:.4f}",
        f"            energy MAE {m['energy_mae']:.3f} {u['energy']}",
        "            per element (force MAE, FNM MAE): " + ", ".join(
            f"{s} {v['force_mae']:.3f} / {v['fnm_mae']:.4f}" for s, v in m["elements"].items()),
        f"  MD        {md['n_runs']} runs at {md['temperature_K']:g} K, {md['timestep_fs']:g} fs, "
        f"{md['length_ps_per_run']:g} ps each: {md['n_stable']} stable",
    ]
    for r in md["runs"]:
        if r["stable"]:
            fate = f"stable for {r['steps_completed'] * md['timestep_fs'] * FS_IN_PS:g} ps"
        else:
            bond = r.get("first_broken_bond") or {}
            where = f", first broken bond {bond.get('elements')} atoms {bond.get('atoms')}" if bond else ""
            fate = f"COLLAPSED at {r['collapse_time_ps']:.3f} ps ({r['collapse_reason']}{where})"
        lines.append(f"            start {r['start']} (test frame {r['frame']}): {fate}, {r['ns_per_day']:.2f} ns/day")
    lines.append(f"  wall time {res['wall_time_s']:.0f} s")
    return "\n".join(lines) + "\n"


def _write_json(path: Path, obj) -> None:
    from openmlff.core.atomic_io import atomic_write_json

    atomic_write_json(path, obj)


if __name__ == "__main__":
    with result_page("quickstart", "The quick start: aspirin from shipped frames to MD and back",
                     enabled="--page" in sys.argv):
        code = main()
    sys.exit(code)
