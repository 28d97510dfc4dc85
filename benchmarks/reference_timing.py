"""Cost and accuracy of the built-in reference methods (GFN2-xTB via tblite, DFT via PySCF) on this machine.

Measures, and prints as a table (units in the headers):
  1. wall time of `openmlff data generate --structure aspirin --method gfn2-xtb --temperature 500
     --frames 2000` (the CLI in a subprocess, imports included; target: under 10 minutes);
  2. one GFN2-xTB single point of aspirin (21 atoms) and of chignolin (166 atoms, charge -2);
  3. GFN2-xTB against the DFT (PBE/def2-SVP) labels of the shipped rMD17 aspirin frames:
     force MAE/RMSE in kcal/mol/Å (openmlff.metrics), energy MAE after removing the mean offset,
     labelled with openmlff's batch labelling (2 worker processes), whose wall time is reported too;
  4. `dft` (PySCF PBE/def2-SVP, density fitting) against the same labels on --dft-frames frames
     (2 workers x 1 thread), and one aspirin DFT single point with 2 threads.
Results also go to OUT_DIR/reference_timing.json.

    python benchmarks/reference_timing.py [--frames 2000] [--mae-frames 1200] [--dft-frames 20] [--skip-generate]
        [--skip-xtb]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from openmlff.data import load_dataset
from openmlff.data.shipped import shipped_dataset_path
from openmlff.metrics.force_metrics import global_force_metrics
from openmlff.reference import get_reference_method, label_conformations, package_versions
from openmlff.structures import load_structure
from openmlff.core.units import EV_IN_KCAL_PER_MOL

from pages import result_page  # noqa: E402  (benchmarks/pages.py)


def time_generate(frames: int, temperature_K: float, out_dir: Path, seed: int) -> dict:
    """Run `openmlff data generate` for aspirin in a subprocess and time it (s)."""
    out = out_dir / f"aspirin_gfn2-xtb_{temperature_K:g}K_{frames}.npz"
    for stale in (out, Path(str(out) + ".checkpoint.npz")):
        stale.unlink(missing_ok=True)  # a timing must not resume an earlier run
    cli = Path(sys.executable).with_name("openmlff")
    command = [str(cli)] if cli.exists() else [sys.executable, "-c", "import sys; from openmlff.cli import main; sys.exit(main())"]
    command += ["data", "generate", "--structure", "aspirin", "--method", "gfn2-xtb", "--temperature", str(temperature_K),
                "--frames", str(frames), "--out", str(out), "--seed", str(seed), "--quiet"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    ds = load_dataset(out)
    p = ds.provenance
    return {"frames": ds.n_frames, "wall_time_s": wall, "md_steps": p["total_steps"],
            "ms_per_md_step": 1000 * wall / p["total_steps"], "stride_steps": p["stride_steps"],
            "equilibration_steps": p["equilibration_steps"], "timestep_fs": p["timestep_fs"],
            "mean_kinetic_temperature_K": p["mean_kinetic_temperature_K"], "file": str(out)}


def time_single_point(name: str, repeats: int, method: str = "gfn2-xtb", **options) -> dict:
    """Median wall time (s) of single points of a built-in structure with a reference method."""
    structure = load_structure(name)
    method = get_reference_method(method, **options)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        energy, _ = method.compute(structure.atomic_numbers, structure.positions_angstrom, charge=structure.charge)
        times.append(time.perf_counter() - start)
    return {"atoms": structure.n_atoms, "charge": structure.charge, "repeats": repeats,
            "median_s": statistics.median(times), "min_s": min(times), "energy_eV": energy}


def labels_vs_rmd17(method: str, n_frames: int, out_dir: Path, chunk_size: int = 50) -> dict:
    """Label the first n_frames shipped rMD17 aspirin frames with `method` and compare with their DFT labels."""
    dft = load_dataset(shipped_dataset_path("rmd17_aspirin_1200"))
    dft = dft.subset(np.arange(min(n_frames, dft.n_frames)))
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        start = time.perf_counter()
        result = label_conformations(method, dft.z, dft.R, work, chunk_size=chunk_size, n_workers=2, progress=True)
        wall = time.perf_counter() - start
    if result.failures:
        raise RuntimeError(f"{result.n_failed} rMD17 frames failed with {method}: {result.failures[:3]}")
    xtb = result.dataset
    offset = float(np.mean(xtb.E - dft.E))
    metrics = global_force_metrics(xtb.F, dft.F, dft.z, E_pred=xtb.E - offset, E_ref=dft.E)
    return {"method": method, "frames": dft.n_frames, "labelling_wall_time_s": wall,
            "seconds_per_frame_per_worker": 2 * wall / dft.n_frames,
            "force_max_kcal_per_mol_per_A": float(metrics["force_max"]),
            "force_mae_kcal_per_mol_per_A": float(metrics["force_mae"]),
            "force_rmse_kcal_per_mol_per_A": float(metrics["force_rmse"]),
            "energy_mae_after_offset_kcal_per_mol": float(metrics["energy_mae"]),
            "mean_energy_offset_eV": offset,
            "dft_force_component_std_kcal_per_mol_per_A": float(np.std(dft.F) * EV_IN_KCAL_PER_MOL)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="aspirin frames to generate (default 2000)")
    parser.add_argument("--temperature", type=float, default=500.0, help="K (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mae-frames", type=int, default=1200, help="rMD17 frames to compare (default all 1200)")
    parser.add_argument("--chignolin-repeats", type=int, default=3)
    parser.add_argument("--skip-generate", action="store_true", help="leave out the (minutes-long) generate timing")
    parser.add_argument("--skip-xtb", action="store_true", help="leave out the GFN2-xTB measurements")
    parser.add_argument("--dft-frames", type=int, default=20, help="rMD17 frames labelled with dft (default 20; 0: none)")
    parser.add_argument("--out-dir", type=Path, default=Path("results/reference_timing"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                          "load_average_1min_at_start": os.getloadavg()[0]},
              "package_versions": package_versions(("openmlff", "numpy", "ase", "tblite"))}
    rows = []
    if not args.skip_xtb:
        report["single_point_aspirin"] = time_single_point("aspirin", 20)
        report["single_point_chignolin"] = time_single_point("chignolin", args.chignolin_repeats)
        report["gfn2_xtb_vs_dft_rmd17_aspirin"] = labels_vs_rmd17("gfn2-xtb", args.mae_frames, args.out_dir)
        rows += [("aspirin single point (GFN2-xTB, 21 atoms)", "time [ms]", 1000 * report["single_point_aspirin"]["median_s"]),
                 ("chignolin single point (GFN2-xTB, 166 atoms, q=-2)", "time [s]", report["single_point_chignolin"]["median_s"])]
        rows += _comparison_rows("GFN2-xTB", report["gfn2_xtb_vs_dft_rmd17_aspirin"])
    if args.dft_frames:
        report["single_point_aspirin_dft_2_threads"] = time_single_point("aspirin", 1, "dft", threads=2)
        report["dft_vs_rmd17_aspirin"] = labels_vs_rmd17("dft", args.dft_frames, args.out_dir, chunk_size=5)
        rows.append(("aspirin single point (dft PBE/def2-SVP, 2 threads)", "time [s]",
                     report["single_point_aspirin_dft_2_threads"]["median_s"]))
        rows += _comparison_rows("dft (PySCF)", report["dft_vs_rmd17_aspirin"])
        rows.append(("  per frame and worker (2 workers x 1 thread)", "time [s]",
                     report["dft_vs_rmd17_aspirin"]["seconds_per_frame_per_worker"]))
    if not args.skip_generate:
        report["generate_aspirin"] = time_generate(args.frames, args.temperature, args.out_dir, args.seed)
    (args.out_dir / "reference_timing.json").write_text(json.dumps(report, indent=2) + "\n")

    if "generate_aspirin" in report:
        gen = report["generate_aspirin"]
        rows += [(f"openmlff data generate aspirin, {gen['frames']} frames, {args.temperature:g} K", "wall time [s]",
                  gen["wall_time_s"]),
                 (f"  {gen['md_steps']} MD steps of {gen['timestep_fs']} fs (stride {gen['stride_steps']}, "
                  f"equilibration {gen['equilibration_steps']})", "time per step [ms]", gen["ms_per_md_step"]),
                 ("  mean kinetic temperature of kept frames", "temperature [K]", gen["mean_kinetic_temperature_K"])]
    width = max(len(r[0]) for r in rows)
    unit_width = max(len(r[1]) for r in rows)
    print(f"{'measurement':<{width}}  {'quantity [unit]':<{unit_width}}  value")
    for what, quantity, value in rows:
        print(f"{what:<{width}}  {quantity:<{unit_width}}  {value:.3f}")
    print(f"(machine: {report['machine']['cpus']} CPUs, load average {report['machine']['load_average_1min_at_start']:.1f}"
          f" at start; JSON in {args.out_dir / 'reference_timing.json'})")
    return 0


def _comparison_rows(label: str, cmp_: dict) -> list[tuple[str, str, float]]:
    return [(f"{label} vs rMD17 PBE/def2-SVP labels, {cmp_['frames']} aspirin frames", "force MAE [kcal/mol/Å]",
             cmp_["force_mae_kcal_per_mol_per_A"]),
            ("  same", "force RMSE [kcal/mol/Å]", cmp_["force_rmse_kcal_per_mol_per_A"]),
            ("  same", "largest per-atom force error [kcal/mol/Å]", cmp_["force_max_kcal_per_mol_per_A"]),
            ("  same", "energy MAE after mean offset [kcal/mol]", cmp_["energy_mae_after_offset_kcal_per_mol"]),
            ("  same", "mean energy offset [eV]", cmp_["mean_energy_offset_eV"]),
            ("  batch labelling, 2 workers", "wall time [s]", cmp_["labelling_wall_time_s"])]


if __name__ == "__main__":
    with result_page("reference_timing", "Cost and accuracy of GFN2-xTB and DFT on this machine"):
        code = main()
    sys.exit(code)
