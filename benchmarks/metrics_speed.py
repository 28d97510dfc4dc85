"""Speed of model evaluation (evaluate_model): frames per second, batched vs one frame at a time.

For each architecture of openmlff.models.ARCHITECTURES whose module imports, an untrained model
of the default CPU size is exported for aspirin (speed does not depend on the weights) and
evaluated on the first N frames of the shipped rMD17 aspirin data with each batch size. Each
measurement follows a warm-up evaluation (TorchScript optimises on the first calls). Architectures
that fail to build are listed with the reason.

With --backends torchscript compiled (the default), every batch size is measured twice: the file's TorchScript
module, and the model compiled by Inductor on this machine (`metrics --backend compiled`; compiled once per
architecture, before the warm-up; the compile time is printed).

    python benchmarks/metrics_speed.py [--frames 256] [--batch-sizes 1 8 32 128] [--threads 1]
                                       [--backends torchscript compiled]
"""

from __future__ import annotations

import sys

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from openmlff.data import load_dataset
from openmlff.data.shipped import shipped_dataset_path
from openmlff.model_file.writer import export_model
from openmlff.metrics.evaluation import evaluate_model
from openmlff.models import ARCHITECTURES, build_model, fit_element_energies
from openmlff.potentials.exported import CompiledModel

from pages import result_page  # noqa: E402  (benchmarks/pages.py)

WARMUP_FRAMES = 8


def export_untrained(architecture: str, dataset, path: Path) -> Path:
    """An untrained model of the default CPU size for the dataset's molecule, with element energies fitted to it."""
    torch.manual_seed(0)
    potential = build_model(architecture)
    potential.set_energy_statistics(fit_element_energies(dataset.z, dataset.E), float(np.sqrt(np.mean(dataset.F**2))))
    return export_model(potential.eval(), dataset.z, path)


def frames_per_second(model_path, dataset, batch_size: int, repeats: int) -> float:
    """Best of `repeats` evaluations, in frames per second (evaluate_model's own timing of its batch loop)."""
    evaluate_model(model_path, dataset.subset(np.arange(min(WARMUP_FRAMES, dataset.n_frames))), batch_size=batch_size,
                   include_frames=False)
    best = 0.0
    for _ in range(repeats):
        result = evaluate_model(model_path, dataset, batch_size=batch_size, include_frames=False)
        best = max(best, dataset.n_frames / result["evaluation"]["wall_time_s"])
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=256, help="frames evaluated per measurement (default 256)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=2, help="measurements per setting, best kept (default 2)")
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    p.add_argument("--backends", nargs="+", default=["torchscript", "compiled"], choices=("torchscript", "compiled"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset(shipped_dataset_path())
    dataset = data.subset(np.arange(min(args.frames, data.n_frames)))
    print(f"# evaluate_model speed, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, CPU")
    print(f"# {dataset.n_frames} frames of {data.source} ({dataset.n_atoms} atoms); untrained models, default CPU "
          f"hyperparameters; best of {args.repeats} after a warm-up")
    relative = f"vs batch {args.batch_sizes[0]}"
    print(f"{'architecture':<13} {'parameters':>10} {'backend':<11} {'batch':>6} {'frames/s':>10} {'ms/frame':>9} "
          f"{relative:>10}")
    skipped = []
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in args.architectures:
            try:
                model_path = export_untrained(architecture, data, Path(tmp) / f"{architecture}.pt")
            except Exception as exc:  # a module still being written, a missing dependency, a scripting error
                first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
                skipped.append((architecture, f"{type(exc).__name__}: {first_line}"))
                continue
            n_params = sum(q.numel() for q in torch.jit.load(str(model_path)).parameters())
            baseline = None
            for backend in args.backends:
                model = model_path
                if backend == "compiled":
                    model = CompiledModel(model_path)
                    start = time.perf_counter()
                    model.energies_and_forces(data.z, data.R[:2])
                    print(f"# {architecture}: compiled in {time.perf_counter() - start:.1f} s", flush=True)
                for batch_size in args.batch_sizes:
                    fps = frames_per_second(model, dataset, batch_size, args.repeats)
                    baseline = baseline or fps
                    print(f"{architecture:<13} {n_params:>10} {backend:<11} {batch_size:>6} {fps:>10.1f} "
                          f"{1000 / fps:>9.2f} {fps / baseline:>9.2f}x", flush=True)
    for architecture, reason in skipped:
        print(f"# skipped {architecture}: {reason}")
    return 0


if __name__ == "__main__":
    with result_page("metrics_speed", "Speed of model evaluation: frames per second, batched or not"):
        code = main()
    sys.exit(code)
