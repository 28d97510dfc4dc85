"""An ASE calculator for tests of `ase:MODULE:CLASS` models: a toy TorchScript file (tests/toy_models.py) as ASE
sees a model, Å and eV, built from keyword arguments the way openmlff builds any calculator."""

from __future__ import annotations

import torch
from ase.calculators.calculator import Calculator, all_changes

from openmlff.core.units import EV_IN_KJ_PER_MOL


class ToySpringsCalculator(Calculator):
    """ToySpringsCalculator(model_file=PATH): energy (eV) and forces (eV/Å) of the TorchScript file at PATH."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model_file: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.module = torch.jit.load(str(model_file), map_location="cpu")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = torch.tensor(self.atoms.positions / 10.0, dtype=torch.float64, requires_grad=True)
        energy = self.module(x)
        (grad,) = torch.autograd.grad(energy, x)
        e_ev = float(energy.detach()) / EV_IN_KJ_PER_MOL
        self.results = {"energy": e_ev, "free_energy": e_ev,
                        "forces": -grad.numpy() / EV_IN_KJ_PER_MOL / 10.0}
