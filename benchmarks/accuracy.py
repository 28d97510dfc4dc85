"""Accuracy of each architecture on the shipped rMD17 aspirin frames, same split, same CPU budget.

Trains ET, ViSNet and NequIP (CPU presets) with the same seed, split (950 train / 50 validation /
200 test) and wall-clock budget, exports each, and prints a table of parameters, training time,
epochs and the energy and force errors on the 200 test frames none of them saw.

    python benchmarks/accuracy.py [--time-budget 900] [--threads 1] [--parallel] [--out results/accuracy]

--parallel trains the architectures at the same time (one process each, --threads torch threads
each): on a 2-core machine three processes share two cores, so each gets less than its budget
of CPU; the table says how many epochs each managed.
"""

from __future__ import annotations

import sys

import argparse
import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pages import result_page  # noqa: E402  (benchmarks/pages.py)

ARCHITECTURES = ("et", "visnet", "nequip")


def train_and_measure(architecture: str, out: str, time_budget: float, threads: int, seed: int) -> dict:
    """Train one architecture, export it, and measure it on the test frames; returns one table row."""
    import torch

    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.model_file.writer import export_checkpoint, read_model_metadata
    from openmlff.metrics.evaluation import evaluate_model
    from openmlff.training import TrainingConfig, train

    torch.set_num_threads(threads)
    dataset = load_dataset(shipped_dataset_path())
    run_dir = Path(out) / architecture
    config = TrainingConfig(architecture=architecture, seed=seed, time_budget_s=time_budget, torch_threads=threads)
    result = train(dataset, run_dir, config, progress=False)
    model = export_checkpoint(result.checkpoint, run_dir / "model.pt")
    from openmlff.training.checkpoint import read_checkpoint

    split = read_checkpoint(result.checkpoint).split
    metrics = evaluate_model(model, dataset.subset(split.test), include_frames=False)
    row = {
        "architecture": architecture, "parameters": read_model_metadata(model)["parameters"],
        "training_s": round(result.elapsed_s, 1), "epochs": result.epochs, "stop_reason": result.stop_reason,
        "n_test": metrics["n_frames"], "energy_mae_kcal_per_mol": metrics["energy_mae"],
        "force_mae_kcal_per_mol_per_A": metrics["force_mae"], "force_max_kcal_per_mol_per_A": metrics["force_max"],
        "fnm_mae": metrics["fnm_mae"], "H_fnm_max": metrics["elements"]["H"]["fnm_max"],
        "units": metrics["units"],
    }
    (run_dir / "accuracy.json").write_text(json.dumps(row, indent=2))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    p.add_argument("--time-budget", type=float, default=900.0, help="training wall-clock budget per architecture, s")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--parallel", action="store_true", help="train the architectures at the same time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/accuracy")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    jobs = [(a, args.out, args.time_budget, args.threads, args.seed) for a in args.architectures]
    from openmlff.core.versions import processor_name

    if args.parallel:
        with ProcessPoolExecutor(max_workers=len(jobs)) as pool:
            rows = list(pool.map(train_and_measure, *zip(*jobs)))
    else:
        rows = [train_and_measure(*job) for job in jobs]
    print(f"# accuracy on rMD17 aspirin (1200 shipped frames: 950 train / 50 val / 200 test, seed {args.seed}), "
          f"{time.strftime('%Y-%m-%d')}, {processor_name()} ({platform.machine()}), {args.threads} torch thread(s) per model"
          f"{', trained in parallel' if args.parallel else ''}; wall time {time.perf_counter() - t0:.0f} s")
    header = (f"{'model':<8} {'params':>9} {'train s':>8} {'epochs':>7} {'E MAE kcal/mol':>15} "
              f"{'F MAE kcal/mol/Å':>17} {'F max kcal/mol/Å':>17} {'H FNM max (kcal/mol/Å)/Da':>26}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['architecture']:<8} {r['parameters']:>9} {r['training_s']:>8.0f} {r['epochs']:>7} "
              f"{r['energy_mae_kcal_per_mol']:>15.3f} {r['force_mae_kcal_per_mol_per_A']:>17.3f} "
              f"{r['force_max_kcal_per_mol_per_A']:>17.2f} {r['H_fnm_max']:>26.2f}")
    return 0


if __name__ == "__main__":
    with result_page("accuracy", "Accuracy of the three architectures on rMD17 aspirin at one CPU budget"):
        code = main()
    sys.exit(code)
