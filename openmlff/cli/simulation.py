"""`openmlff simulate`: MD in OpenMM, one run or N copies in one Context (openmlff.md). The MD settings' flags
come from SimulationConfig, the same names as a campaign spec's [md] keys."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.config import add_config_arguments, config_from_args, finite_float
from ..core.errors import InputError
from ..md.config import TRAJECTORY_FORMATS, SimulationConfig
from ..md.integrators import INTEGRATORS
from ..potentials.model_ref import BACKENDS
from .common import MODEL_HELP, load, model_arguments, model_ref, unit_options


def add_simulate(si) -> None:
    si.add_argument("--model", required=True, help=MODEL_HELP)
    model_arguments(si)
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
    unit_options(si)
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


def _simulate(args) -> int:
    from ..md.start import run_from_dataset_frame, run_from_structure

    if args.min_nonbonded_distance_angstrom == 0:  # --min-distance 0: the criterion off
        args.min_nonbonded_distance_angstrom = None
    config = config_from_args(SimulationConfig, args)
    trust = None
    if args.untrusted_threshold is not None and args.stop_when_untrusted is not None:
        raise InputError("give --untrusted-threshold or --stop-when-untrusted, not both")
    if args.committee:
        from ..md.trust import TrustSettings

        threshold = args.stop_when_untrusted if args.stop_when_untrusted is not None else args.untrusted_threshold
        committee = Path(args.committee[0]) if len(args.committee) == 1 else tuple(args.committee)
        trust = TrustSettings(committee, threshold, args.stop_when_untrusted is not None)
    elif args.untrusted_threshold is not None or args.stop_when_untrusted is not None:
        raise InputError("--untrusted-threshold and --stop-when-untrusted need --committee FILE.pt")
    if args.replicas != 1 or args.frames is not None:
        return _simulate_replicas(args, config, trust)
    if args.data:
        summary = run_from_dataset_frame(model_ref(args), load(args, args.data), args.frame, args.out, config,
                                         progress=not args.quiet, trust=trust)
    else:
        summary = run_from_structure(model_ref(args), args.structure, args.out, config, progress=not args.quiet,
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
    from ..md.start import replicas_from_dataset, replicas_from_structure

    n = args.replicas
    if n < 1:
        raise InputError(f"--replicas must be a positive integer, got {n}")
    if trust is not None:
        raise InputError("--committee is not available with --replicas (run the starts one by one)")
    if args.frames is not None and not args.data:
        raise InputError("--frames needs --data")
    if args.data:
        frames = args.frames if args.frames is not None else [args.frame] * n
        if len(frames) != n:
            raise InputError(f"--replicas {n} needs {n} frames, --frames gives {len(frames)}")
        summaries, seeds = replicas_from_dataset(model_ref(args), load(args, args.data), frames, args.out, config,
                                                 progress=not args.quiet)
    else:
        summaries, seeds = replicas_from_structure(model_ref(args), args.structure, n, args.out, config,
                                                   progress=not args.quiet)
    for k, summary in enumerate(summaries):
        state = "stable" if summary.stable else f"COLLAPSED at {summary.collapse_time_ps} ps ({summary.collapse_reason})"
        speed = "" if summary.ns_per_day is None else f", {summary.ns_per_day:.2f} ns/day per copy"
        print(f"{args.out}/replica_{k:03d} (seed {seeds[k]}): {summary.steps_completed}/{summary.steps_requested} "
              f"steps, {state}{speed}")
    return 0
