"""One call checks every CUDA path of openmlff and writes one JSON (issue 34 item 5).

Sections, in order, each recorded as it finishes (the JSON is rewritten atomically after each, so a run cut by its
time limit keeps what it measured; a section that fails records its error and the next one runs):

  environment  Python, torch, CUDA device, OpenMM and its platforms, openmm-torch
  forces       per architecture (CPU sizes, aspirin, trained-like weights): the forces of TorchForce on CUDA (CUDA
               graphs off and on) and of the compiled model on the GPU against TorchForce on the CPU platform
               (max |dF| / max |F|; float32 models, so ~1e-6 is rounding)
  replicas     replica batches of N = 1, 2, 4, ..., 64 aspirins in one Context (TorchForce, CUDA graphs): ms/step
               of the batch and ns/day summed over the copies
  training     one epoch of a paper-size ET on the shipped 1200 rMD17 aspirin frames (energy + force loss, batch 32,
               Adam) on the GPU, against the same steps on the CPU for a few batches
  dft          a GPU4PySCF single point, if gpu4pyscf can be imported (it is not carried by default)
  md (last)    MD ms/step on CUDA (0.5 fs Langevin, 500 K): TorchForce, TorchForce with CUDA graphs and the compiled
               backend, for the three architectures at the CPU and paper sizes on aspirin and chignolin

Every section stops starting new measurements when the budget (--budget-s) is spent, and says so. With --device
cpu the script runs its CPU-side code on this machine (to check the script itself; the CUDA rows are skipped).

    python benchmarks/gpu_check.py --out gpu_check.json [--budget-s 420] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("environment", "forces", "replicas", "training", "dft", "md")  # md last: it takes what is left
NS_PER_STEP = 0.5e-6  # 0.5 fs steps
ARCHITECTURES = ("et", "visnet", "nequip")


class Check:
    """The JSON document, its deadline and the atomic rewrite after every section."""

    def __init__(self, out: Path, budget_s: float, device: str) -> None:
        self.out, self.device = out, device
        self.deadline = time.monotonic() + budget_s
        self.doc = {"script": "benchmarks/gpu_check.py", "budget_s": budget_s, "device": device,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sections": {}}

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=str) + "\n")
        os.replace(tmp, self.out)

    def section(self, name: str, run) -> None:
        start = time.perf_counter()
        record: dict = {}
        self.doc["sections"][name] = record
        print(f"== {name} ({self.left_s():.0f} s of the budget left)", flush=True)
        try:
            run(self, record)
            record["status"] = "done"
        except Exception as exc:  # recorded, and the next section runs
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
            print(f"   failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        record["seconds"] = round(time.perf_counter() - start, 1)
        self.save()


def trained_like(architecture: str, preset: str, z, seed: int = 0):
    """An EnergyModel with random biases (and NequIP's zero output layer drawn), so forces are worth comparing."""
    import torch

    from openmlff.models import build_model, default_hyperparameters

    torch.manual_seed(seed)
    model = build_model(architecture, default_hyperparameters(architecture, preset))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.add_(0.2 * torch.randn_like(parameter))
        head = getattr(getattr(model.network, "head", None), "weight", None)
        if head is not None and float(head.abs().max()) == 0.0:
            torch.nn.init.normal_(head)
    return model.eval()


def export(architecture: str, preset: str, structure, folder: Path) -> Path:
    from openmlff.model_file.writer import export_model

    path = folder / f"{architecture}_{preset}_{structure.name}.pt"
    if not path.exists():
        export_model(trained_like(architecture, preset, structure.atomic_numbers), structure.atomic_numbers, path)
    return path


def forces_of(system, positions_nm, platform_name: str) -> np.ndarray:
    import openmm

    platform = openmm.Platform.getPlatformByName(platform_name)
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), platform)
    context.setPositions(positions_nm)
    for _ in range(3):  # TorchScript's profiling calls; CUDA graph capture
        forces = context.getState(getForces=True).getForces(asNumpy=True)._value
    return np.asarray(forces)


def environment(check: Check, record: dict) -> None:
    import openmm
    import torch

    record.update(python=sys.version.split()[0], executable=sys.executable, machine=_platform.machine(),
                  torch=torch.__version__, cuda_available=torch.cuda.is_available(), openmm=openmm.__version__,
                  openmm_platforms=[openmm.Platform.getPlatform(i).getName()
                                    for i in range(openmm.Platform.getNumPlatforms())],
                  openmm_plugin_failures=list(openmm.Platform.getPluginLoadFailures()))
    if torch.cuda.is_available():
        record.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                      gpu_memory_GiB=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    from openmlff.core._compat import import_openmmtorch

    record["openmmtorch"] = getattr(import_openmmtorch(), "__version__", "imported")


def forces(check: Check, record: dict) -> None:
    from openmlff.potentials.compiled import CompiledModelComputation
    from openmlff.potentials.exported import build_system, torchforce_properties
    from openmlff.structures import load_structure

    aspirin = load_structure("aspirin")
    x = aspirin.positions_angstrom / 10.0
    for architecture in ARCHITECTURES:
        if check.left_s() < 60:
            record[architecture] = "skipped: budget spent"
            continue
        model = export(architecture, "cpu", aspirin, check.folder)
        reference = forces_of(build_system(aspirin.atomic_numbers, model), x, "CPU")
        scale = float(np.abs(reference).max())
        row = {"max_abs_F_kJ_per_mol_nm": scale}
        if check.device == "cuda":
            for graphs in (False, True):
                system = build_system(aspirin.atomic_numbers, model, torch_properties=torchforce_properties(graphs))
                got = forces_of(system, x, "CUDA")
                row[f"torchforce_cuda_graphs_{'on' if graphs else 'off'}"] = float(np.abs(got - reference).max()) / scale
        computation = CompiledModelComputation(model, device=check.device)
        _, got = computation.energy_and_forces(x)
        row[f"compiled_{check.device}"] = float(np.abs(got - reference).max()) / scale
        row["compile_s"] = round(computation.compile_s, 1)
        record[architecture] = row
        print(f"   {architecture}: {row}", flush=True)


def md_ms_per_step(model: Path, structure, backend: str, platform_name: str, graphs: bool | None,
                   steps: int = 200) -> float:
    import openmm
    from openmm import unit

    from openmlff.potentials.exported import build_system, torchforce_properties

    properties = torchforce_properties(graphs) if graphs is not None else None
    system = build_system(structure.atomic_numbers, model, backend=backend, torch_properties=properties)
    integrator = openmm.LangevinMiddleIntegrator(500 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform_name))
    context.setPositions(structure.positions_angstrom / 10.0)
    context.setVelocitiesToTemperature(500 * unit.kelvin, 1)
    integrator.step(20)  # warm-up: profiling runs, graph capture, the compile
    context.getState(getEnergy=True)
    start = time.perf_counter()
    integrator.step(steps)
    context.getState(getEnergy=True)  # waits for the GPU
    return 1000 * (time.perf_counter() - start) / steps


def md(check: Check, record: dict) -> None:
    from openmlff.structures import load_structure

    platform_name = "CUDA" if check.device == "cuda" else "CPU"
    paths = [("torchforce", None), ("torchforce", True), ("compiled", None)] if check.device == "cuda" else \
        [("torchforce", None), ("compiled", None)]
    for preset in ("cpu", "paper"):
        for molecule in ("aspirin", "chignolin"):
            structure = load_structure(molecule)
            for architecture in ARCHITECTURES:
                for backend, graphs in paths:
                    label = f"{architecture}/{preset}/{molecule}/{backend}{'+graphs' if graphs else ''}"
                    if check.left_s() < 45 or (backend == "compiled" and preset == "paper" and check.left_s() < 120):
                        record[label] = "skipped: budget spent"
                        continue
                    try:
                        model = export(architecture, preset, structure, check.folder)
                        ms = md_ms_per_step(model, structure, backend, platform_name, graphs,
                                            steps=200 if check.device == "cuda" else 20)
                        record[label] = {"ms_per_step": round(ms, 3), "ns_per_day": round(NS_PER_STEP * 86400e3 / ms, 2)}
                    except Exception as exc:
                        record[label] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
                    print(f"   {label}: {record[label]}", flush=True)
                    check.save()


def replicas(check: Check, record: dict) -> None:
    import openmm
    from openmm import unit

    from openmlff.potentials.exported import build_replica_system, torchforce_properties, write_replica_module
    from openmlff.structures import load_structure

    aspirin = load_structure("aspirin")
    model = export("et", "cpu", aspirin, check.folder)
    module = write_replica_module(model, len(aspirin.atomic_numbers), check.folder / "replicas.pt")
    cuda = check.device == "cuda"
    for n in (1, 2, 4, 8, 16, 32, 64) if cuda else (1, 4):
        if check.left_s() < 30:
            record[str(n)] = "skipped: budget spent"
            continue
        system = build_replica_system(aspirin.atomic_numbers, module, n,
                                      torch_properties=torchforce_properties(True) if cuda else None)
        integrator = openmm.LangevinMiddleIntegrator(500 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds)
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CUDA" if cuda else "CPU"))
        starts = aspirin.positions_angstrom[None] + np.arange(n)[:, None, None] * np.array([30.0, 0, 0])
        context.setPositions(starts.reshape(-1, 3) / 10.0)
        context.setVelocitiesToTemperature(500 * unit.kelvin, 1)
        integrator.step(20)
        context.getState(getEnergy=True)
        steps = 200 if cuda else 10
        start = time.perf_counter()
        integrator.step(steps)
        context.getState(getEnergy=True)
        ms = 1000 * (time.perf_counter() - start) / steps
        record[str(n)] = {"ms_per_step": round(ms, 3), "ns_per_day_all_copies": round(n * NS_PER_STEP * 86400e3 / ms, 2)}
        print(f"   N={n}: {record[str(n)]}", flush=True)


def training(check: Check, record: dict) -> None:
    import torch

    from openmlff.data import load_dataset
    from openmlff.models import fit_element_energies

    data = load_dataset(ROOT / "openmlff" / "resources" / "datasets" / "rmd17_aspirin_1200.extxyz")
    model = trained_like("et", "paper", data.z)
    model.set_energy_statistics(fit_element_energies(data.z, data.E), float(np.sqrt(np.mean(data.F ** 2))))
    batch_size, n_atoms = 32, data.n_atoms
    z = torch.as_tensor(data.z, dtype=torch.long).repeat(batch_size)
    batch_index = torch.arange(batch_size).repeat_interleave(n_atoms)

    def steps(device: str, n_batches: int) -> float:
        net = model.to(device).train()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        zd, bd = z.to(device), batch_index.to(device)
        start = None
        for k in range(n_batches + 2):
            if k == 2:  # two warm-up steps
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
            rows = np.arange(k * batch_size, (k + 1) * batch_size) % len(data.R)
            pos = torch.as_tensor(data.R[rows].reshape(-1, 3), dtype=torch.float32, device=device)
            energy, force = net.energy_and_forces(zd, pos, bd, batch_size, create_graph=True)
            target_e = torch.as_tensor(data.E[rows], device=device)
            target_f = torch.as_tensor(data.F[rows].reshape(-1, 3), dtype=torch.float32, device=device)
            loss = 0.05 * ((energy - target_e) ** 2).mean() + ((force - target_f) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / n_batches

    per_epoch = len(data.R) // batch_size
    record["frames"], record["batch_size"], record["parameters"] = len(data.R), batch_size, model.count_parameters()
    cpu_s = steps("cpu", 3)
    record["cpu_s_per_batch"] = round(cpu_s, 3)
    record["cpu_s_per_epoch_estimated"] = round(cpu_s * per_epoch, 1)
    if check.device == "cuda":
        record["gpu_s_per_batch"] = round(steps("cuda", per_epoch), 4)
        record["gpu_s_per_epoch"] = round(record["gpu_s_per_batch"] * per_epoch, 2)
    print(f"   {record}", flush=True)


def dft(check: Check, record: dict) -> None:
    try:
        import gpu4pyscf  # noqa: F401
    except ImportError:
        record["skipped"] = "gpu4pyscf is not installed here (not carried: its wheels exceed what travels with the code)"
        return
    from openmlff.reference.dft import DFTReference
    from openmlff.structures import load_structure

    aspirin = load_structure("aspirin")
    start = time.perf_counter()
    energy, _ = DFTReference().compute(aspirin.atomic_numbers, aspirin.positions_angstrom)
    record.update(seconds_single_point=round(time.perf_counter() - start, 1), energy_eV=energy)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting measurements after this (s)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when torch sees a GPU")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = p.parse_args(argv)
    import torch

    from openmlff.core.threads import set_threads

    set_threads(1)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check = Check(args.out, args.budget_s, device)
    with tempfile.TemporaryDirectory() as tmp:
        check.folder = Path(tmp)
        for name in args.sections:
            check.section(name, globals()[name])
    check.doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    check.save()
    failed = [n for n, r in check.doc["sections"].items() if r.get("status") != "done"]
    print(f"wrote {args.out}; sections failed: {failed or 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
