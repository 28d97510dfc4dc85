"""The far end of a served model: run by ANOTHER Python environment's interpreter, it builds a calculator there and
answers openmlff over ASE's socket protocol (i-PI), until openmlff closes the socket.

This file imports nothing from openmlff (the other environment need not have it): only ASE, and what the
calculator needs. openmlff starts it as `PYTHON socket_client.py --target TARGET --options JSON --numbers Z,Z,...
--unixsocket NAME` (openmlff.reference.served). TARGET is `MODULE:CLASS` (an ASE calculator, built as
CLASS(**options)) or `openmm-ml:NAME` (openmm-ml's potential NAME in an OpenMM Context of that environment, CPU
platform: `OpenMMMLCalculator`). `--versions TARGET` prints the versions of the packages behind TARGET as JSON.
Threads: one (--threads), as every openmlff evaluation.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys

EV_IN_KJ_PER_MOL = 96.48533212331002  # CODATA 2018, as openmlff.core.units
NM_IN_ANGSTROM = 10.0  # as openmlff.core.units


def versions(target: str) -> dict:
    """Installed versions of ASE, torch and the distribution(s) behind TARGET in this environment."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    module = "openmmml" if target.startswith("openmm-ml:") else target.split(":")[0]
    names = ["ase", "torch"] + packages_distributions().get(module.split(".")[0], [])
    if target.startswith("openmm-ml:"):
        backend = target.split(":", 1)[1].lower()
        names += [dist for prefix, dist in (("nequip", "nequip"), ("mace", "mace-torch"), ("torchmdnet", "torchmd-net"),
                                            ("aceff", "torchmd-net")) if backend.startswith(prefix)]
    out = {}
    for name in dict.fromkeys(names):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = sys.version.split()[0]
    return out


def build_calculator(target: str, options: dict, numbers):
    if target.startswith("openmm-ml:"):
        return OpenMMMLCalculator(target.split(":", 1)[1], numbers, **options)
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(**options)


def split_openmm_ml_options(name: str, options: dict) -> tuple[dict, dict]:
    """(MLPotential options, createSystem options) of openmm-ml's potential `name`: the options its implementation's
    addForces names (returnEnergyType, precision, atomTypes, ...) go to createSystem, the rest (modelPath,
    lengthScale, ...) to MLPotential. openmlff.potentials.openmmml uses this rule too."""
    from openmmml.mlpotential import MLPotential, MLPotentialImpl

    factory = MLPotential._implFactories[name]
    module = sys.modules[type(factory).__module__]
    impls = [c for c in vars(module).values()
             if isinstance(c, type) and issubclass(c, MLPotentialImpl) and c is not MLPotentialImpl]
    named = set()
    for impl in impls:
        named |= {k for k, p in inspect.signature(impl.addForces).parameters.items()
                  if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    constructor_named = set(inspect.signature(factory.createImpl).parameters)
    to_system = named - constructor_named - {"self", "topology", "system", "atoms", "forceGroup"}
    return ({k: v for k, v in options.items() if k not in to_system}, {k: v for k, v in options.items() if k in to_system})


def _calculator_base():
    from ase.calculators.calculator import Calculator

    return Calculator


class OpenMMMLCalculator(_calculator_base()):
    """openmm-ml's MLPotential(NAME) as an ASE calculator (Å, eV); options split by split_openmm_ml_options."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, name: str, numbers, **options) -> None:
        super().__init__()
        import openmm
        from openmm import app
        from openmmml import MLPotential

        constructor, system_options = split_openmm_ml_options(name, options)
        topology = app.Topology()
        residue = topology.addResidue("MOL", topology.addChain())
        for z in numbers:
            topology.addAtom("X", app.Element.getByAtomicNumber(int(z)), residue)
        system = MLPotential(name, **constructor).createSystem(topology, removeCMMotion=False, **system_options)
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.0005),
                                      openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        from ase.calculators.calculator import all_changes
        from openmm import unit

        super().calculate(atoms, properties, system_changes or all_changes)
        self.context.setPositions(self.atoms.positions / NM_IN_ANGSTROM)
        state = self.context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_IN_KJ_PER_MOL
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces / EV_IN_KJ_PER_MOL / NM_IN_ANGSTROM}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="serve an ASE calculator (or an openmm-ml potential) to openmlff")
    p.add_argument("--target", required=True, help="MODULE:CLASS or openmm-ml:NAME")
    p.add_argument("--options", default="{}", help="JSON keyword arguments")
    p.add_argument("--numbers", default="", help="atomic numbers, comma-separated")
    p.add_argument("--unixsocket", default=None, help="socket name (ASE binds /tmp/ipi_NAME)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--versions", action="store_true", help="print the versions behind TARGET as JSON and exit")
    args = p.parse_args(argv)
    if args.versions:
        print(json.dumps(versions(args.target)))
        return 0
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.target.lower().startswith(("openmm-ml:torchmdnet", "openmm-ml:aceff")):
        # openmm-ml 1.8 compiles TorchMD-Net models with torch.compile(fullgraph=True) after the first call, which
        # fails on ET's data-dependent branch ("Data-dependent branching"); run them eagerly instead
        os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    import numpy as np
    from ase import Atoms
    from ase.calculators.socketio import SocketClient

    numbers = [int(z) for z in args.numbers.split(",") if z]
    atoms = Atoms(numbers=numbers, positions=np.zeros((len(numbers), 3)), info={"charge": 0, "spin": 1})  # neutral
    # singlets: openmlff's models are of closed-shell molecules (TorchMD-Net's calculator reads info["charge"])
    atoms.calc = build_calculator(args.target, json.loads(args.options), numbers)
    SocketClient(unixsocket=args.unixsocket).run(atoms)  # returns when openmlff closes the socket
    return 0


if __name__ == "__main__":
    sys.exit(main())
