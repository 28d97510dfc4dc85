"""`openmlff train | finetune | active-learn | recruit | export`: making models (openmlff.training, openmlff.improve,
openmlff.model_file.writer). Their settings' flags come from TrainingConfig (openmlff.core.config.add_config_arguments)."""

from __future__ import annotations

from pathlib import Path

from ..core.config import add_config_arguments, config_from_args
from ..core.errors import InputError
from .common import load, threads_option, unit_options


def _training_settings(p, group: str) -> None:
    """TrainingConfig's fields as options (`--batch-size`, `--learning-rate`/`--lr`, ...)."""
    from ..models import ARCHITECTURES
    from ..training.config import DTYPES, PRESETS, TrainingConfig

    add_config_arguments(p, TrainingConfig, choices={"architecture": sorted(ARCHITECTURES), "preset": list(PRESETS),
                                                     "dtype": list(DTYPES)}, group=group)


def add_train(tr) -> None:
    tr.add_argument("--data", required=True)
    unit_options(tr)
    tr.add_argument("--out", required=True, help="the training folder (model.ckpt; resumed when it exists)")
    _training_settings(tr, "training settings (openmlff.training.TrainingConfig)")
    tr.add_argument("--ensemble", type=int, default=None, metavar="K",
                    help="train a committee of K models (seeds SEED..SEED+K-1, one split) into OUT/member_<k> and "
                         "export it as OUT/committee.pt")
    tr.add_argument("--ensemble-workers", type=int, default=1, metavar="W",
                    help="with --ensemble: members trained W at a time, one process of one thread each (default 1: "
                         "one after another with --torch-threads)")
    tr.add_argument("--continue-from", default=None, metavar="CHECKPOINT",
                    help="start from this trained model's best weights, with its architecture, size and split "
                         "(other settings from this command line)")
    tr.add_argument("--add-data", default=None, metavar="FILE",
                    help="with --continue-from: labelled frames (e.g. from `openmlff recruit`) added to the "
                         "training set; --data stays the parent's data, the two are trained on as OUT/training_data.npz")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(handler=_train)


def add_finetune(ft) -> None:
    from ..improve.reweight import REWEIGHT_RULES, FinetuneConfig

    ft.add_argument("checkpoint", help="the trained model's checkpoint (model.ckpt)")
    ft.add_argument("--out", required=True, help="the fine-tuning folder (model.ckpt; resumed when it exists)")
    ft.add_argument("--data", default=None, help="the parent's training data (default: the file it records)")
    unit_options(ft)
    add_config_arguments(ft, FinetuneConfig, required=("reweight",), choices={"reweight": list(REWEIGHT_RULES)},
                         group="fine-tuning settings (openmlff.improve.reweight.FinetuneConfig)")
    ft.add_argument("--quiet", action="store_true")
    ft.set_defaults(handler=_finetune)


def add_active_learn(al) -> None:
    from ..improve.active import ActiveLearningConfig

    al.add_argument("--data", required=True, help="labelled data; new labels must be at its level of theory")
    unit_options(al)
    al.add_argument("--out", required=True, help="the loop's folder (rounds.json, report.html; resumed when it exists)")
    al.add_argument("--seeds", type=int, default=1, help="MD seeds per start (0..N-1; default 1)")
    add_config_arguments(al, ActiveLearningConfig, exclude=("training", "seeds"), required=("method", "rounds"),
                         choices={"drive": ["mean", "member"]},
                         group="the loop's settings (openmlff.improve.active.ActiveLearningConfig)")
    al.add_argument("--keep-going", dest="stop_when_not_improving", action="store_false",
                    help="do not stop when stability stops improving (--no-stop-when-not-improving)")
    _training_settings(al, "round 0's training settings (openmlff.training.TrainingConfig)")
    al.add_argument("--quiet", action="store_true")
    al.set_defaults(handler=_active_learn)


def add_recruit(rc) -> None:
    from ..improve.recruit import RECRUIT_STRATEGIES, RecruitConfig
    from ..metrics.metric_sets import FRAME_METRICS

    rc.add_argument("checkpoint", help="the trained model's checkpoint (model.ckpt)")
    rc.add_argument("--pool", required=True, help="labelled frames to choose from (the training data file itself: "
                                                  "its frames outside the model's split)")
    unit_options(rc)
    add_config_arguments(rc, RecruitConfig, required=("count", "strategy"),
                         choices={"strategy": list(RECRUIT_STRATEGIES), "score": list(FRAME_METRICS)},
                         group="recruiting settings (openmlff.improve.recruit.RecruitConfig)")
    threads_option(rc)
    rc.add_argument("--out", required=True, help="output dataset file (.npz, openmlff format)")
    rc.add_argument("--quiet", action="store_true")
    rc.set_defaults(handler=_recruit)


def add_export(ex) -> None:
    ex.add_argument("checkpoint", nargs="?", default=None)
    ex.add_argument("--committee", nargs="+", default=None, metavar="CHECKPOINT",
                    help="export these checkpoints as one committee: the mean drives MD, uncertainty(positions) "
                         "gives the members' force spread")
    ex.add_argument("--out", required=True)
    ex.add_argument("--weights", default="best", choices=["best", "ema", "raw"])
    ex.set_defaults(handler=_export)


def _train(args) -> int:
    from ..training import TrainingConfig, train

    config = config_from_args(TrainingConfig, args)
    dataset = load(args, args.data)
    start = None
    if args.add_data and not args.continue_from:
        raise InputError("--add-data needs --continue-from CHECKPOINT (the model the frames are added for)")
    if args.ensemble is not None:
        if args.continue_from:
            raise InputError("--ensemble trains from scratch; it does not take --continue-from")
        from ..model_file.writer import train_committee_model

        results, path = train_committee_model(dataset, args.out, args.ensemble, config, progress=not args.quiet,
                                              workers=args.ensemble_workers)
        for result in results:
            _print_training(result)
        print(f"wrote {path}: the committee of {len(results)} members")
        return 0
    if args.continue_from:
        from ..training.checkpoint import read_checkpoint
        from ..training.start import continue_start

        added = load(args, args.add_data) if args.add_data else None
        dataset, start = continue_start(read_checkpoint(args.continue_from), dataset, added, args.out)
    result = train(dataset, args.out, config, progress=not args.quiet, start=start)
    _print_training(result)
    return 0


def _print_training(result) -> None:
    print(f"{result.checkpoint}: {result.epochs} epochs, {result.elapsed_s:.0f} s, stopped: {result.stop_reason}; "
          f"best validation force MAE {result.best_val_force_mae_kcal_per_mol_per_A:.3f} kcal/mol/Å, "
          f"energy MAE {result.best_val_energy_mae_kcal_per_mol:.3f} kcal/mol (epoch {result.best_epoch})")


def _finetune(args) -> int:
    from ..improve.reweight import FinetuneConfig, finetune

    data = load(args, args.data) if args.data else None
    result = finetune(args.checkpoint, args.out, config_from_args(FinetuneConfig, args), data=data,
                      progress=not args.quiet)
    _print_training(result)
    return 0


def _active_learn(args) -> int:
    from ..improve.active import ActiveLearningConfig, active_learn, write_active_learning_report
    from ..training import TrainingConfig

    config = config_from_args(ActiveLearningConfig, args, training=config_from_args(TrainingConfig, args),
                              seeds=tuple(range(args.seeds)))
    document = active_learn(load(args, args.data), args.out, config, progress=not args.quiet)
    page = write_active_learning_report(document, Path(args.out) / "report.html")
    for e in document["rounds"]:
        s = e.get("stability") or {}
        print(f"round {e['round']}: {e['training_frames']} training frames, held-out force MAE "
              f"{e['held_out']['force_mae']:.3f} kcal/mol/Å, {s.get('n_stable')}/{s.get('n_runs')} runs stable"
              + (f"; +{e['labelled_frames']} frames labelled in {e['label_wall_s']:.0f} s" if "labelled_frames" in e else ""))
    print(f"stopped: {document.get('stop_reason')}; {page}")
    return 0


def _recruit(args) -> int:
    from ..data import save_dataset
    from ..improve.recruit import RecruitConfig, recruit_frames
    from ..core.threads import set_threads

    pool = load(args, args.pool)
    set_threads(args.threads, atoms_per_call=32 * pool.n_atoms)
    result = recruit_frames(args.checkpoint, pool, config_from_args(RecruitConfig, args), progress=not args.quiet)
    save_dataset(result.dataset, args.out)
    r = result.record
    text = f"wrote {args.out}: {args.count} of {r['pool']['unseen_frames']} unseen pool frames ({args.strategy})"
    if "recruited_score_mean" in r:
        text += (f"; mean {args.score} {r['recruited_score_mean']:.3f} {r['unit']} against "
                 f"{r['candidates_score_mean']:.3f} over all unseen frames")
    print(text)
    return 0


def _export(args) -> int:
    from ..model_file.writer import export_checkpoint, export_committee

    if (args.checkpoint is None) == (args.committee is None):
        raise InputError("give either one CHECKPOINT or --committee CHECKPOINT CHECKPOINT ...")
    export, source = (export_committee, args.committee) if args.committee else (export_checkpoint, args.checkpoint)
    print(f"wrote {export(source, args.out, weights=args.weights)}")
    return 0
