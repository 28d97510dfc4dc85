"""Ac-Ala3-NHMe in water, mixed ML/MM: an ET trained on GFN2-xTB data in the peptide, amber14 + TIP3P-FB on the
water; stable or not, and at what speed next to the same model in vacuum and to amber14 alone in the same box.

Every step is an `openmlff` command (the ones a user types), each resumed or skipped when its output exists:
1. `openmlff data generate`: GFN2-xTB (tblite) MD of the peptide in vacuum at 500 K, FRAMES frames;
2. `openmlff train` (ET, cpu preset, a wall-time budget) and `openmlff export`;
3. `openmlff simulate` at 300 K, 0.5 fs, LENGTH ps, Langevin 1/ps, from the shipped structure:
   vacuum: the model alone;  mixed: `--solvate PADDING --pressure 1` (NPT, the model on the peptide);
   amber14: `--model amber14 --solvate PADDING --pressure 1`, the same relaxed box (its SHA-256 is compared);
4. `openmlff analyze` (mixed and amber14 with `--water keep`: density, first-shell waters, water g(r)).
Writes OUT/results.json and OUT/answer.txt (ns/day of the three runs measured one after another on this machine,
1 thread each, with the processor named). About 45 minutes on 2 cores; --quick: 100 frames, 300 s of
training, 1 ps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pages import result_page  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="results folder (default results/solvated_ala3[_quick])")
    p.add_argument("--frames", type=int, default=500, help="GFN2-xTB frames (stride 16 steps of 0.5 fs, 500 K)")
    p.add_argument("--train-seconds", type=float, default=1500.0, help="training wall-time budget in s")
    p.add_argument("--length-ps", type=float, default=10.0)
    p.add_argument("--padding-nm", type=float, default=1.5,
                   help="Modeller's padding in nm (cube edge = the peptide's diameter + padding, at least 2 x padding)")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--quick", action="store_true", help="100 frames, 300 s of training, 1 ps")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.train_seconds, args.length_ps = 100, 300.0, 1.0
    args.out = Path(args.out or ("results/solvated_ala3_quick" if args.quick else "results/solvated_ala3"))
    return args


def say(msg: str) -> None:
    print(f"[solvated-ala3 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def openmlff(*arguments, output=None) -> str:
    """One openmlff command (skipped when `output` exists; the others resume or return at once when done), one
    thread as every run of this protocol; returns what it printed."""
    if output is not None and Path(output).exists():
        say(f"kept {output}")
        return ""
    command = [sys.executable, "-m", "openmlff", *[str(a) for a in arguments]]
    say(" ".join(command[2:]))
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    print(done.stdout, end="", flush=True)
    return done.stdout


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data, train_dir, model = out / "ala3_gfn2xtb.npz", out / "training", out / "model.pt"
    openmlff("data", "generate", "--structure", "ac-ala3-nhme", "--method", "gfn2-xtb", "--temperature", 500,
             "--frames", args.frames, "--stride", 16, "--equilibration", 400, "--seed", 1, "--out", data, output=data)
    training = openmlff("train", "--data", data, "--out", train_dir, "--architecture", "et", "--preset", "cpu",
                        "--time-budget-s", args.train_seconds, "--max-epochs", 100000, "--torch-threads", 1)
    openmlff("export", train_dir / "model.ckpt", "--out", model, output=model)

    steps = int(round(args.length_ps * 1000 / 0.5))
    md = ["--temperature", args.temperature, "--timestep", 0.5, "--steps", steps, "--report-interval", 200,
          "--threads", 1, "--quiet"]
    solvated = ["--solvate", args.padding_nm, "--pressure", 1.0]
    runs = {"vacuum": [model, []], "mixed": [model, solvated], "amber14": ["amber14", solvated]}
    for name, (potential, extra) in runs.items():
        openmlff("simulate", "--model", potential, "--structure", "ac-ala3-nhme", *md, *extra, "--out", out / name)
        openmlff("analyze", out / name, "--no-errors", "--quiet", *(["--water", "keep"] if extra else []))

    from openmlff.core.versions import processor_name

    results = {"processor": processor_name(), "threads": "1 torch thread, OpenMM CPU platform 1 thread, one run at a time",
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "training": training.strip().splitlines(), "runs": {}}
    for name in runs:
        summary = json.loads((out / name / "summary.json").read_text())
        record = json.loads((out / name / "run.json").read_text())
        analysis = json.loads((out / name / "analysis" / "analysis.json").read_text())
        env = record.get("environment") or {}
        results["runs"][name] = {
            "stable": summary["stable"], "steps_completed": summary["steps_completed"],
            "simulated_time_ps": summary["simulated_time_ps"], "collapse_reason": summary["collapse_reason"],
            "ns_per_day": summary["ns_per_day"], "atoms": env.get("n_atoms", len(record["structure"]["atomic_numbers"])),
            "waters": env.get("n_waters", 0), "box_sha256": env.get("positions_angstrom_sha256"),
            "rmsd_to_start_nm_final": analysis["rmsd_to_start_nm"]["final"],
            "density_g_per_cm3_mean": (analysis.get("solvation") or {}).get("density_g_per_cm3", {}).get("mean"),
            "first_shell_waters_mean": (analysis.get("solvation") or {}).get("first_shell_waters", {}).get("mean")}
    same_box = results["runs"]["mixed"]["box_sha256"] == results["runs"]["amber14"]["box_sha256"]
    results["same_box"] = same_box
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = [f"Ac-Ala3-NHMe, {args.length_ps:g} ps at {args.temperature:g} K, 0.5 fs; processor: {results['processor']}; "
             f"{results['threads']}",
             f"{'run':<9} {'atoms':>6} {'waters':>6} {'stable':>6} {'time [ps]':>9} {'ns/day':>8} "
             f"{'RMSD [nm]':>9} {'density [g/cm^3]':>16} {'shell waters':>12}"]
    for name, r in results["runs"].items():
        density = "" if r["density_g_per_cm3_mean"] is None else f"{r['density_g_per_cm3_mean']:.3f}"
        shell = "" if r["first_shell_waters_mean"] is None else f"{r['first_shell_waters_mean']:.1f}"
        lines.append(f"{name:<9} {r['atoms']:>6} {r['waters']:>6} {str(r['stable']):>6} {r['simulated_time_ps']:>9.2f} "
                     f"{r['ns_per_day']:>8.3f} {r['rmsd_to_start_nm_final']:>9.3f} {density:>16} {shell:>12}")
    lines.append(f"mixed and amber14 started from the same relaxed box: {same_box}")
    (out / "answer.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    with result_page("solvated_ala3", "Ac-Ala3-NHMe in water, mixed ML/MM: stability and speed"):  # docs/benchmarks/solvated_ala3.md
        code = main()
    sys.exit(code)
