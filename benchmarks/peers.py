"""openmlff against its peers, side by side: learning curves at equal CPU budget and MD speed in OpenMM.

Pair `et`: openmlff's ET against TorchMD-Net 3.1's ET (torchmd-net from the package index, trained by its
own Lightning module: benchmarks/peer_torchmdnet.py), 64 channels, 3 layers, 8 heads, 32 RBF, 5 Å.
Pair `nequip`: openmlff's NequIP against nequip 0.19.1's NequIPGNNModel (trained by its own `nequip-train`:
benchmarks/peer_nequip.py), openmlff's CPU preset: 32 features of l <= 1 without odd parity, 3 layers,
8 trainable Bessel functions, p = 6, radial MLP 2 x 64, 5 Å.

Both sides of a pair get the same 950 training / 50 validation / 200 test frames of the shipped rMD17
aspirin (PBE/def2-SVP; the test frames are seen by neither), the same model size, loss weights 0.05
energy / 0.95 forces, batch 16 and reduce-on-plateau factor 0.8 / 8 epochs on openmlff's and TorchMD-Net's side.
The ET pair also shares the learning rate (Adam(W) at 1e-3 with 500 linear warm-up steps, openmlff's ET default);
in the NequIP pair each side keeps its own: openmlff's NequIP default (lr 1e-2, 50 warm-up steps), nequip's
tutorial optimiser (Adam at lr 0.01 without warm-up, plateau factor 0.6 / 5 epochs, EMA 0.999). Otherwise each keeps
its own recipe (openmlff's defaults; TorchMD-Net's examples/ET-MD17.yaml; nequip's configs/tutorial.yaml).
The two train at the same time, one process and one torch thread each (a 2-core machine: one core each).

At each mark (wall seconds of the training loop, validation included) each side's weights are copied,
the weights the tool validates and exports: openmlff's EMA of weights, TorchMD-Net's raw weights,
nequip's EMA (openmlff's raw weights are evaluated too). They are evaluated afterwards, outside the
clock, on the 50 validation and the 200 test frames. Then the last weights of each are timed in OpenMM
(CPU platform, 1 thread; benchmarks/peer_timing.py): openmlff's exported model in TorchForce and in
PythonForce, TorchMD-Net's model scripted for TorchForce as its documentation does, nequip's checkpoint
through openmm-ml's documented path (MLPotential('nequip'): a PythonForce), each next to its bare
forward + backward.

    python benchmarks/peers.py [--pairs et nequip] [--marks 60 150 300 600 1200] [--seed 0]
                               [--out results/peers] [--steps 200]

The peers live in their own virtual environment, `.venv-peers` beside `.venv` (made on the first run:
torch 2.12.1, nequip 0.19.1, openmm-ml 1.8, torchmd-net 3.1.0 (installed without its dependency pins:
it asks for setuptools >= 82, torch 2.12.1 for < 82), lightning, torch_geometric, warp-lang,
OpenMM 8.6.1, openmm-torch 1.10; about 6 GB; needs the package index once). Prints the processor and
thread settings with every table; writes OUT/PAIR/peers.json and OUT/PAIR/peers.png for each pair.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pages import result_page  # noqa: E402  (benchmarks/pages.py)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_VENV = ROOT / ".venv-peers"
#: What the peers' environment holds; torchmd-net goes in last with --no-deps (see the module docstring).
PEER_PACKAGES = ["torch==2.12.1", "openmm==8.6.1", "acellera-openmmtorch-cpu==1.10", "lightning==2.6.6",
                 "torch_geometric==2.8.1", "warp-lang==1.19.0", "nequip==0.19.1", "h5py", "ase", "tqdm", "pyyaml"]
PEER_NO_DEPS = ["torchmd-net==3.1.0", "openmmml==1.8"]
COMMON = {  # what both sides of every pair get (the nequip side keeps its own optimiser: see the docstring)
    "batch_size": 16, "lr_factor": 0.8, "lr_patience_epochs": 8,
    "energy_weight": 0.05, "force_weight": 0.95, "n_train": 950, "n_val": 50, "n_test": 200,
}


@dataclass(frozen=True)
class Pair:
    """One openmlff architecture against one peer: the model size both get and the peer's driver script."""

    architecture: str
    model: dict  # openmlff hyperparameter names; each driver maps them onto its tool's
    peer: str  # the driver's output folder under WORK
    peer_name: str
    script: str
    learning_rate: dict  # learning_rate and warmup_steps both sides get; empty: each side its own default


PAIRS = {
    "et": Pair("et", {"hidden_channels": 64, "num_layers": 3, "num_heads": 8, "num_rbf": 32, "cutoff_angstrom": 5.0},
               "torchmdnet", "TorchMD-Net", "peer_torchmdnet.py", {"learning_rate": 1.0e-3, "warmup_steps": 500}),
    "nequip": Pair("nequip", {"num_features": 32, "l_max": 1, "parity": False, "num_layers": 3, "num_bessel": 8,
                              "trainable_bessel": True, "polynomial_p": 6, "radial_mlp_layers": 2,
                              "radial_mlp_width": 64, "cutoff_angstrom": 5.0},
                   "nequip", "nequip", "peer_nequip.py", {}),
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def peers_python() -> Path:
    """The peers' interpreter, installing their environment first if it is missing or incomplete."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".peers-installed"
    want = " ".join(PEER_PACKAGES + PEER_NO_DEPS)
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    print(f"[peers] installing the peers' environment in {PEERS_VENV} (about 6 GB, minutes): {want}", flush=True)
    if not python.exists():
        subprocess.run(["python3.11", "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", *PEER_NO_DEPS], check=True)
    stamp.write_text(want)
    return python


def prepare(work: Path, pair: Pair, seed: int) -> None:
    """The shipped frames as arrays (Å, kcal/mol, kcal/mol/Å: TorchMD-Net's Custom layout; nequip's driver writes
    them as extended XYZ), the split both sides use and the pair's shared settings."""
    from openmlff.core import units
    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.data.splits import make_split

    ds = load_dataset(shipped_dataset_path())
    split = make_split(ds.n_frames, n_train=COMMON["n_train"], n_val=COMMON["n_val"], n_test=COMMON["n_test"],
                       seed=seed)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    kcal = units.ev_to("kcal/mol")
    np.save(data / "coords.npy", ds.R.astype(np.float32))
    np.save(data / "embed.npy", np.asarray(ds.z, dtype=np.int64))
    np.save(data / "energy.npy", (ds.E * kcal).reshape(-1, 1).astype(np.float32))
    np.save(data / "forces.npy", (ds.F * kcal).astype(np.float32))
    np.savez(data / "splits.npz", idx_train=np.asarray(split.train), idx_val=np.asarray(split.val),
             idx_test=np.asarray(split.test))
    (work / "settings.json").write_text(json.dumps({**COMMON, **pair.learning_rate, **pair.model,
                                                    "architecture": pair.architecture},
                                                   indent=1))


def openmlff_config(pair: Pair, seed: int, budget_s: float):
    from openmlff.training import TrainingConfig

    return TrainingConfig(
        architecture=pair.architecture, seed=seed, n_train=COMMON["n_train"], n_val=COMMON["n_val"],
        n_test=COMMON["n_test"], batch_size=COMMON["batch_size"], **pair.learning_rate, lr_factor=COMMON["lr_factor"],
        lr_patience_epochs=COMMON["lr_patience_epochs"], energy_weight=COMMON["energy_weight"],
        force_weight=COMMON["force_weight"], time_budget_s=budget_s, torch_threads=1,
        hyperparameters=dict(pair.model))


def train_openmlff(work: Path, pair: Pair, marks: list[float], seed: int) -> None:
    """openmlff's training to each mark in turn (a longer budget resumes the checkpoint), keeping a copy at each."""
    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.training import train

    ds = load_dataset(shipped_dataset_path())
    out = work / "openmlff"
    rows = []
    for mark in marks:
        result = train(ds, out / "run", openmlff_config(pair, seed, mark), progress=False)
        shutil.copyfile(result.checkpoint, out / f"weights_{mark:g}s.ckpt")
        rows.append({"mark_s": mark, "elapsed_s": round(result.elapsed_s, 2), "steps": result.steps,
                     "epochs": result.epochs})
        (out / "marks.json").write_text(json.dumps(rows, indent=1))
        print(f"[openmlff] {mark:g} s: step {result.steps}, epoch {result.epochs}", flush=True)


def evaluate_openmlff(work: Path) -> list[dict]:
    """MAEs of openmlff's EMA weights (what it validates and exports) and raw weights at each mark, each exported
    as `openmlff export` does and measured by openmlff.metrics' evaluation (kcal/mol, kcal/mol/Å)."""
    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.model_file.writer import export_checkpoint
    from openmlff.metrics.evaluation import evaluate_model
    from openmlff.core.threads import set_threads
    from openmlff.training.checkpoint import read_checkpoint

    set_threads(1)
    ds = load_dataset(shipped_dataset_path())
    split = np.load(work / "data" / "splits.npz")
    rows = []
    for mark in json.loads((work / "openmlff" / "marks.json").read_text()):
        ckpt_path = work / "openmlff" / f"weights_{mark['mark_s']:g}s.ckpt"
        assert list(read_checkpoint(ckpt_path).split.test) == list(split["idx_test"]), "the splits differ"
        row = dict(mark)
        for weights, tag in (("ema", ""), ("raw", "raw_")):
            model = export_checkpoint(ckpt_path, work / "openmlff" / f"model_{weights}.pt", weights=weights)
            for part in ("val", "test"):
                metrics = evaluate_model(model, ds.subset(split[f"idx_{part}"]), include_frames=False)
                assert metrics["units"]["force"] == "kcal/mol/Å", metrics["units"]
                row[f"{tag}{part}_energy_mae_kcal_per_mol"] = metrics["energy_mae"]
                row[f"{tag}{part}_force_mae_kcal_per_mol_per_A"] = metrics["force_mae"]
        rows.append(row)
    (work / "openmlff" / "curve.json").write_text(json.dumps(rows, indent=1))
    return rows


def md_openmlff(work: Path, steps: int) -> dict:
    """Export openmlff's last weights as `openmlff export` does and time them like the peer's: TorchForce (the
    production path) and PythonForce (the path openmm-ml takes for nequip)."""
    sys.path.insert(0, str(HERE))
    from peer_timing import floor_ms, md_ms_per_step, system_md_ms_per_step

    from openmlff.data import load_dataset
    from openmlff.data.shipped import shipped_dataset_path
    from openmlff.model_file.writer import export_checkpoint
    from openmlff.potentials.exported import build_system
    from openmlff.core.threads import set_threads

    set_threads(1)  # what every openmlff command does first (1 thread, denormals flushed)
    last = json.loads((work / "openmlff" / "marks.json").read_text())[-1]
    path = export_checkpoint(work / "openmlff" / f"weights_{last['mark_s']:g}s.ckpt", work / "openmlff" / "model.pt",
                             weights="ema")
    ds = load_dataset(shipped_dataset_path())
    return {"model": str(path), "path": "openmmtorch.TorchForce",
            "md_ms_per_step": md_ms_per_step(str(path), ds.z, ds.R[0], steps=steps),
            "pythonforce_md_ms_per_step": system_md_ms_per_step(build_system(ds.z, path, backend="pythonforce"),
                                                                ds.R[0], steps=steps),
            "floor_ms": floor_ms(str(path), ds.R[0])}


def _run_side_by_side(commands: dict[str, list[str]], logs: Path) -> None:
    """Start every command at once (one torch thread each), stream their mark lines, fail if any fails."""
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = {}
    for name, cmd in commands.items():
        log = open(logs / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    seen = {name: 0 for name in procs}
    while any(p.poll() is None for p, _ in procs.values()):
        time.sleep(5)
        if any(p.poll() not in (None, 0) for p, _ in procs.values()):  # one failed: the pair is void, stop the rest
            for p, _ in procs.values():
                if p.poll() is None:
                    p.terminate()
        for name in procs:
            lines = [l for l in (logs / f"{name}.log").read_text(errors="replace").splitlines()
                     if l.startswith(f"[{name}]")]
            for line in lines[seen[name]:]:
                print(line, flush=True)
            seen[name] = len(lines)
    for _, log in procs.values():
        log.close()
    # the side that failed by itself first, not one stopped above
    for terminated, name in sorted((p.returncode < 0, name) for name, (p, _) in procs.items() if p.returncode != 0):
        tail = "\n".join((logs / f"{name}.log").read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{name} failed (exit {procs[name][0].returncode}); the end of {logs / (name + '.log')}:\n"
                         f"{tail}")


def table(ours: list[dict], peer: list[dict], peer_name: str) -> str:
    lines = [f"{'mark s':>7} | {'openmlff epochs':>15} {'steps':>6} {'val F':>7} {'test F':>7} {'test E':>7} "
             f"{'raw test F':>10} | {peer_name + ' epochs':>17} {'steps':>6} {'val F':>7} {'test F':>7} {'test E':>7} "
             f"| {'ratio F':>7}"]
    for a, b in zip(ours, peer):
        lines.append(
            f"{a['mark_s']:>7g} | {a['epochs']:>15d} {a['steps']:>6d} {a['val_force_mae_kcal_per_mol_per_A']:>7.3f} "
            f"{a['test_force_mae_kcal_per_mol_per_A']:>7.3f} {a['test_energy_mae_kcal_per_mol']:>7.3f} "
            f"{a['raw_test_force_mae_kcal_per_mol_per_A']:>10.3f} | {b['epochs']:>17d} {b['steps']:>6d} "
            f"{b['val_force_mae_kcal_per_mol_per_A']:>7.3f} {b['test_force_mae_kcal_per_mol_per_A']:>7.3f} "
            f"{b['test_energy_mae_kcal_per_mol']:>7.3f} | "
            f"{a['test_force_mae_kcal_per_mol_per_A'] / b['test_force_mae_kcal_per_mol_per_A']:>7.3f}")
    return "\n".join(lines)


def plot(ours: list[dict], peer: list[dict], pair: Pair, path: Path, header: str) -> None:
    """Test (solid) and validation (dashed) force MAE against wall time and against optimiser steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours_name = f"openmlff {ARCH_NAMES[pair.architecture]} (EMA)"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, x_key, x_label in ((axes[0], "mark_s", "training wall time (s), 1 thread each, side by side"),
                               (axes[1], "steps", "optimiser steps (batches of 16 frames)")):
        for rows, name, color in ((ours, ours_name, "C0"), (peer, f"{pair.peer_name} {ARCH_NAMES[pair.architecture]}",
                                                            "C1")):
            x = [r[x_key] for r in rows]
            ax.plot(x, [r["test_force_mae_kcal_per_mol_per_A"] for r in rows], "o-", color=color, label=f"{name}, test")
            ax.plot(x, [r["val_force_mae_kcal_per_mol_per_A"] for r in rows], "--", color=color, alpha=0.6,
                    label=f"{name}, validation")
        ax.plot([r[x_key] for r in ours], [r["raw_test_force_mae_kcal_per_mol_per_A"] for r in ours], ":",
                color="grey", label=ours_name.replace("EMA", "raw weights") + ", test")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
    axes[0].set_ylabel("force MAE (kcal/mol/Å), rMD17 aspirin")
    axes[1].legend(fontsize=7)
    fig.suptitle(header.replace("; 1 torch", ";\n1 torch"), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


ARCH_NAMES = {"et": "ET", "nequip": "NequIP"}


def run_pair(pair: Pair, work: Path, marks: list[float], seed: int, steps: int, python: Path) -> dict:
    """Train both sides at once, evaluate them, time their MD, print the tables and write peers.json/peers.png."""
    from openmlff.core.versions import processor_name

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    prepare(work, pair, seed)
    header = (f"processor {processor_name()}; {os.cpu_count()} cores; 1 torch thread per side (OMP_NUM_THREADS=1), "
              f"both at once; seed {seed}; marks {marks} s")
    arch = ARCH_NAMES[pair.architecture]
    print(f"[peers] pair {pair.architecture}: openmlff {arch} against {pair.peer_name}; {header}", flush=True)
    peer_script = str(HERE / pair.script)
    marks_args = ["--marks", *[f"{m:g}" for m in marks], "--seed", str(seed)]
    _run_side_by_side({
        "openmlff": [sys.executable, str(Path(__file__).resolve()), "--_side", pair.architecture, "--out", str(work),
                     *marks_args],
        pair.peer: [str(python), peer_script, "train", str(work), *marks_args],
    }, work)
    print("[peers] training done; evaluating (outside the clock)", flush=True)
    ours = evaluate_openmlff(work)
    subprocess.run([str(python), peer_script, "evaluate", str(work), "--seed", str(seed)], check=True,
                   env={**os.environ, **ONE_THREAD})
    peer = json.loads((work / pair.peer / "curve.json").read_text())
    print("[peers] timing MD (one side at a time)", flush=True)
    md_ours = md_openmlff(work, steps)
    subprocess.run([str(python), peer_script, "md", str(work), "--seed", str(seed), "--steps", str(steps)],
                   check=True, env={**os.environ, **ONE_THREAD})
    md_peer = json.loads((work / pair.peer / "md.json").read_text())

    print(f"\n{arch} on rMD17 aspirin: force / energy MAE (kcal/mol/Å, kcal/mol) against training wall time\n{header}")
    print(table(ours, peer, pair.peer_name))
    print(f"\nMD in OpenMM (CPU platform, 1 thread, 0.5 fs Langevin, aspirin 21 atoms), ms/step; floor = bare "
          f"forward + backward from Python (denormals flushed)\n{header}")
    print(f"{'model':>12} | {'OpenMM path':>44} | {'MD ms/step':>10} | {'floor ms':>8}")
    print(f"{'openmlff':>12} | {md_ours['path']:>44} | {md_ours['md_ms_per_step']:>10.2f} | {md_ours['floor_ms']:>8.2f}")
    print(f"{'openmlff':>12} | {'openmm.PythonForce':>44} | {md_ours['pythonforce_md_ms_per_step']:>10.2f} | "
          f"{md_ours['floor_ms']:>8.2f}")
    print(f"{pair.peer_name:>12} | {md_peer['path']:>44} | {md_peer['md_ms_per_step']:>10.2f} | "
          f"{md_peer['floor_ms']:>8.2f}")
    print(f"MD step time openmlff (TorchForce) / {pair.peer_name}: "
          f"{md_ours['md_ms_per_step'] / md_peer['md_ms_per_step']:.3f}")
    from openmlff.training.checkpoint import read_checkpoint

    result = {"header": header, "pair": pair.architecture, "peer": pair.peer_name,
              "shared_settings": json.loads((work / "settings.json").read_text()),
              "openmlff_training_config": read_checkpoint(work / "openmlff" / "run" / "model.ckpt").config,
              "openmlff": ours, pair.peer: peer,
              "md": {"openmlff": md_ours, pair.peer: md_peer}}
    (work / "peers.json").write_text(json.dumps(result, indent=1))
    plot(ours, peer, pair, work / "peers.png", header)
    print(f"\nwrote {work / 'peers.json'} and {work / 'peers.png'}")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=["et", "nequip"],
                   help="which pairs to run, one after the other")
    p.add_argument("--marks", type=float, nargs="+", default=[60, 150, 300, 600, 1200],
                   help="wall-clock seconds of training at which both sides are evaluated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "peers")
    p.add_argument("--steps", type=int, default=200, help="MD steps per timing round")
    p.add_argument("--_side", choices=sorted(PAIRS), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    marks = sorted(a.marks)
    if a._side:  # openmlff's side of one pair, started by run_pair
        train_openmlff(a.out.resolve(), PAIRS[a._side], marks, a.seed)
        return 0
    python = peers_python()
    for name in a.pairs:
        run_pair(PAIRS[name], a.out.resolve() / name, marks, a.seed, a.steps, python)
    return 0


if __name__ == "__main__":
    if "--_side" in sys.argv:  # a worker process of this script: its output is the parent's to record
        sys.exit(main())
    with result_page("peers", "openmlff against TorchMD-Net and nequip: learning curves and MD speed"):
        code = main()
    sys.exit(code)
