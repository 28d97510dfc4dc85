"""What both peers' drivers (peer_torchmdnet.py, peer_nequip.py) share: the Lightning callback that keeps each
side's weights at wall-clock marks, and their command line. Runs in the peers' virtual environment."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np


class MarkSnapshots(pl.Callback):
    """Saves the weights when the training clock passes each mark and stops after the last one. The clock starts
    at the first training step and counts validation (like openmlff's); time spent saving is taken off it.
    Writes OUT/marks.json (mark, elapsed, optimiser steps, epochs) and prints one `[name]` line per mark."""

    name = "peer"

    def __init__(self, marks, out_dir):
        self.marks, self.out = sorted(float(m) for m in marks), Path(out_dir)
        self.t0, self.paused, self.k, self.rows = None, 0.0, 0, []

    def save(self, trainer, pl_module, path_stem: Path) -> None:
        """Write the weights to `path_stem` plus the driver's suffix."""
        raise NotImplementedError

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.t0 is None:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        elapsed = time.perf_counter() - self.t0 - self.paused
        if self.k < len(self.marks) and elapsed >= self.marks[self.k]:
            t = time.perf_counter()
            mark = self.marks[self.k]
            self.save(trainer, pl_module, self.out / f"weights_{mark:g}s")
            self.rows.append({"mark_s": mark, "elapsed_s": round(elapsed, 2), "steps": trainer.global_step,
                              "epochs": trainer.current_epoch})
            (self.out / "marks.json").write_text(json.dumps(self.rows, indent=1))
            print(f"[{self.name}] {mark:g} s: step {trainer.global_step}, epoch {trainer.current_epoch}", flush=True)
            self.k += 1
            self.paused += time.perf_counter() - t
            if self.k == len(self.marks):
                trainer.should_stop = True


def evaluate_marks(work: Path, name: str, suffix: str, predictor) -> None:
    """Energy and force MAEs (kcal/mol, kcal/mol/Å) of every kept set of weights (WORK/NAME/weights_<mark>s<suffix>)
    on the validation and test frames -> WORK/NAME/curve.json. `predictor(path)` returns a function of frame
    indices giving (energies (n,), forces (n, atoms, 3)) in the data's units."""
    out, d = work / name, work / "data"
    energy, forces = np.load(d / "energy.npy").reshape(-1), np.load(d / "forces.npy")
    splits = np.load(d / "splits.npz")
    rows = []
    for mark in json.loads((out / "marks.json").read_text()):
        predict = predictor(out / f"weights_{mark['mark_s']:g}s{suffix}")
        row = dict(mark)
        for part in ("val", "test"):
            idx = splits[f"idx_{part}"]
            e, f = predict(idx)
            row[f"{part}_energy_mae_kcal_per_mol"] = float(np.abs(e - energy[idx]).mean())
            row[f"{part}_force_mae_kcal_per_mol_per_A"] = float(np.abs(f - forces[idx]).mean())
        rows.append(row)
        print(f"[{name}] {row['mark_s']:g} s: test F MAE {row['test_force_mae_kcal_per_mol_per_A']:.3f} kcal/mol/Å",
              flush=True)
    (out / "curve.json").write_text(json.dumps(rows, indent=1))


def main(doc: str, train, evaluate, md, argv=None) -> int:
    """`train WORK --marks ... --seed S`, `evaluate WORK`, `md WORK --steps N`: the drivers' one command line."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("command", choices=("train", "evaluate", "md"))
    p.add_argument("work", type=Path)
    p.add_argument("--marks", type=float, nargs="+", default=[60, 150, 300])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200)
    a = p.parse_args(argv)
    work = a.work.resolve()
    if a.command == "train":
        train(work, sorted(a.marks), a.seed)
    elif a.command == "evaluate":
        evaluate(work, a.seed)
    else:
        md(work, a.seed, a.steps)
    return 0
