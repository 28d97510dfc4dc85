"""`openmlff metrics | analyze | correlate`: a model's force errors, a run's analysis and collapse diagnosis,
metrics against stability over a campaign (openmlff.metrics, openmlff.analysis, openmlff.campaign.correlate)."""

from __future__ import annotations

from pathlib import Path

from ..core.config import add_config_arguments, config_from_args, finite_float
from .common import MODEL_HELP, load, model_arguments, model_ref, threads_option, unit_options


def add_metrics(me) -> None:
    me.add_argument("--model", required=True, help=MODEL_HELP)
    model_arguments(me)
    me.add_argument("--data", required=True)
    unit_options(me)
    me.add_argument("--out", required=True, help="JSON file")
    me.add_argument("--checkpoint", default=None, help="training checkpoint (or split file) whose split --frames "
                                                       "refers to")
    threads_option(me)
    from ..report.metrics_outputs import MetricsConfig

    add_config_arguments(me, MetricsConfig, group="metrics settings (openmlff.report.metrics_outputs.MetricsConfig)")
    me.add_argument("--csv-dir", default=None,
                    help="folder for elements.csv, atoms.csv, frames.csv, clusters.csv (default: OUT_STEM_csv beside the JSON)")
    me.add_argument("--plots", default=None, metavar="DIR", help="also write PNG figures into DIR")
    me.set_defaults(handler=_metrics)


def add_analyze(an) -> None:
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
    unit_options(an)
    an.add_argument("--model", default=None,
                    help="the model for the diagnosis (default: the run's model, run.json); " + MODEL_HELP)
    model_arguments(an)
    an.add_argument("--out", default=None, help="output folder (default RUNDIR/analysis)")
    an.add_argument("--plots", action="store_true", help="also write PNG figures")
    threads_option(an)
    an.add_argument("--quiet", action="store_true")
    from ..analysis.run_analysis import AnalysisConfig

    add_config_arguments(an, AnalysisConfig, choices={"water": ["strip", "keep"]},
                         group="analysis settings (openmlff.analysis.AnalysisConfig)")
    an.set_defaults(handler=_analyze)


def add_correlate(co) -> None:
    from ..campaign.correlate import CorrelationConfig

    co.add_argument("campaign_dir")
    co.add_argument("--out", default=None, help="output folder (default CAMPAIGN_DIR/correlation)")
    co.add_argument("--data", default=None, help="the models' reference data (default: each model's training file)")
    add_config_arguments(co, CorrelationConfig, group="correlation settings (openmlff.campaign.correlate."
                                                      "CorrelationConfig)")
    co.add_argument("--quiet", action="store_true")
    model_arguments(co, options=False)
    co.set_defaults(handler=_correlate)


def _correlate(args) -> int:
    from ..campaign.correlate import CorrelationConfig, correlate_campaign

    model_ref(args, name="")  # --allow-model-code
    doc = correlate_campaign(args.campaign_dir, args.out, config_from_args(CorrelationConfig, args), data=args.data,
                             progress=not args.quiet)
    out = args.out or str(Path(args.campaign_dir) / "correlation")
    print(f"{doc['n_runs']} runs correlated; tables and report.html in {out}")
    return 0


def _metrics(args) -> int:
    from ..report.metrics_outputs import MetricsConfig, write_model_metrics
    from ..core.threads import set_threads

    config = config_from_args(MetricsConfig, args)
    dataset = load(args, args.data)
    set_threads(args.threads, atoms_per_call=config.batch_size * dataset.n_atoms)
    report, tables, figures = write_model_metrics(model_ref(args), dataset, args.out, config,
                                                  split_source=args.checkpoint, csv_dir=args.csv_dir,
                                                  plots_dir=args.plots)
    print(f"tables: {', '.join(map(str, tables))}" + (f"; figures: {', '.join(map(str, figures))}" if figures else ""))
    g, u = report["global"], report["units"]
    print(f"{len(report['frames']['dataset_frame'])} frames ({config.frames}): force MAE {g['force_mae']:.3f} "
          f"{u['force']}, max {g['force_max']:.3f} {u['force']}, FNM MAE {g['fnm_mae']:.4f} {u['fnm']}, "
          f"energy MAE {g['energy_mae']:.3f} {u['energy']} -> {args.out}")
    if "bond_scan" in report:
        b = {k: "n/a" if v is None else f"{v:.1%}" for k, v in report["bond_scan"]["summary"].items()}
        print(f"bond scans ({len(report['bond_scan']['scans'])}): force pushing the bond away in "
              f"{b['wrong_sign_share']} of points ({b['H.wrong_sign_share']} on bonds with H), a false well in "
              f"{b['spurious_minimum_share']} of scans")
    return 0


def _analyze(args) -> int:
    from ..analysis import AnalysisConfig, analyze_run
    from ..report import DEFAULT_ANALYSIS_FOLDER, write_run_analysis
    from ..core.threads import set_threads

    set_threads(args.threads)

    config = config_from_args(AnalysisConfig, args)
    analysis = analyze_run(args.rundir, data=args.data, model=model_ref(args), config=config,
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
