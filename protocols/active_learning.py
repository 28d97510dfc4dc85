"""Does active learning make an MLFF's MD more stable than the same number of random frames? Two molecules.

The protocol (issue 13, item 5), both parts through `openmlff.improve.active` (the loop `openmlff
active-learn` runs) with the same settings:

(a) rMD17 aspirin with `dft` labels (PBE/def2-SVP, the level of the rMD17 labels): a committee of 2 ET
    models (50 training, 50 validation, 200 test frames, split seed 0, 120 epochs: the improvement
    protocol's baseline, which collapses in a fair share of 500 K runs), then --rounds active rounds:
    a campaign from held-out starts driven by member 0 with the committee's spread at every report, the
    --frames-per-round most uncertain pre-collapse frames (thinned for near-duplicates) labelled with
    PySCF, every member continued on them. Control: the same number of frames drawn at random from the
    shipped rMD17 frames outside the split (already labelled at the same level), added in the same
    rounds with the same continued training. That is the fair question: are the frames the committee
    asks for worth more than as many frames of the same kind of data?
(b) Ac-Ala3-NHMe entirely at the GFN2-xTB level: the data are GFN2-xTB Langevin MD at 500 K (`openmlff
    data generate`, --alanine-frames frames, one every 5 fs), which is also the ground truth for the
    structure: h(r) and the Ramachandran (phi, psi) distribution of the model's MD against those of the
    xTB MD. Same loop with `gfn2-xtb` labels, same random-frames control from the generated frames
    outside the split. A committee of 2, round 0 trained 100 epochs and each continuation 15 (a peptide
    epoch costs about three aspirin epochs here), so that the loop fits in the protocol's time.

Per arm (baseline = round 0, each active round, the random control): share of stable runs with its
Wilson 95 % interval, Kaplan-Meier median time to collapse, two-sided log-rank tests (last active round
against the control and against the baseline), the committee mean's and member 0's held-out force
metrics, the uncertainty ranking, h(r) MAE against the reference data (all reported frames before any
collapse, pooled over the arm's runs), and for the peptide the Ramachandran total-variation distance;
the cost of every round (labelling, training, MD wall time). Writes OUT/<part>/report.html (arms,
comparisons, survival curves), OUT/<part>/active/report.html (the loop's own page), OUT/results.json,
OUT/answer.txt. Everything resumes after a kill (the loop, the control, the generated data).
--quick: committees of 2, one round, few epochs, frames and starts, 1 ps runs: a smoke test of the whole
protocol (aimed at under 15 minutes here; the README has its measured time), too small to decide anything.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pages import result_page  # noqa: E402

PARTS = ("aspirin", "alanine")
RAMACHANDRAN_BIN_DEG = 30.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="results folder (default results/active_learning[_quick])")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts (default both)")
    p.add_argument("--rounds", type=int, default=2, help="active rounds (default 2)")
    p.add_argument("--committee", type=int, default=2, help="aspirin: committee size (default 2)")
    p.add_argument("--alanine-committee", type=int, default=2, help="Ac-Ala3-NHMe: committee size (default 2)")
    p.add_argument("--frames-per-round", type=int, default=4, help="aspirin: DFT frames per round (default 4)")
    p.add_argument("--alanine-frames-per-round", type=int, default=10, help="Ac-Ala3-NHMe: xTB frames per round")
    p.add_argument("--epochs", type=int, default=120, help="aspirin: round 0's epochs (default 120)")
    p.add_argument("--continue-epochs", type=int, default=20, help="aspirin: epochs of each continued training (20)")
    p.add_argument("--alanine-epochs", type=int, default=100, help="Ac-Ala3-NHMe: round 0's epochs (default 100)")
    p.add_argument("--alanine-continue-epochs", type=int, default=15,
                   help="Ac-Ala3-NHMe: epochs of each continued training (default 15)")
    p.add_argument("--starts", type=int, default=8, help="held-out starts per campaign, aspirin (default 8)")
    p.add_argument("--alanine-starts", type=int, default=8, help="held-out starts per campaign, Ac-Ala3-NHMe (8)")
    p.add_argument("--length-ps", type=float, default=3.0, help="MD horizon per run, aspirin, ps (default 3)")
    p.add_argument("--alanine-length-ps", type=float, default=3.0, help="MD horizon per run for Ac-Ala3-NHMe, ps")
    p.add_argument("--alanine-frames", type=int, default=400, help="GFN2-xTB frames to generate (default 400)")
    p.add_argument("--temperature", type=float, default=500.0, help="K, data generation and MD (default 500)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="jobs at a time (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="committees of 2, 1 round, 2-4 frames a round, few epochs, 4 starts, 1 ps: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.committee = args.alanine_committee = 2
        args.rounds, args.frames_per_round, args.alanine_frames_per_round = 1, 2, 4
        args.epochs, args.continue_epochs, args.alanine_epochs, args.alanine_continue_epochs = 20, 5, 10, 5
        args.starts = args.alanine_starts = 4
        args.length_ps = args.alanine_length_ps = 1.0
        args.alanine_frames = 120
    args.out = Path(args.out or ("results/active_learning_quick" if args.quick else "results/active_learning"))
    return args


def say(msg: str) -> None:
    print(f"[active-learning {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def alanine_data(args, folder: Path) -> Path:
    """GFN2-xTB Langevin MD of Ac-Ala3-NHMe at --temperature: the data and the structural ground truth."""
    from openmlff.reference.sampling import generate_dataset

    path = folder / "ac-ala3-nhme_gfn2-xtb.npz"
    if not path.exists():
        say(f"generating {args.alanine_frames} GFN2-xTB frames of Ac-Ala3-NHMe at {args.temperature:g} K "
            f"(a frame every 5 fs after 1 ps; resumable)")
        t0 = time.perf_counter()
        generate_dataset("ac-ala3-nhme", path, method="gfn2-xtb", temperature_K=args.temperature,
                         n_frames=args.alanine_frames, equilibration_steps=500 if args.quick else 2000, seed=0,
                         progress=True)
        say(f"generated in {time.perf_counter() - t0:.0f} s")
    return path


def part_settings(args, part: str, n_frames: int):
    """The ActiveLearningConfig of one part."""
    from openmlff.improve.active import ActiveLearningConfig
    from openmlff.training import TrainingConfig

    aspirin = part == "aspirin"
    n_test = 200 if aspirin else min(100, n_frames // 3)
    training = TrainingConfig(n_train=50, n_val=50 if aspirin else min(50, n_frames // 6), n_test=n_test, seed=0,
                              split_seed=0, warmup_steps=100, max_epochs=args.epochs if aspirin else args.alanine_epochs,
                              early_stopping_patience_epochs=10_000, torch_threads=1)
    length = args.length_ps if aspirin else args.alanine_length_ps
    return ActiveLearningConfig(
        method="dft" if aspirin else "gfn2-xtb", rounds=args.rounds,
        committee_size=args.committee if aspirin else args.alanine_committee,
        training=training, continue_epochs=args.continue_epochs if aspirin else args.alanine_continue_epochs,
        starts=args.starts if aspirin else args.alanine_starts,
        seeds=(0,), temperature_K=args.temperature, md_steps=int(round(length * 1000 / 0.5)), timestep_fs=0.5,
        report_interval_steps=50, frames_per_round=args.frames_per_round if aspirin else args.alanine_frames_per_round,
        stop_when_not_improving=False, label_workers=args.workers, md_workers=args.workers, drive="member",
        training_workers=args.workers)


def random_control(dataset, folder: Path, active_dir: Path, config) -> dict:
    """The control arm: round 0's committee, then per round the same number of frames drawn at random from the
    data outside every member's split, same continued training; measured like the last active round."""
    from openmlff.core.atomic_io import atomic_write_json
    from openmlff.data import save_dataset
    from openmlff.improve.active import continue_committee, measure_committee
    from openmlff.improve.recruit import RecruitConfig, recruit_frames

    record_path = folder / "control.json"
    if record_path.is_file():
        import json

        return json.loads(record_path.read_text())
    members = sorted((active_dir / "round_0" / "members").glob("member_*/model.ckpt"))
    for r in range(1, config.rounds + 1):
        picked = folder / f"round_{r - 1}" / "labelled.npz"
        if not picked.exists():
            result = recruit_frames(members[0], dataset, RecruitConfig(count=config.frames_per_round, strategy="random",
                                                                       seed=r))
            picked.parent.mkdir(parents=True, exist_ok=True)
            save_dataset(result.dataset, picked)
        say(f"  control round {r}: continuing the committee on {config.frames_per_round} random frames")
        members = continue_committee(r, members, folder, config, progress=False)
    say(f"  control: campaign of round {config.rounds}'s committee")
    entry = measure_committee(config.rounds, members, dataset, folder, config, progress=False)
    atomic_write_json(record_path, entry)
    return entry


def structure_errors(campaign_dir: Path, reference, structure: str | None = None) -> dict:
    """h(r) MAE (and, given the built-in structure whose residues name the backbone, the Ramachandran
    total-variation distance) of the reported pre-collapse frames of every run of a campaign, pooled, against
    the reference data's frames."""
    import mdtraj

    from openmlff.analysis import compute_distance_distribution, dataset_trajectory, distance_distribution_mae
    from openmlff.analysis.observables import backbone_dihedrals_deg
    from openmlff.campaign import CampaignDirectory
    from openmlff.improve.active import candidate_frames

    R, _, labels = candidate_frames(campaign_dir)
    if structure is not None:  # a run's topology.pdb from data frames has no residue names
        from openmlff.structures import load_structure

        topology = mdtraj.Topology.from_openmm(load_structure(structure).topology)
    else:
        where = CampaignDirectory(campaign_dir)
        topology = mdtraj.load(str(where.run_dir(where.spec().expand()[0].run_id) / "topology.pdb")).topology
    sim = mdtraj.Trajectory(xyz=(R / 10.0).astype(np.float32), topology=topology)
    ref = dataset_trajectory(reference, topology)
    largest = np.linalg.norm(ref.xyz[:, :, None] - ref.xyz[:, None, :], axis=-1).max()
    r_max, width = float(np.ceil(15 * largest) / 10), 0.01
    _, h = compute_distance_distribution(sim, (0.0, r_max), width)
    _, h_ref = compute_distance_distribution(ref, (0.0, r_max), width)
    out = {"frames": int(sim.n_frames), "reference_frames": int(ref.n_frames),
           "h_r_mae": distance_distribution_mae(h, h_ref, width), "h_r_range_nm": [0.0, r_max], "h_r_bin_nm": width}
    if structure is not None:
        a, b = backbone_dihedrals_deg(sim), backbone_dihedrals_deg(ref)
        edges = np.arange(-180.0, 180.0 + RAMACHANDRAN_BIN_DEG, RAMACHANDRAN_BIN_DEG)
        tv = {}
        for k, residue in enumerate(a["phi_residues"]):
            if residue not in a["psi_residues"]:
                continue
            j = a["psi_residues"].index(residue)
            p, _, _ = np.histogram2d(a["phi_deg"][:, k], a["psi_deg"][:, j], bins=[edges, edges])
            q, _, _ = np.histogram2d(b["phi_deg"][:, k], b["psi_deg"][:, j], bins=[edges, edges])
            tv[residue] = float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())
        out["ramachandran_tv_distance"] = tv
        out["ramachandran_tv_mean"] = float(np.mean(list(tv.values()))) if tv else None
        out["ramachandran_bin_deg"] = RAMACHANDRAN_BIN_DEG
    return out


def member_zero_metrics(entry: dict, test) -> dict:
    from openmlff.metrics.evaluation import evaluate_model

    ev = evaluate_model(Path(entry["committee"]).with_name("member_0.pt"), test, include_frames=False)
    return {"force_mae": ev["force_mae"], "force_max": ev["force_max"],
            "H_fnm_mae": ev["elements"].get("H", {}).get("fnm_mae")}


def run_part(args, part: str) -> dict:
    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.improve.active import active_learn, write_active_learning_report
    from openmlff.stability.runs import comparison_row
    from openmlff.report.campaign_page import write_campaign_report
    from openmlff.training.checkpoint import read_checkpoint

    folder = args.out / part
    folder.mkdir(parents=True, exist_ok=True)
    data_path = shipped_dataset_path() if part == "aspirin" else alanine_data(args, folder)
    dataset = load_dataset(data_path)
    config = part_settings(args, part, dataset.n_frames)
    say(f"[{part}] active learning with {config.method} labels: committee of {config.committee_size}, "
        f"{config.rounds} rounds of {config.frames_per_round} frames, {config.starts} starts x "
        f"{config.md_steps * config.timestep_fs / 1000:g} ps at {config.temperature_K:g} K per campaign")
    t0 = time.perf_counter()
    document = active_learn(dataset, folder / "active", config, progress=True)
    write_active_learning_report(document, folder / "active" / "report.html")
    say(f"[{part}] control: {config.frames_per_round} random frames per round from the data outside the split")
    control = random_control(dataset, folder / "control", folder / "active", config)
    rounds = {f"active_{e['round']}" if e["round"] else "baseline": e for e in document["rounds"]}
    arms = {**rounds, "random_control": control}
    test = dataset.subset(read_checkpoint(Path(document["rounds"][0]["committee"]).parent / "members" / "member_0" /
                                          "model.ckpt").split.test)
    say(f"[{part}] member 0's held-out metrics and the structure of every arm's MD against the reference data")
    member0 = {name: member_zero_metrics(e, test) for name, e in arms.items()}
    structure = {name: structure_errors(Path(e["committee"]).parent / "campaign", dataset,
                                        None if part == "aspirin" else "ac-ala3-nhme")
                 for name, e in arms.items()}
    last = f"active_{config.rounds}"
    tests = [("random_control", last), ("baseline", last), ("baseline", "random_control")]
    if config.rounds > 1:
        tests.append(("baseline", "active_1"))
    rows = [comparison_row(method, control_name, arms[method]["stability"], arms[control_name]["stability"])
            for control_name, method in tests]
    units = document["rounds"][0]["held_out"]["units"]
    table = {name: {"training frames": e["training_frames"], "committee test.force_mae": e["held_out"]["force_mae"],
                    "member 0 test.force_mae": member0[name]["force_mae"],
                    "member 0 test.force_max": member0[name]["force_max"],
                    "member 0 test.H.fnm_mae": member0[name]["H_fnm_mae"],
                    "uncertainty-error Spearman (frames)":
                        e["held_out"]["uncertainty_spearman"]["frame_mean_uncertainty_vs_force_mae"],
                    "h(r) MAE": structure[name]["h_r_mae"],
                    **({"Ramachandran TV": structure[name]["ramachandran_tv_mean"]} if part == "alanine" else {})}
             for name, e in arms.items()}
    metric_units = {k: units["force"] for k in ("committee test.force_mae", "member 0 test.force_mae",
                                                "member 0 test.force_max")}
    metric_units.update({"member 0 test.H.fnm_mae": units["fnm"], "h(r) MAE": "dimensionless (integral of |dh|)",
                         "Ramachandran TV": f"0-1, {RAMACHANDRAN_BIN_DEG:g} deg bins"})
    level = "PBE/def2-SVP (rMD17 labels; new labels by PySCF)" if part == "aspirin" else "GFN2-xTB (tblite)"
    notes = [f"Level of theory: {level}. MD driven by member 0 of each committee, the committee's spread at every "
             f"report; {config.starts} held-out starts x 1 seed, {config.temperature_K:g} K, 0.5 fs, horizon "
             f"{config.md_steps * config.timestep_fs / 1000:g} ps.",
             f"Control: {config.frames_per_round} random frames per round from the data outside the split, same "
             "continued training as the active rounds.",
             "h(r) and Ramachandran: all reported frames before any collapse, pooled over the arm's runs, against "
             f"the {dataset.n_frames} frames of the reference data."]
    if args.quick:
        notes.append("Quick mode: too few runs to decide anything.")
    write_campaign_report(folder / "report.html", title=f"openmlff active learning: {part}", metrics_table=table,
                          metric_units=metric_units,
                          stability_per_model={n: e["stability"] for n, e in arms.items()}, comparisons=rows,
                          survival=True, notes=notes, figures_dir=folder / "figures")
    cost = [{"round": e["round"], "training_frames": e["training_frames"], "members_training_wall_s": e["training_wall_s"],
             "md_wall_s": e["md_wall_s"], "labelled_frames": e.get("labelled_frames"), "label_wall_s": e.get("label_wall_s"),
             "label_failures": e.get("label_failures"), "candidates": e.get("candidates")} for e in document["rounds"]]
    return {"part": part, "data": str(data_path), "level_of_theory": level, "settings": document["settings"],
            "arms": {n: {"training_frames": e["training_frames"], "held_out_committee": e["held_out"],
                         "held_out_member_0": member0[n], "stability": e["stability"], "structure": structure[n]}
                     for n, e in arms.items()},
            "comparisons": rows, "cost_per_round": cost, "control_training_wall_s": control["training_wall_s"],
            "control_md_wall_s": control["md_wall_s"], "stop_reason": document.get("stop_reason"),
            "wall_time_s": round(time.perf_counter() - t0, 1)}


def answer(result: dict) -> list[str]:
    arms = result["arms"]
    s0 = result["settings"]
    lines = [f"{result['part']}: {result['level_of_theory']}; committee of {s0['committee_size']}, "
             f"{s0['frames_per_round']} frames per round, {s0['starts']} starts x "
             f"{s0['md_steps'] * s0['timestep_fs'] / 1000:g} ps at {s0['temperature_K']:g} K per arm.",
             f"{'arm':<15} {'frames':>6} {'F MAE m0':>8} {'F MAE com':>9} {'H FNM m0':>8} {'rho':>5} {'h(r) MAE':>8} "
             f"{'Rama TV':>7} {'stable [95% CI]':>22} {'KM median ps':>12}"]
    for name, a in arms.items():
        st, lo_hi = a["stability"], a["stability"]["share_stable_ci95"]
        km = st["km_median_time_to_collapse_ps"]
        tv = a["structure"].get("ramachandran_tv_mean")
        rho = a["held_out_committee"]["uncertainty_spearman"]["frame_mean_uncertainty_vs_force_mae"]
        lines.append(f"{name:<15} {a['training_frames']:>6} {a['held_out_member_0']['force_mae']:>8.3f} "
                     f"{a['held_out_committee']['force_mae']:>9.3f} {a['held_out_member_0']['H_fnm_mae']:>8.4f} "
                     f"{rho:>+5.2f} {a['structure']['h_r_mae']:>8.4f} {'-' if tv is None else f'{tv:.3f}':>7} "
                     f"{st['n_stable']:>3}/{st['n_runs']:<3}{st['share_stable']:.2f} [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}] "
                     f"{'n/a' if km is None else f'{km:.2f}':>12}")
    lines.append("Units: force kcal/mol/Å (member 0 drives the MD; 'com' = committee mean), H FNM (kcal/mol/Å)/Da; "
                 "rho: Spearman of the committee's per-frame spread against its error; h(r) MAE = integral of "
                 "|h_MD - h_ref| dr against the reference data; Rama TV: total-variation distance of (phi, psi) "
                 "histograms, mean over residues.")
    for r in result["comparisons"]:
        verdict = (f"no difference to test ({r['note']})" if r["logrank_p"] is None else
                   f"{'longer' if r['better'] == 'method' else 'shorter' if r['better'] == 'control' else 'the same'} "
                   f"survival, log-rank p = {r['logrank_p']:.3f}"
                   + (" (significant at 0.05)" if r["logrank_p"] < 0.05 else " (not significant at 0.05)"))
        lines.append(f"  {r['method']} vs {r['control']}: {verdict}")
    lines.append("Cost per round (s): " + "; ".join(
        f"round {c['round']}: training {c['members_training_wall_s']:.0f} (all members), MD "
        f"{c['md_wall_s']:.0f}" + ("" if c["label_wall_s"] is None else
                                   f", labelling {c['labelled_frames']} frames {c['label_wall_s']:.0f}")
        for c in result["cost_per_round"]) + f"; control MD {result['control_md_wall_s']:.0f}.")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    from openmlff.core.threads import set_threads  # first: openmlff sets OMP_WAIT_POLICY before torch starts OpenMP

    from openmlff.core.atomic_io import atomic_write_json
    from openmlff.core.versions import processor_name

    set_threads(1)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for part in args.parts:
        results[part] = run_part(args, part)
    wall = time.perf_counter() - t0
    text = "\n".join([f"Active learning against random frames ({processor_name()}, {os.cpu_count()} cores, "
                      f"{args.workers} jobs of 1 thread at a time){' -- quick mode, decides nothing' if args.quick else ''}."]
                     + sum((answer(r) + [""] for r in results.values()), [])
                     + [f"Wall time of this invocation: {wall / 60:.1f} min."]) + "\n"
    (args.out / "answer.txt").write_text(text, encoding="utf-8")
    atomic_write_json(args.out / "results.json", {
        "processor": f"{processor_name()}, {os.cpu_count()} cores", "quick": args.quick, "parts": results,
        "wall_time_s": round(wall, 1), "wall_time_note": "this invocation only; resumed work done earlier is not counted"})
    print(text, flush=True)
    say(f"done in {wall / 60:.1f} min: {args.out / 'answer.txt'}, {args.out / 'results.json'}, "
        + ", ".join(str(args.out / p / "report.html") for p in args.parts))
    return 0


if __name__ == "__main__":
    with result_page("active_learning", "Active learning against random frames: MD stability"):
        code = main()
    sys.exit(code)
