"""The `openmlff` command: thin argparse wrappers around the package's functions.

Forms scripts rely on (keep them): `data info PATH`, `train --data PATH --model et --out DIR`,
`export CHECKPOINT --out FILE.pt`, `metrics --model FILE.pt --data PATH --out FILE.json`,
`simulate --model FILE.pt (--data PATH --frame I | --structure FILE) --temperature K --timestep FS
--steps N --out RUNDIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"openmlff {args.command}: error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="openmlff", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")

    data = sub.add_parser("data", help="inspect, generate and label datasets")
    data_sub = data.add_subparsers(dest="data_command")
    info = data_sub.add_parser("info", help="frames, atoms, elements, units and label ranges of a dataset file")
    info.add_argument("path")
    _unit_options(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=_data_info)
    gen = data_sub.add_parser("generate", help="sample a dataset by reference MD (MD17-style)")
    gen.add_argument("--structure", required=True, help="built-in name (aspirin, ac-ala3-nhme, chignolin) or a PDB/XYZ file")
    gen.add_argument("--method", default="gfn2-xtb", help="reference method (default gfn2-xtb)")
    gen.add_argument("--temperature", type=float, default=500.0, help="temperature in K (default 500)")
    gen.add_argument("--frames", type=int, required=True, help="number of frames to keep")
    gen.add_argument("--stride", type=int, default=None, help="MD steps between kept frames")
    gen.add_argument("--equilibration", type=int, default=None, help="MD steps discarded first")
    gen.add_argument("--timestep", type=float, default=0.5, help="timestep in fs (default 0.5)")
    gen.add_argument("--out", required=True, help="output dataset file (.npz, openmlff format)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--quiet", action="store_true")
    gen.set_defaults(handler=_data_generate)

    tr = sub.add_parser("train", help="train a model; writes DIR/model.ckpt (resumes an interrupted run)")
    tr.add_argument("--data", required=True)
    _unit_options(tr)
    tr.add_argument("--model", default="et", help="architecture (default et)")
    tr.add_argument("--preset", default="cpu", help="hyperparameter preset: cpu (small) or paper")
    tr.add_argument("--out", required=True)
    tr.add_argument("--time-budget", type=float, default=None, help="wall-clock budget in seconds")
    tr.add_argument("--max-epochs", type=int, default=None)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--n-train", type=int, default=None, help="training frames (default: all not used for val/test)")
    tr.add_argument("--n-val", type=int, default=None)
    tr.add_argument("--n-test", type=int, default=None)
    tr.add_argument("--batch-size", type=int, default=None)
    tr.add_argument("--lr", type=float, default=None, help="peak learning rate")
    tr.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    tr.add_argument("--hyperparameters", default=None, help='JSON object overriding the preset, e.g. \'{"num_layers": 4}\'')
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(handler=_train)

    ex = sub.add_parser("export", help="export a checkpoint to a TorchScript file (nm in, kJ/mol out)")
    ex.add_argument("checkpoint")
    ex.add_argument("--out", required=True)
    ex.add_argument("--weights", default="best", choices=["best", "ema", "raw"])
    ex.set_defaults(handler=_export)

    me = sub.add_parser("metrics", help="force metrics of a model on a dataset")
    me.add_argument("--model", required=True)
    me.add_argument("--data", required=True)
    _unit_options(me)
    me.add_argument("--out", required=True, help="JSON file")
    me.add_argument("--frames", default="all",
                    help="'all', or 'train'/'val'/'test' (the split stored in --checkpoint), or a range 'START:STOP'")
    me.add_argument("--checkpoint", default=None, help="training checkpoint whose split --frames refers to")
    me.add_argument("--batch-size", type=int, default=32)
    me.add_argument("--force-unit", default="kcal/mol/Å")
    me.add_argument("--energy-unit", default="kcal/mol")
    me.set_defaults(handler=_metrics)

    si = sub.add_parser("simulate", help="MD with a model in OpenMM; resumes an unfinished run directory")
    si.add_argument("--model", required=True)
    start = si.add_mutually_exclusive_group(required=True)
    start.add_argument("--data", help="dataset whose frame --frame starts the run")
    start.add_argument("--structure", help="built-in name or PDB/XYZ file")
    si.add_argument("--frame", type=int, default=0)
    _unit_options(si)
    si.add_argument("--temperature", type=float, required=True, help="K")
    si.add_argument("--timestep", type=float, required=True, help="fs")
    si.add_argument("--steps", type=int, required=True)
    si.add_argument("--out", required=True)
    si.add_argument("--platform", default=None, help="CUDA, OpenCL, CPU or Reference (default: fastest available)")
    si.add_argument("--precision", default=None, help="platform precision: single, mixed or double")
    si.add_argument("--backend", default="torchforce", choices=["torchforce", "pythonforce"])
    si.add_argument("--seed", type=int, default=0)
    si.add_argument("--friction", type=float, default=1.0, help="Langevin friction in 1/ps")
    si.add_argument("--report-interval", type=int, default=100, help="steps between frames, state rows and checks")
    si.add_argument("--checkpoint-interval", type=int, default=1000, help="steps between checkpoints")
    si.add_argument("--bond-deviation", type=float, default=0.5, help="collapse threshold in Å")
    si.add_argument("--threads", type=int, default=None, help="torch threads")
    si.add_argument("--quiet", action="store_true")
    si.set_defaults(handler=_simulate)
    return p


def _unit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy-unit-in-file", dest="file_energy_unit", default=None,
                   help="energy unit of the data file when it cannot be told (eV, kcal/mol, kJ/mol, Hartree)")
    p.add_argument("--length-unit-in-file", dest="file_length_unit", default=None,
                   help="length unit of the data file when it cannot be told (Å, nm, Bohr)")


def _load(args, path):
    from .data import load_dataset

    return load_dataset(path, energy_unit=args.file_energy_unit, length_unit=args.file_length_unit)


def _data_info(args) -> int:
    from .data import dataset_info, format_dataset_info

    info = dataset_info(args.path, energy_unit=args.file_energy_unit, length_unit=args.file_length_unit)
    print(json.dumps(info, indent=2, default=str) if args.json else format_dataset_info(info))
    return 0


def _data_generate(args) -> int:
    from .data.sampling import generate_dataset

    kwargs = {k: v for k, v in dict(stride_steps=args.stride, equilibration_steps=args.equilibration).items() if v is not None}
    ds = generate_dataset(args.structure, method=args.method, temperature_K=args.temperature, n_frames=args.frames,
                          timestep_fs=args.timestep, seed=args.seed, out=args.out, progress=not args.quiet, **kwargs)
    print(f"wrote {args.out}: {ds.n_frames} frames of {ds.n_atoms} atoms ({args.method}, {args.temperature} K)")
    return 0


def _train(args) -> int:
    from .training import TrainingConfig, train

    overrides = {k: v for k, v in dict(
        n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, batch_size=args.batch_size,
        learning_rate=args.lr, max_epochs=args.max_epochs, torch_threads=args.threads).items() if v is not None}
    config = TrainingConfig(architecture=args.model, preset=args.preset, seed=args.seed, time_budget_s=args.time_budget,
                            hyperparameters=json.loads(args.hyperparameters) if args.hyperparameters else {}, **overrides)
    dataset = _load(args, args.data)
    result = train(dataset, args.out, config, progress=not args.quiet)
    print(f"{result.checkpoint}: {result.epochs} epochs, {result.elapsed_s:.0f} s, stopped: {result.stop_reason}; "
          f"best validation force MAE {result.best_val_force_mae_kcal_per_mol_per_A:.3f} kcal/mol/Å, "
          f"energy MAE {result.best_val_energy_mae_kcal_per_mol:.3f} kcal/mol (epoch {result.best_epoch})")
    return 0


def _export(args) -> int:
    from .export import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out, weights=args.weights)
    print(f"wrote {path}")
    return 0


def _metrics(args) -> int:
    from .atomic_io import atomic_write_json
    from .metrics.evaluation import evaluate_model

    dataset = _load(args, args.data)
    dataset = dataset.subset(_frame_selection(args, dataset.n_frames)) if args.frames != "all" else dataset
    result = evaluate_model(args.model, dataset, batch_size=args.batch_size, force_unit=args.force_unit,
                            energy_unit=args.energy_unit, include_frames=True)
    report = metrics_report(result, frames=args.frames)
    atomic_write_json(args.out, report)
    g = report["global"]
    u = report["units"]
    print(f"{dataset.n_frames} frames ({args.frames}): force MAE {g['force_mae']:.3f} {u['force']}, "
          f"max {g['force_max']:.3f} {u['force']}, FNM MAE {g['fnm_mae']:.4f} {u['fnm']}, "
          f"energy MAE {g['energy_mae']:.3f} {u['energy']} -> {args.out}")
    return 0


def metrics_report(result: dict, frames: str = "all") -> dict:
    """Restructure an evaluation result as the metrics JSON: units, global, elements, atoms, frames, provenance."""
    sections = {"units", "elements", "atoms", "frames", "model", "data", "evaluation"}
    return {
        "units": result["units"],
        "global": {k: v for k, v in result.items() if k not in sections},
        "elements": result["elements"],
        "atoms": result["atoms"],
        "frames": result.get("frames"),
        "model": result["model"],
        "data": dict(result["data"], selection=frames),
        "evaluation": result["evaluation"],
    }


def _frame_selection(args, n_frames: int):
    import numpy as np

    sel = args.frames
    if sel in ("train", "val", "test"):
        if not args.checkpoint:
            raise ValueError(f"--frames {sel} needs --checkpoint (the training checkpoint that holds the split)")
        import torch

        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        return np.asarray(ckpt["split"][sel])
    if ":" in sel:
        start, _, stop = sel.partition(":")
        return np.arange(n_frames)[slice(int(start) if start else None, int(stop) if stop else None)]
    raise ValueError(f"--frames: expected all, train, val, test or START:STOP, got {sel!r}")


def _simulate(args) -> int:
    from .md import SimulationConfig
    from .md.start import run_from_dataset_frame, run_from_structure

    config = SimulationConfig(
        temperature_K=args.temperature, timestep_fs=args.timestep, steps=args.steps, seed=args.seed,
        friction_per_ps=args.friction, platform=args.platform, platform_precision=args.precision,
        report_interval_steps=args.report_interval, checkpoint_interval_steps=args.checkpoint_interval,
        bond_deviation_limit_angstrom=args.bond_deviation, backend=args.backend, torch_threads=args.threads)
    if args.data:
        summary = run_from_dataset_frame(args.model, _load(args, args.data), args.frame, args.out, config,
                                         progress=not args.quiet)
    else:
        summary = run_from_structure(args.model, args.structure, args.out, config, progress=not args.quiet)
    state = "stable" if summary["stable"] else f"COLLAPSED at {summary['collapse_time_ps']} ps ({summary['collapse_reason']})"
    print(f"{args.out}: {summary['steps_completed']}/{summary['steps_requested']} steps, {state}, "
          f"{summary['ns_per_day']:.2f} ns/day")
    return 0


if __name__ == "__main__":
    sys.exit(main())
