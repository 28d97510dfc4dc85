"""The PythonForce computation of a TorchScript model file: OpenMM's State in, energy and forces by autograd out.

openmm.PythonForce calls it at every step; ASE's calculator of a model file (integrations/ase_calculator.py) calls
`energy_and_forces` the same way, and the compiled backend (compiled.py) runs the same code on the compiled model.
"""

from __future__ import annotations

import numpy as np
import openmm
from openmm import unit

from ..core.threads import flush_denormals


class TorchModelComputation:
    """PythonForce computation: energy (kJ/mol) and forces (kJ/mol/nm) of a TorchScript model by autograd.

    atoms: the System's particles that are the model's atoms, in the model's order (None: all of them);
    periodic: hand the model the State's box. Holds only the model path and those settings when pickled
    (OpenMM pickles PythonForce computations for XmlSerializer); the model is loaded on first use.
    """

    def __init__(self, model_path, atoms=None, periodic: bool = False) -> None:
        self.model_path = str(model_path)
        self.atoms = None if atoms is None else [int(a) for a in atoms]
        self.periodic = bool(periodic)
        self._model = None
        self.device = "cpu"  # where the model runs (the compiled backend may run it on a GPU)

    def __getstate__(self) -> dict:
        return {"model_path": self.model_path, "atoms": self.atoms, "periodic": self.periodic}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_path"], state.get("atoms"), state.get("periodic", False))

    @property
    def model(self):
        if self._model is None:
            import torch

            self._model = torch.jit.load(self.model_path, map_location="cpu")
            self._model.eval()
        return self._model

    def energy_and_forces(self, positions_nm: np.ndarray, box_nm: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Energy in kJ/mol and forces (n_particles, 3) in kJ/mol/nm at positions in nm (the box (3, 3) in nm when
        periodic); particles outside `atoms` get no force."""
        import torch

        flush_denormals()  # in the thread that calls the model (ASE's loop, OpenMM's PythonForce callback)
        positions = np.asarray(positions_nm, dtype=np.float64)
        x = torch.tensor(positions if self.atoms is None else positions[self.atoms], device=self.device,
                         requires_grad=True)
        box = torch.tensor(np.asarray(box_nm, dtype=np.float64), device=self.device) if self.periodic else None
        out = self.model(x) if box is None else self.model(x, box)
        if isinstance(out, (tuple, list)):  # a TorchForce-contract file that returns its own forces
            energy, model_forces = out[0], out[1].detach().double().cpu().numpy()
        else:
            energy = out
            (grad,) = torch.autograd.grad(energy, x)
            model_forces = -grad.detach().double().cpu().numpy()
        if self.atoms is None:
            return float(energy.detach()), model_forces
        forces = np.zeros_like(positions)
        forces[self.atoms] = model_forces
        return float(energy.detach()), forces

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if self.periodic else None
        return self.energy_and_forces(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), box)
