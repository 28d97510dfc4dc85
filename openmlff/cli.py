"""The `openmlff` command: thin argparse wrappers around the package's functions.

Forms scripts rely on (keep them): `data info PATH`, `train --data PATH --model et --out DIR`,
`export CHECKPOINT --out FILE.pt`, `metrics --model FILE.pt --data PATH --out FILE.json`,
`simulate --model FILE.pt (--data PATH --frame I | --structure FILE) --temperature K --timestep FS
--steps N --out RUNDIR`, `finetune CHECKPOINT --reweight frames|clusters --out DIR [--time-budget S]`,
`recruit CHECKPOINT --pool PATH --count N --strategy clusters|frames|random --out FILE`,
`train --continue-from CHECKPOINT --add-data FILE ...`; `--model` of metrics and simulate also takes
`amber14`, `gaff-2.11`, `gfn2-xtb`, `gfn1-xtb`, `dft` (openmlff.potentials).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .config import finite_float, json_object
from .errors import InputError, OpenMLFFError, StateError, describe_os_error


def main(argv: list[str] | None = None) -> int:
    command = "openmlff"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = f"openmlff {args.command}" if getattr(args, "command", None) else command
        if not hasattr(args, "handler"):
            parser.print_help()
            return 2
        from .threads import configure_process

        configure_process()  # OMP_WAIT_POLICY before torch's OpenMP starts (openmlff.threads)
        warnings.formatwarning = _one_line_warning
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C, also while torch is being imported: what is written stays, and resumes
        print(f"{command}: interrupted; what was written is kept, and the same command resumes", file=sys.stderr)
        return 130


def _run(args) -> int:
    """The command's handler; a user error or a file-system error as one line (exit 1), a bug as a traceback."""
    try:
        return int(args.handler(args) or 0)
    except OpenMLFFError as exc:  # a user error: one line; anything else is a bug and keeps its traceback
        print(f"openmlff {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system's word, with the path
        print(f"openmlff {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line, 'warning: MESSAGE' (openmlff's warnings name their file), no source line under it."""
    return f"warning: {message}\n"


MODEL_HELP = ("an exported model file (.pt), another code's TorchScript file (openmm-torch's TorchForce contract), "
              "'openmm-ml:NAME' (nequip, mace, torchmdnet, ...) or 'ase:MODULE:CLASS' (any ASE calculator) with "
              "--model-option, a classical force field 'amber14' (ff14SB; peptides) or 'gaff-2.11' "
              "(GAFF 2.11 + AM1-BCC; small molecules; needs the [classical] extra), or a reference method "
              "'gfn2-xtb', 'gfn1-xtb', 'dft' (PySCF PBE/def2-SVP)")


def _model_arguments(p: argparse.ArgumentParser, options: bool = True) -> None:
    """--model-option KEY=VALUE (repeatable) and --allow-model-code (openmlff.potentials.model_ref)."""
    if options:
        p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the model (repeatable): openmm-ml's (modelPath=FILE, ...) or the ASE "
                            "calculator's keyword arguments; VALUE is read as JSON when it is JSON")
    p.add_argument("--allow-model-code", action="store_true",
                   help="consent to models that run code: ase:MODULE:CLASS imports MODULE, openmm-ml backends "
                        "unpickle their model files (only for files you trust)")


def _model(args, name=None):
    """The ModelRef of --model/--model-option (None without a model), and --allow-model-code for the workers."""
    import os

    from .potentials.model_ref import CODE_CONSENT_ENV, ModelRef, parse_model_options

    if getattr(args, "allow_model_code", False):
        os.environ[CODE_CONSENT_ENV] = "1"  # pool workers inherit the consent
    name = args.model if name is None else name
    options = parse_model_options(getattr(args, "model_option", []))
    if not name:
        if options:
            raise InputError("--model-option needs --model")
        return None
    return ModelRef(name, options)

class _OneLineParser(argparse.ArgumentParser):
    """argparse with a usage error as one line (the usage is a --help away), exit status 2 as argparse's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="openmlff", description=__doc__.splitlines()[0])
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
    gen.add_argument("--temperature", type=finite_float, default=500.0, help="temperature in K (default 500)")
    gen.add_argument("--frames", type=int, required=True, help="number of frames to keep")
    gen.add_argument("--stride", type=int, default=None, help="MD steps between kept frames")
    gen.add_argument("--equilibration", type=int, default=None, help="MD steps discarded first")
    gen.add_argument("--timestep", type=finite_float, default=0.5, help="timestep in fs (default 0.5)")
    gen.add_argument("--out", required=True, help="output dataset file (.npz, openmlff format)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--quiet", action="store_true")
    gen.set_defaults(handler=_data_generate)

    lab = data_sub.add_parser("label", help="label the conformations of a dataset or structure file with a reference method")
    lab.add_argument("--data", required=True, help="dataset or structure file whose frames are labelled")
    _unit_options(lab)
    lab.add_argument("--method", default="gfn2-xtb", help="reference method (default gfn2-xtb)")
    lab.add_argument("--charge", type=int, default=0, help="net charge in e")
    lab.add_argument("--out", required=True, help="output dataset file (.npz, openmlff format)")
    lab.add_argument("--work-dir", default=None, help="folder for resumable chunks (default OUT.chunks)")
    lab.add_argument("--chunk-size", type=int, default=50, help="frames per chunk (a killed run loses at most one)")
    lab.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    lab.add_argument("--quiet", action="store_true")
    lab.set_defaults(handler=_data_label)

    from .config import add_config_arguments
    from .models import ARCHITECTURES
    from .training.config import DTYPES, PRESETS, TrainingConfig

    tr = sub.add_parser("train", help="train a model; writes DIR/model.ckpt (resumes an interrupted run)")
    tr.add_argument("--data", required=True)
    _unit_options(tr)
    tr.add_argument("--out", required=True, help="the training folder (model.ckpt; resumed when it exists)")
    add_config_arguments(tr, TrainingConfig, choices={"architecture": sorted(ARCHITECTURES), "preset": list(PRESETS),
                                                      "dtype": list(DTYPES)},
                         group="training settings (openmlff.training.TrainingConfig)")
    tr.add_argument("--ensemble", type=int, default=None, metavar="K",
                    help="train a committee of K models (seeds SEED..SEED+K-1, one split) into OUT/member_<k> and "
                         "export it as OUT/committee.pt")
    tr.add_argument("--ensemble-workers", type=int, default=1, metavar="W",
                    help="with --ensemble: members trained W at a time, one process of one thread each (default 1: "
                         "one after another with --threads)")
    tr.add_argument("--continue-from", default=None, metavar="CHECKPOINT",
                    help="start from this trained model's best weights, with its architecture, size and split "
                         "(other settings from this command line)")
    tr.add_argument("--add-data", default=None, metavar="FILE",
                    help="with --continue-from: labelled frames (e.g. from `openmlff recruit`) added to the "
                         "training set; --data stays the parent's data, the two are trained on as OUT/training_data.npz")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(handler=_train)

    from .improve.recruit import RECRUIT_STRATEGIES
    from .improve.reweight import REWEIGHT_RULES
    from .metrics.metric_sets import FRAME_METRICS

    ft = sub.add_parser("finetune", help="fine-tune a trained model with sample weights from its own errors")
    ft.add_argument("checkpoint", help="the trained model's checkpoint (model.ckpt)")
    ft.add_argument("--reweight", required=True, choices=list(REWEIGHT_RULES),
                    help="frames: weight by each frame's force error; clusters: by its conformation cluster's "
                         "ratio of bad points; none: uniform (the control)")
    ft.add_argument("--reweight-options", type=json_object, default={},
                    help="parameters of the rule (JSON), e.g. '{\"power\": 2}' (openmlff.improve.reweight)")
    ft.add_argument("--out", required=True, help="the fine-tuning folder (model.ckpt; resumed when it exists)")
    ft.add_argument("--data", default=None, help="the parent's training data (default: the file it records)")
    _unit_options(ft)
    ft.add_argument("--time-budget", type=finite_float, default=None, help="wall-clock budget in s")
    ft.add_argument("--max-epochs", type=int, default=None, help="epochs (default: until early stopping)")
    ft.add_argument("--lr", type=finite_float, default=None, help="learning rate (default: a quarter of the parent's)")
    ft.add_argument("--warmup-steps", type=int, default=0, help="optimiser steps of warm-up (default 0)")
    ft.add_argument("--seed", type=int, default=None, help="seed of the batch draws (default: the parent's)")
    ft.add_argument("--threads", type=int, default=None, help="torch threads (default: openmlff.threads' choice)")
    ft.add_argument("--quiet", action="store_true")
    ft.set_defaults(handler=_finetune)

    al = sub.add_parser("active-learn", help="committee MD, label the most uncertain frames, retrain; N rounds")
    al.add_argument("--data", required=True, help="labelled data; new labels must be at its level of theory")
    _unit_options(al)
    al.add_argument("--method", required=True, help="reference method: dft, dft:FUNCTIONAL/BASIS, gfn2-xtb or "
                                                    "ase:MODULE:CLASS")
    al.add_argument("--rounds", type=int, required=True, help="labelling rounds (the last committee is measured too)")
    al.add_argument("--out", required=True, help="the loop's folder (rounds.json, report.html; resumed when it exists)")
    al.add_argument("--committee-size", type=int, default=3)
    al.add_argument("--frames-per-round", type=int, default=20)
    al.add_argument("--starts", type=int, default=8, help="held-out starting conformations per campaign")
    al.add_argument("--seeds", type=int, default=1, help="MD seeds per start")
    al.add_argument("--md-steps", type=int, default=4000)
    al.add_argument("--md-temperature", type=finite_float, default=500.0, help="K")
    al.add_argument("--threshold", type=finite_float, default=None, help="untrusted force spread, kcal/mol/Å (recorded)")
    al.add_argument("--continue-epochs", type=int, default=30, help="epochs of each member's continued training")
    al.add_argument("--drive", choices=("mean", "member"), default="mean",
                    help="what drives the MD: the committee mean (default) or member 0 alone (1/K of the cost per "
                         "step); the spread is evaluated at each report either way")
    al.add_argument("--training-workers", type=int, default=1,
                    help="members trained this many at a time, one process of one thread each (default 1)")
    al.add_argument("--budget", type=finite_float, default=None, help="wall-clock budget of the loop in s")
    al.add_argument("--keep-going", action="store_true", help="do not stop when stability stops improving")
    al.add_argument("--allow-other-level", action="store_true",
                    help="label with a method other than the data's level of theory (mixing levels: at your risk)")
    add_config_arguments(al, TrainingConfig, choices={"architecture": sorted(ARCHITECTURES), "preset": list(PRESETS),
                                                      "dtype": list(DTYPES)},
                         group="round 0's training settings (openmlff.training.TrainingConfig)")
    al.add_argument("--quiet", action="store_true")
    al.set_defaults(handler=_active_learn)

    rc = sub.add_parser("recruit", help="pick labelled frames the model has not seen where its errors are large")
    rc.add_argument("checkpoint", help="the trained model's checkpoint (model.ckpt)")
    rc.add_argument("--pool", required=True, help="labelled frames to choose from (the training data file itself: "
                                                  "its frames outside the model's split)")
    _unit_options(rc)
    rc.add_argument("--count", type=int, required=True, help="frames to recruit")
    rc.add_argument("--strategy", required=True, choices=list(RECRUIT_STRATEGIES),
                    help="clusters: from conformation clusters with many bad frames; frames: the largest errors; "
                         "random: uniformly (the control)")
    rc.add_argument("--score", default="force_mae", choices=list(FRAME_METRICS), help="per-frame error (default force_mae)")
    rc.add_argument("--n-clusters", type=int, default=None, help="clusters (default: silhouette rule)")
    rc.add_argument("--seed", type=int, default=0)
    rc.add_argument("--threads", type=int, default=None, help="torch threads (default: openmlff.threads' choice)")
    rc.add_argument("--out", required=True, help="output dataset file (.npz, openmlff format)")
    rc.add_argument("--quiet", action="store_true")
    rc.set_defaults(handler=_recruit)

    ex = sub.add_parser("export", help="export a checkpoint (or a committee of them) to a TorchScript file "
                                       "(nm in, kJ/mol out)")
    ex.add_argument("checkpoint", nargs="?", default=None)
    ex.add_argument("--committee", nargs="+", default=None, metavar="CHECKPOINT",
                    help="export these checkpoints as one committee: the mean drives MD, uncertainty(positions) "
                         "gives the members' force spread")
    ex.add_argument("--out", required=True)
    ex.add_argument("--weights", default="best", choices=["best", "ema", "raw"])
    ex.set_defaults(handler=_export)

    me = sub.add_parser("metrics", help="force metrics of a model (or a classical force field, or xTB/DFT) on a dataset")
    me.add_argument("--model", required=True, help=MODEL_HELP)
    _model_arguments(me)
    me.add_argument("--data", required=True)
    _unit_options(me)
    me.add_argument("--out", required=True, help="JSON file")
    me.add_argument("--frames", default="all",
                    help="'all', or 'train'/'val'/'test' (the split stored in --checkpoint), or a range 'START:STOP'")
    me.add_argument("--checkpoint", default=None, help="training checkpoint whose split --frames refers to")
    me.add_argument("--batch-size", type=int, default=32)
    me.add_argument("--threads", type=int, default=None, help="torch threads (default: openmlff.threads' choice)")
    me.add_argument("--force-unit", default="kcal/mol/Å")
    me.add_argument("--energy-unit", default="kcal/mol")
    me.add_argument("--n-clusters", type=int, default=None,
                    help="conformation clusters (default: k in 2..10 with the best silhouette score)")
    me.add_argument("--cluster-seed", type=int, default=0, help="seed of the k-means clustering")
    me.add_argument("--csv-dir", default=None,
                    help="folder for elements.csv, atoms.csv, frames.csv, clusters.csv (default: OUT_STEM_csv beside the JSON)")
    me.add_argument("--plots", default=None, metavar="DIR", help="also write PNG figures into DIR")
    me.set_defaults(handler=_metrics)

    an = sub.add_parser("analyze", help="analyse an MD run directory, or a trajectory of another engine: bonds, "
                                        "h(r), RDF, RMSD, Rg, dihedrals, collapse diagnosis")
    an.add_argument("rundir", metavar="RUNDIR|TRAJECTORY",
                    help="an openmlff run directory, or a trajectory file of another engine (ASE .traj, extended XYZ, "
                         "DCD, XTC, TRR, NetCDF, HDF5, ...; needs --data)")
    an.add_argument("--topology", default=None,
                    help="trajectory files without atoms (DCD, XTC, TRR, NetCDF): a topology file (PDB, ...); default: "
                         "the atoms of --data")
    an.add_argument("--frame-interval-ps", type=finite_float, default=None,
                    help="time between the trajectory file's frames in ps, when the file does not store it")
    an.add_argument("--data", default=None,
                    help="reference data (default: the training data file named in the model's metadata)")
    _unit_options(an)
    an.add_argument("--model", default=None,
                    help="the model for the diagnosis (default: the run's model, run.json); " + MODEL_HELP)
    _model_arguments(an)
    an.add_argument("--out", default=None, help="output folder (default RUNDIR/analysis)")
    an.add_argument("--plots", action="store_true", help="also write PNG figures")
    an.add_argument("--bond-deviation", type=finite_float, default=None, help="collapse threshold in Å (default: the run's)")
    an.add_argument("--no-errors", action="store_true", help="skip evaluating the model on its training data")
    an.add_argument("--water", choices=("strip", "keep"), default="strip",
                    help="solvated runs: strip (the molecule alone, default) or keep the water (and ions) for the "
                         "solvation analysis: box volume, density, first-shell waters, water g(r) around each element")
    an.add_argument("--batch-size", type=int, default=32, help="frames per batch when evaluating the model")
    an.add_argument("--threads", type=int, default=None, help="torch threads (default: openmlff.threads' choice)")
    an.add_argument("--quiet", action="store_true")
    an.set_defaults(handler=_analyze)

    from .md.config import SimulationConfig
    from .md.integrators import INTEGRATORS
    from .potentials.exported import BACKENDS
    from .md.trajectory import TRAJECTORY_FORMATS

    si = sub.add_parser("simulate", help="MD with a model (or a classical force field, or xTB/DFT) in OpenMM; resumes "
                                         "an unfinished run directory")
    si.add_argument("--model", required=True, help=MODEL_HELP)
    _model_arguments(si)
    start = si.add_mutually_exclusive_group(required=True)
    start.add_argument("--data", help="dataset whose frame --frame starts the run")
    start.add_argument("--structure", help="built-in name or PDB/XYZ file")
    si.add_argument("--frame", type=int, default=0)
    si.add_argument("--replicas", type=int, default=1, metavar="N",
                    help="N copies in one OpenMM Context, the model evaluating them in one batched call "
                         "(openmlff.md.replicas): from --frames (N frames) or N seeds (--seed .. --seed+N-1) from "
                         "one start; each copy is a run directory OUT/replica_000 ...")
    si.add_argument("--frames", type=int, nargs="+", default=None, metavar="I",
                    help="with --data and --replicas: the frames the copies start from, one each")
    _unit_options(si)
    si.add_argument("--out", required=True, help="the run directory (resumed when it exists)")
    add_config_arguments(si, SimulationConfig, required=("temperature_K", "timestep_fs", "steps"),
                         choices={"integrator": list(INTEGRATORS), "backend": list(BACKENDS),
                                  "trajectory_format": list(TRAJECTORY_FORMATS)},
                         group="MD settings (openmlff.md.SimulationConfig; the same names in a campaign's [md])")
    si.add_argument("--min-distance", dest="min_nonbonded_distance_angstrom", type=finite_float, default=argparse.SUPPRESS,
                    help="the same as --min-nonbonded-distance-angstrom; 0 switches the criterion off")
    trust = si.add_argument_group("trust (a committee's force spread at each report; openmlff.md.trust)")
    trust.add_argument("--committee", default=None, nargs="+", metavar="MODEL",
                       help="a committee file (openmlff export --committee), or two or more models (files, names, "
                            "openmm-ml:NAME, ase:MODULE:CLASS) evaluated at each report: the largest force spread "
                            "goes to state.csv and the summary")
    trust.add_argument("--untrusted-threshold", type=finite_float, default=None, metavar="KCAL_PER_MOL_PER_A",
                       help="a report whose largest spread exceeds this is untrusted: first_untrusted_time_ps, "
                            "untrusted_frames.npz")
    trust.add_argument("--stop-when-untrusted", type=finite_float, default=None, metavar="KCAL_PER_MOL_PER_A",
                       help="the same threshold, and the run ends at its first untrusted report")
    si.add_argument("--quiet", action="store_true")
    si.set_defaults(handler=_simulate)
    _campaign_parser(sub)
    _correlate_parser(sub)
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


def _data_label(args) -> int:
    from .data import save_dataset
    from .reference import label_conformations

    source = _load(args, args.data)
    work_dir = args.work_dir or f"{args.out}.chunks"
    result = label_conformations(args.method, source.z, source.R, work_dir, chunk_size=args.chunk_size,
                                 n_workers=args.workers, charge=args.charge, progress=not args.quiet,
                                 name=source.name)
    for failure in result.failures:
        print(f"frame {failure.index} failed: {failure.message}", file=sys.stderr)
    if result.dataset is None:
        raise StateError(f"{args.data}: every frame failed with {args.method}; nothing written")
    save_dataset(result.dataset, args.out)
    print(f"wrote {args.out}: {result.dataset.n_frames} of {source.n_frames} frames labelled with {args.method} "
          f"({len(result.failures)} failed; chunks computed {result.chunks_computed}, reused {result.chunks_reused})")
    return 0 if not result.failures else 3


def _train(args) -> int:
    from .config import config_from_args
    from .training import TrainingConfig, train

    config = config_from_args(TrainingConfig, args)
    dataset = _load(args, args.data)
    start = None
    if args.add_data and not args.continue_from:
        raise InputError("--add-data needs --continue-from CHECKPOINT (the model the frames are added for)")
    if args.ensemble is not None:
        if args.continue_from:
            raise InputError("--ensemble trains from scratch; it does not take --continue-from")
        from .export import export_committee
        from .training.trainer import train_committee

        results = train_committee(dataset, args.out, args.ensemble, config, progress=not args.quiet,
                                  workers=args.ensemble_workers)
        for result in results:
            _print_training(result)
        path = export_committee([r.checkpoint for r in results], Path(args.out) / "committee.pt")
        print(f"wrote {path}: the committee of {len(results)} members")
        return 0
    if args.continue_from:
        from .training.checkpoint import read_checkpoint
        from .training.start import continue_start

        added = _load(args, args.add_data) if args.add_data else None
        dataset, start = continue_start(read_checkpoint(args.continue_from), dataset, added, args.out)
    result = train(dataset, args.out, config, progress=not args.quiet, start=start)
    _print_training(result)
    return 0


def _print_training(result) -> None:
    print(f"{result.checkpoint}: {result.epochs} epochs, {result.elapsed_s:.0f} s, stopped: {result.stop_reason}; "
          f"best validation force MAE {result.best_val_force_mae_kcal_per_mol_per_A:.3f} kcal/mol/Å, "
          f"energy MAE {result.best_val_energy_mae_kcal_per_mol:.3f} kcal/mol (epoch {result.best_epoch})")


def _finetune(args) -> int:
    from .improve import finetune

    data = _load(args, args.data) if args.data else None
    result = finetune(args.checkpoint, args.out, args.reweight, data=data, rule_options=args.reweight_options,
                      time_budget_s=args.time_budget, max_epochs=args.max_epochs, learning_rate=args.lr,
                      warmup_steps=args.warmup_steps, seed=args.seed, torch_threads=args.threads,
                      progress=not args.quiet)
    _print_training(result)
    return 0


def _active_learn(args) -> int:
    from .config import config_from_args
    from .improve.active import ActiveLearningConfig, active_learn, write_active_learning_report
    from .training import TrainingConfig

    config = ActiveLearningConfig(
        method=args.method, rounds=args.rounds, committee_size=args.committee_size,
        training=config_from_args(TrainingConfig, args), continue_epochs=args.continue_epochs, starts=args.starts,
        seeds=tuple(range(args.seeds)), temperature_K=args.md_temperature, md_steps=args.md_steps,
        frames_per_round=args.frames_per_round, threshold_kcal_per_mol_per_A=args.threshold, budget_s=args.budget,
        drive=args.drive, training_workers=args.training_workers,
        stop_when_not_improving=not args.keep_going, allow_other_level=args.allow_other_level)
    document = active_learn(_load(args, args.data), args.out, config, progress=not args.quiet)
    page = write_active_learning_report(document, Path(args.out) / "report.html")
    for e in document["rounds"]:
        s = e.get("stability") or {}
        print(f"round {e['round']}: {e['training_frames']} training frames, held-out force MAE "
              f"{e['held_out']['force_mae']:.3f} kcal/mol/Å, {s.get('n_stable')}/{s.get('n_runs')} runs stable"
              + (f"; +{e['labelled_frames']} frames labelled in {e['label_wall_s']:.0f} s" if "labelled_frames" in e else ""))
    print(f"stopped: {document.get('stop_reason')}; {page}")
    return 0


def _recruit(args) -> int:
    from .data import save_dataset
    from .improve import recruit_frames
    from .threads import set_threads

    pool = _load(args, args.pool)
    set_threads(args.threads, atoms_per_call=32 * pool.n_atoms)
    result = recruit_frames(args.checkpoint, pool, args.count, args.strategy, score=args.score, seed=args.seed,
                            n_clusters=args.n_clusters, progress=not args.quiet)
    save_dataset(result.dataset, args.out)
    r = result.record
    text = f"wrote {args.out}: {args.count} of {r['pool']['unseen_frames']} unseen pool frames ({args.strategy})"
    if "recruited_score_mean" in r:
        text += (f"; mean {args.score} {r['recruited_score_mean']:.3f} {r['unit']} against "
                 f"{r['candidates_score_mean']:.3f} over all unseen frames")
    print(text)
    return 0


def _export(args) -> int:
    from .export import export_checkpoint, export_committee

    if (args.checkpoint is None) == (args.committee is None):
        raise InputError("give either one CHECKPOINT or --committee CHECKPOINT CHECKPOINT ...")
    if args.committee:
        path = export_committee(args.committee, args.out, weights=args.weights)
    else:
        path = export_checkpoint(args.checkpoint, args.out, weights=args.weights)
    print(f"wrote {path}")
    return 0


def _metrics(args) -> int:
    from .atomic_io import atomic_write_json
    from .data.splits import check_data_of_split, select_frames
    from .metrics.report import metrics_report
    from .report import write_metrics_plots, write_metrics_tables
    from .threads import set_threads
    from .training.checkpoint import read_split

    dataset = _load(args, args.data)
    set_threads(args.threads, atoms_per_call=args.batch_size * dataset.n_atoms)
    split = None
    if args.checkpoint:
        split, fingerprint = read_split(args.checkpoint)
        check_data_of_split(dataset, args.checkpoint, fingerprint)
    indices = select_frames(args.frames, dataset.n_frames, split)
    dataset = dataset.subset(indices) if indices is not None else dataset
    report = metrics_report(_model(args), dataset, frames_label=args.frames, dataset_frames=indices,
                            batch_size=args.batch_size, force_unit=args.force_unit, energy_unit=args.energy_unit,
                            n_clusters=args.n_clusters, cluster_seed=args.cluster_seed)
    atomic_write_json(args.out, report)
    out = Path(args.out)
    tables = write_metrics_tables(report, args.csv_dir or out.with_name(f"{out.stem}_csv"))
    figures = write_metrics_plots(report, args.plots) if args.plots else []
    print(f"tables: {', '.join(map(str, tables))}" + (f"; figures: {', '.join(map(str, figures))}" if figures else ""))
    g = report["global"]
    u = report["units"]
    print(f"{dataset.n_frames} frames ({args.frames}): force MAE {g['force_mae']:.3f} {u['force']}, "
          f"max {g['force_max']:.3f} {u['force']}, FNM MAE {g['fnm_mae']:.4f} {u['fnm']}, "
          f"energy MAE {g['energy_mae']:.3f} {u['energy']} -> {args.out}")
    return 0


def _analyze(args) -> int:
    from .analysis import AnalysisConfig, analyze_run
    from .report import DEFAULT_ANALYSIS_FOLDER, write_run_analysis
    from .threads import set_threads

    set_threads(args.threads)

    config = AnalysisConfig(bond_deviation_limit_angstrom=args.bond_deviation, evaluate_errors=not args.no_errors,
                            evaluation_batch_size=args.batch_size, water=args.water)
    analysis = analyze_run(args.rundir, data=args.data, model=_model(args), config=config,
                           energy_unit=args.file_energy_unit, length_unit=args.file_length_unit, progress=not args.quiet,
                           topology=args.topology, frame_interval_ps=args.frame_interval_ps)
    target = Path(args.rundir)
    out = Path(args.out) if args.out else (target.with_name(f"{target.name}_{DEFAULT_ANALYSIS_FOLDER}")
                                           if target.is_file() else target / DEFAULT_ANALYSIS_FOLDER)
    files = write_run_analysis(analysis, out, plots=args.plots)
    doc = analysis.document
    bonds, diagnosis = doc["bonds"], doc["diagnosis"]
    hr = doc["distance_distribution"]["mae"]
    print(f"{args.rundir}: {doc['run']['frames']} frames to {doc['run']['last_frame_time_ps']:.3f} ps; "
          f"{bonds['n_broken']} of {bonds['n_bonds']} bonds beyond ±{bonds['limit_angstrom']} Å; "
          f"h(r) MAE {'n/a (no reference data)' if hr is None else f'{hr:.4f}'}; "
          f"RMSD to start {doc['rmsd_to_start_nm']['final']:.4f} nm")
    if "solvation" in doc:
        solv = doc["solvation"]
        print(f"  water: {solv['waters']} molecules, density {solv['density_g_per_cm3']['mean']:.3f} g/cm^3 (mean), "
              f"{solv['first_shell_waters']['mean']:.1f} in the first shell (O within "
              f"{solv['first_shell_waters']['shell_nm']} nm)")
    for bond in diagnosis["bonds"]:
        text = (f"  broke at {bond['first_time_ps']:.4g} ps: {bond['elements'][0]}{bond['atoms'][0]}-"
                f"{bond['elements'][1]}{bond['atoms'][1]}")
        for atom in bond.get("atom_errors", []):
            text += (f"; {atom['element']}{atom['index']} FNM MAE {atom['fnm_mae']:.3g} {diagnosis['units']['fnm']} "
                     f"(rank {atom['fnm_mae_rank']}/{diagnosis['n_atoms']}), "
                     f"force MAE {atom['force_mae']:.3g} {diagnosis['units']['force']}")
        print(text)
    if not diagnosis["evaluated"]:
        print(f"  model errors not evaluated: {diagnosis['reason']}")
    print(f"wrote {files['json'][0]} and {len(files['tables'])} tables, {len(files['plots'])} figures in {out}")
    return 0


def _simulate(args) -> int:
    from .config import config_from_args
    from .md import SimulationConfig
    from .md.start import run_from_dataset_frame, run_from_structure

    if args.min_nonbonded_distance_angstrom == 0:  # --min-distance 0: the criterion off
        args.min_nonbonded_distance_angstrom = None
    config = config_from_args(SimulationConfig, args)
    trust = None
    if args.untrusted_threshold is not None and args.stop_when_untrusted is not None:
        raise InputError("give --untrusted-threshold or --stop-when-untrusted, not both")
    if args.committee:
        from .md.trust import TrustSettings

        threshold = args.stop_when_untrusted if args.stop_when_untrusted is not None else args.untrusted_threshold
        committee = Path(args.committee[0]) if len(args.committee) == 1 else tuple(args.committee)
        trust = TrustSettings(committee, threshold, args.stop_when_untrusted is not None)
    elif args.untrusted_threshold is not None or args.stop_when_untrusted is not None:
        raise InputError("--untrusted-threshold and --stop-when-untrusted need --committee FILE.pt")
    if args.replicas != 1 or args.frames is not None:
        return _simulate_replicas(args, config, trust)
    if args.data:
        summary = run_from_dataset_frame(_model(args), _load(args, args.data), args.frame, args.out, config,
                                         progress=not args.quiet, trust=trust)
    else:
        summary = run_from_structure(_model(args), args.structure, args.out, config, progress=not args.quiet,
                                     trust=trust)
    state = "stable" if summary.stable else f"COLLAPSED at {summary.collapse_time_ps} ps ({summary.collapse_reason})"
    if summary.stopped_untrusted:
        state = f"stopped UNTRUSTED at {summary.first_untrusted_time_ps:g} ps (frames in {summary.untrusted_frames['file']})"
    if summary.max_force_uncertainty_kcal_per_mol_per_A is not None:
        state += f"; largest committee force spread {summary.max_force_uncertainty_kcal_per_mol_per_A:.3g} kcal/mol/Å"
    speed = "" if summary.ns_per_day is None else f", {summary.ns_per_day:.2f} ns/day"
    print(f"{args.out}: {summary.steps_completed}/{summary.steps_requested} steps, {state}{speed}")
    return 0


def _simulate_replicas(args, config, trust) -> int:
    """`simulate --replicas N`: N copies in one Context (openmlff.md.replicas), one line per copy."""
    import numpy as np

    from .md.replicas import run_replicas
    from .md.start import reference_frames

    n = args.replicas
    if n < 1:
        raise InputError(f"--replicas must be a positive integer, got {n}")
    if trust is not None:
        raise InputError("--committee is not available with --replicas (run the starts one by one)")
    if args.frames is not None and not args.data:
        raise InputError("--frames needs --data")
    if args.data:
        dataset = _load(args, args.data)
        frames = args.frames if args.frames is not None else [args.frame] * n
        if len(frames) != n:
            raise InputError(f"--replicas {n} needs {n} frames, --frames gives {len(frames)}")
        bad = [f for f in frames if not 0 <= f < dataset.n_frames]
        if bad:
            raise InputError(f"{args.data}: frame {bad[0]} does not exist (the dataset has {dataset.n_frames} "
                             "frames, 0-based)")
        z, starts, topology, reference = dataset.z, dataset.R[frames], None, reference_frames(dataset.R)
        seeds = [config.seed + k for k in range(n)] if args.frames is None or len(set(frames)) < n else [config.seed] * n
    else:
        from .structures import load_structure

        s = load_structure(args.structure)
        z, starts, topology, reference = s.atomic_numbers, np.stack([s.positions_angstrom] * n), s.topology, None
        seeds = [config.seed + k for k in range(n)]
    summaries = run_replicas(_model(args), z, starts, args.out, config, seeds=seeds, topology=topology,
                             reference_positions_angstrom=reference, progress=not args.quiet)
    for k, summary in enumerate(summaries):
        state = "stable" if summary.stable else f"COLLAPSED at {summary.collapse_time_ps} ps ({summary.collapse_reason})"
        speed = "" if summary.ns_per_day is None else f", {summary.ns_per_day:.2f} ns/day per copy"
        print(f"{args.out}/replica_{k:03d} (seed {seeds[k]}): {summary.steps_completed}/{summary.steps_requested} "
              f"steps, {state}{speed}")
    return 0


def _correlate_parser(sub) -> None:
    co = sub.add_parser("correlate", help="correlate each force metric with MD stability over a campaign's runs")
    co.add_argument("campaign_dir")
    co.add_argument("--out", default=None, help="output folder (default CAMPAIGN_DIR/correlation)")
    co.add_argument("--data", default=None, help="the models' reference data (default: each model's training file)")
    co.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals")
    co.add_argument("--n-clusters", type=int, default=None, help="conformation clusters (default: silhouette rule)")
    co.add_argument("--quiet", action="store_true")
    _model_arguments(co, options=False)
    co.set_defaults(handler=_correlate)


def _correlate(args) -> int:
    from .campaign.correlate import correlate_campaign

    _model(args, name="")  # --allow-model-code
    doc = correlate_campaign(args.campaign_dir, args.out, data=args.data, n_bootstrap=args.bootstrap,
                             n_clusters=args.n_clusters, progress=not args.quiet)
    out = args.out or str(Path(args.campaign_dir) / "correlation")
    print(f"{doc['n_runs']} runs correlated; tables and report.html in {out}")
    return 0


def _campaign_parser(sub) -> None:
    """`campaign run SPEC` and `campaign status DIR` (openmlff.campaign)."""
    ca = sub.add_parser("campaign", help="stability campaigns: a grid of MD runs in a local pool or on Dask")
    ca_sub = ca.add_subparsers(dest="campaign_command")
    run = ca_sub.add_parser("run", help="run (or resume) every unfinished run of a campaign")
    run.add_argument("spec", help="campaign spec (.toml or .json), or an existing campaign directory")
    run.add_argument("--out", default=None, help="campaign directory (default: <spec folder>/<spec name>)")
    run.add_argument("--executor", choices=["local", "dask"], default=None,
                     help="local process pool (default) or Dask (default when --scheduler is given)")
    run.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://head:8786")
    run.add_argument("--workers", type=int, default=None, help="runs at a time (default: cores // threads per run)")
    run.add_argument("--threads-per-run", type=int, default=1, help="torch and OpenMM CPU threads per run (default 1)")
    run.add_argument("--retry-failed", action="store_true", help="run failed runs again (resuming them)")
    run.add_argument("--status-interval", type=finite_float, default=60.0, help="seconds between status lines (default 60)")
    run.add_argument("--quiet", action="store_true")
    _model_arguments(run, options=False)
    run.set_defaults(handler=_campaign_run)
    st = ca_sub.add_parser("status", help="counts by state, progress, MD speed and time left of a campaign")
    st.add_argument("directory")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.set_defaults(handler=_campaign_status)


def _campaign_run(args) -> int:
    from .campaign import FAILED, format_status, run_campaign

    _model(args, name="")  # --allow-model-code
    result = run_campaign(args.spec, out=args.out, executor=args.executor, n_workers=args.workers,
                          scheduler_address=args.scheduler, torch_threads_per_run=args.threads_per_run,
                          retry_failed=args.retry_failed, progress=not args.quiet,
                          status_interval_s=args.status_interval)
    print(format_status(result.status, runs=False))
    failed = [r for r in result.status["runs"] if r["state"] == FAILED]
    for r in failed:
        print(f"  failed: {r['run_id']}: {r['error']}", file=sys.stderr)
    if failed and not args.retry_failed:
        print(f"  {len(failed)} failed run(s) are left as they are; --retry-failed runs them again", file=sys.stderr)
    if result.stopped:  # a full disk: one line, non-zero; the same command resumes them
        print(f"openmlff campaign: error: {result.stopped[0]} ({len(result.stopped)} run(s) stopped, left interrupted: "
              "free room and run the same command to resume them)", file=sys.stderr)
        return 1
    return 3 if failed else 0


def _campaign_status(args) -> int:
    from .campaign import campaign_status, format_status

    status = campaign_status(args.directory)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
