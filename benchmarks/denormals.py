"""Flush-to-zero of denormal floats (torch.set_flush_denormal) on every CPU path that calls a model, side by side.

Denormal (subnormal) floats, below 1.2e-38 in float32, take the slow path of x86 floating-point units. Model
evaluations make them (exponentials of large negative numbers, products of small messages, gradients through
cutoff functions), so the same call can run at half speed or worse. `torch.set_flush_denormal(True)` sets the
CPU's flush-to-zero and denormals-are-zero flags for the calling thread: denormals become 0, a relative change
below 1e-38 of any result. Paths, each timed with and without flushing in turns in one process (best round of
ROUNDS, per call in ms, one thread):

  floor        exported TorchScript module: forward + torch.autograd.grad from Python (benchmarks/md_speed.py)
  train_step   the training step of openmlff.training: batch of 16 frames, energies and forces with
               create_graph, MSE loss, backward, Adam step (per batch)
  evaluation   ExportedModel.energies_and_forces on a batch of 16 frames (metrics, analysis) (per batch)
  torchforce   OpenMM TorchForce MD step (CPU platform)   pythonforce  openmm.PythonForce MD step
  ase          openmlff.integrations.ase_calculator in an ASE Langevin loop
and the largest force difference flushed vs not (evaluation path, kcal/mol/Å). Untrained default (cpu preset)
models by default; --model FILE.pt adds a trained exported model of the same molecule (floor, evaluation, MD).

    python benchmarks/denormals.py [--architectures et visnet nequip] [--molecule aspirin] [--steps 60]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from md_speed import ase_stepper, export_untrained, floor_stepper, interleaved, md_frames, openmm_stepper  # noqa: E402

from openmlff.core import threads, units  # noqa: E402
from openmlff.models import ARCHITECTURES, build_model  # noqa: E402
from openmlff.potentials import get_potential  # noqa: E402
from openmlff.structures import load_structure  # noqa: E402
from openmlff.core.versions import processor_name  # noqa: E402

from pages import result_page  # noqa: E402  (benchmarks/pages.py)

ROUNDS = 6
BATCH = 16


def flushed(advance):
    """The same callable, run with flush-to-zero on (and off again after)."""
    def run(n: int) -> None:
        torch.set_flush_denormal(True)
        try:
            advance(n)
        finally:
            torch.set_flush_denormal(False)

    if hasattr(advance, "reset"):
        run.reset = advance.reset
    return run


def frames_around(positions_angstrom: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n frames near the structure (0.05 Å noise): the inputs of the batched paths."""
    rng = np.random.default_rng(seed)
    return positions_angstrom[None] + 0.05 * rng.standard_normal((n, *positions_angstrom.shape))


def train_stepper(architecture: str, z: np.ndarray, frames_angstrom: np.ndarray):
    """One training step per call: energies and forces with create_graph, MSE to fixed targets, backward, Adam."""
    torch.manual_seed(0)
    model = build_model(architecture).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    n = len(frames_angstrom)
    zt = torch.as_tensor(np.tile(z, n), dtype=torch.long)
    batch = torch.arange(n).repeat_interleave(len(z))
    pos = torch.tensor(frames_angstrom.reshape(-1, 3), dtype=torch.float32)
    with torch.no_grad():
        e_target = model(zt, pos, batch, n).detach() + 0.1
    f_target = torch.zeros_like(pos)

    def advance(k: int) -> None:
        for _ in range(k):
            optimizer.zero_grad()
            energy, forces = model.energy_and_forces(zt, pos, batch, n, create_graph=True)
            loss = 0.05 * ((energy - e_target) ** 2).mean() + 0.95 * ((forces - f_target) ** 2).mean()
            loss.backward()
            optimizer.step()

    advance(2)
    return advance


def evaluation_stepper(model_path: Path, z: np.ndarray, frames_angstrom: np.ndarray):
    potential = get_potential(model_path)

    def advance(k: int) -> None:
        for _ in range(k):
            potential.energies_and_forces(z, frames_angstrom)

    advance(3)
    advance.potential = potential
    return advance


def force_difference(advance, z, frames_angstrom) -> float:
    """Largest |F_flushed - F| over the batch, kcal/mol/Å."""
    _, plain = advance.potential.energies_and_forces(z, frames_angstrom)
    torch.set_flush_denormal(True)
    try:
        _, flush = advance.potential.energies_and_forces(z, frames_angstrom)
    finally:
        torch.set_flush_denormal(False)
    return float(np.abs(flush - plain).max() * units.EV_IN_KCAL_PER_MOL)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    p.add_argument("--molecule", default="aspirin")
    p.add_argument("--model", default=None, help="also a trained exported model of the molecule")
    p.add_argument("--steps", type=int, default=60, help="calls (or MD steps) per path, over the rounds")
    p.add_argument("--paths", nargs="+", default=["floor", "train_step", "evaluation", "torchforce", "pythonforce",
                                                   "ase"])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    threads.FLUSH_DENORMALS = False  # openmlff would flush on its own in every path: here only `flushed` does
    supported = torch.set_flush_denormal(False)
    structure = load_structure(args.molecule)
    z, x = structure.atomic_numbers, structure.positions_angstrom
    frames = frames_around(x, BATCH)
    print(f"# denormals: {datetime.datetime.now().isoformat(timespec='seconds')}, {processor_name()}, torch "
          f"{torch.__version__}, 1 torch thread, OpenMM CPU platform 1 thread; flush-to-zero supported: {supported}")
    print(f"# {args.molecule} ({len(z)} atoms), batches of {BATCH} frames; per call in ms, best of {ROUNDS} "
          "rounds taken in turns; ratio = plain / flushed")
    print(f"{'model':<16} {'path':<12} {'plain ms':>9} {'flushed ms':>10} {'ratio':>6} {'max dF kcal/mol/Å':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        models = [(a, export_untrained(a, z, Path(tmp) / f"{a}.pt"), True) for a in args.architectures]
        if args.model:
            models.append((f"trained:{Path(args.model).stem}", Path(args.model), False))
        for label, model_path, untrained in models:
            for path in args.paths:
                if path == "train_step" and not untrained:
                    continue
                if path == "floor":
                    advance = floor_stepper(model_path, md_frames(model_path, z, x / 10.0, 20, 1))
                elif path == "train_step":
                    advance = train_stepper(label, z, frames)
                elif path == "evaluation":
                    advance = evaluation_stepper(model_path, z, frames)
                elif path == "ase":
                    advance = ase_stepper(model_path, z, x)
                else:
                    advance = openmm_stepper(model_path, z, x / 10.0, path, "CPU", 1)
                timing = interleaved({"plain": advance, "flushed": flushed(advance)}, args.steps, ROUNDS)
                diff = f"{force_difference(advance, z, frames):.2e}" if path == "evaluation" else ""
                print(f"{label:<16} {path:<12} {timing['plain'].wall_ms:>9.2f} {timing['flushed'].wall_ms:>10.2f} "
                      f"{timing['plain'].wall_ms / timing['flushed'].wall_ms:>6.2f} {diff:>18}", flush=True)
    return 0


if __name__ == "__main__":
    with result_page("denormals", "Denormal floats flushed or not, on every CPU path that calls a model"):
        code = main()
    sys.exit(code)
