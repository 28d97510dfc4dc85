"""Training step speed: today's eager step against torch.func and Inductor-compiled steps (issue 34 item 2).

One Adam step of the energy + force loss (forces by autograd inside the step, as openmlff.training trains) for each
architecture at its CPU size, on batches of --batch-size frames of aspirin (the shipped 1200 rMD17 frames) and
Ac-Ala3-NHMe (the test data's MD22 frames, repeated), along three paths:

  eager      EnergyModel.energy_and_forces(create_graph=True) then loss.backward(): what `openmlff train` runs
  func       the forces by torch.func.grad inside the loss function, still eager
  naive      the func loss given to torch.compile as it is: dynamo cannot inline torch.func.grad through the
             neighbour search (data-dependent shapes), so the step stays eager (what dynamo gave up on is printed)
  compiled   what `openmlff train --compile` runs (training.trainer.compiled_step): the pairs found outside the
             step, the func loss with them compiled whole by Inductor; the time to compile is printed

The paths are timed in interleaved rounds (md_speed.interleaved: each sees the same load), best round per path,
after two warm-up steps each.

    python benchmarks/training_step.py [--architectures et] [--molecules aspirin] [--batch-size 16] [--steps 30]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from md_speed import interleaved  # noqa: E402
from pages import result_page  # noqa: E402

from openmlff.core.threads import set_threads  # noqa: E402
from openmlff.core.versions import processor_name  # noqa: E402
from openmlff.data import load_dataset  # noqa: E402
from openmlff.models import ARCHITECTURES, build_model, fit_element_energies  # noqa: E402
from openmlff.models.neighbors import neighbor_pairs  # noqa: E402
from openmlff.training.trainer import compiled_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = {"aspirin": ROOT / "openmlff" / "resources" / "datasets" / "rmd17_aspirin_1200.extxyz",
        "ac-ala3-nhme": ROOT / "tests" / "data" / "datasets" / "md22_Ac-Ala3-NHMe_5.npz"}
ENERGY_WEIGHT = 0.05


def steppers(architecture: str, data, batch_size: int) -> dict:
    torch._dynamo.reset()  # a fresh trace per model (dynamo otherwise remembers frames it gave up on)
    torch.manual_seed(0)
    model = build_model(architecture)
    model.set_energy_statistics(fit_element_energies(data.z, data.E), float(np.sqrt(np.mean(data.F ** 2))))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)  # small steps: every path sees similar weights
    n_atoms = data.n_atoms
    z = torch.as_tensor(data.z, dtype=torch.long).repeat(batch_size)
    batch = torch.arange(batch_size).repeat_interleave(n_atoms)
    R = torch.as_tensor(data.R, dtype=torch.float32)
    E, F = torch.as_tensor(data.E), torch.as_tensor(data.F, dtype=torch.float32)

    def eager_loss(pos, e_ref, f_ref):
        energy, forces = model.energy_and_forces(z, pos, batch, batch_size, create_graph=True)
        return ENERGY_WEIGHT * ((energy - e_ref) ** 2).mean() + ((forces - f_ref) ** 2).mean()

    def func_loss(pos, e_ref, f_ref):
        def total(p):
            energy = model(z, p, batch, batch_size)
            return energy.sum(), energy

        grad, energy = torch.func.grad(total, has_aux=True)(pos)
        return ENERGY_WEIGHT * ((energy - e_ref) ** 2).mean() + ((-grad - f_ref) ** 2).mean()

    def stepper(loss_fn):
        state = {"k": 0}

        def advance(n: int) -> None:
            for _ in range(n):
                idx = torch.arange(state["k"] * batch_size, (state["k"] + 1) * batch_size) % len(R)
                loss = loss_fn(R[idx].reshape(-1, 3), E[idx], F[idx].reshape(-1, 3))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state["k"] += 1

        advance(2)  # warm-up (the compiled path compiles here)
        return advance

    def mse(energy, e_ref, forces, f_ref):
        return ENERGY_WEIGHT * ((energy - e_ref) ** 2).mean() + ((forces - f_ref) ** 2).mean()

    step = compiled_step(model, mse)

    def compiled_loss(pos, e_ref, f_ref):
        i, j, _ = neighbor_pairs(pos.detach(), batch, model.cutoff_angstrom, model.network.neighbor_method)
        return step(z, pos, batch, batch_size, torch.stack([i, j]), e_ref, f_ref)[0]

    paths = {"eager": stepper(eager_loss), "func": stepper(func_loss)}
    start = time.perf_counter()
    paths["naive"] = stepper(torch.compile(func_loss, dynamic=True))
    print(f"# {architecture}: naive compile and warm-up {time.perf_counter() - start:.1f} s; {untraced()}", flush=True)
    start = time.perf_counter()
    paths["compiled"] = stepper(compiled_loss)
    print(f"# {architecture}: compile and warm-up {time.perf_counter() - start:.1f} s; {untraced()}", flush=True)
    return paths


def untraced() -> str:
    """What dynamo gave up on so far (first line of each reason, with counts), and resets its counters."""
    from torch._dynamo.utils import counters

    reasons = {**counters["unimplemented"], **counters["graph_break"]}
    text = "; ".join(f"{n} x {r.strip().splitlines()[0][:90]}" for r, n in reasons.items()) or "traced whole"
    counters.clear()
    return "dynamo: " + text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    p.add_argument("--molecules", nargs="+", default=list(DATA), choices=list(DATA))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=30, help="steps per path, in 3 interleaved rounds")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    set_threads(args.threads)
    print(f"# training step, {datetime.datetime.now().isoformat(timespec='minutes')}, {processor_name()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"{args.threads} thread(s), denormals flushed; batch {args.batch_size}; energy + force MSE loss, Adam; "
          f"best of 3 interleaved rounds of {args.steps // 3} steps")
    header = f"{'model':<8} {'molecule':<13} {'path':<9} {'ms/step':>9} {'cpu ms':>9} {'vs eager':>9}"
    print(header)
    print("-" * len(header))
    for molecule in args.molecules:
        data = load_dataset(DATA[molecule])
        for architecture in args.architectures:
            timings = interleaved(steppers(architecture, data, args.batch_size), args.steps, rounds=3)
            for path, timing in timings.items():
                ratio = timings["eager"].wall_ms / timing.wall_ms
                print(f"{architecture:<8} {molecule:<13} {path:<9} {timing.wall_ms:>9.1f} {timing.cpu_ms:>9.1f} "
                      f"{ratio:>8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    with result_page("training_step", "Training step: eager, torch.func and Inductor-compiled (train --compile)"):
        code = main()
    sys.exit(code)
