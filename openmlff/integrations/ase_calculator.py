"""An ASE calculator for an exported openmlff model, for ASE's dynamics, optimisers and tools.

The exported TorchScript file speaks OpenMM's units (nm in, kJ/mol out); ASE speaks Å and eV.
The calculator converts both ways and computes forces by autograd, exactly as the PythonForce
backend does (it uses the same TorchModelComputation), so ASE and OpenMM see the same model.

    from openmlff.integrations.ase_calculator import ExportedModelCalculator
    atoms.calc = ExportedModelCalculator("model.pt")
    ase.md.langevin.Langevin(atoms, 0.5 * ase.units.fs, temperature_K=500, friction=0.001 / ase.units.fs).run(1000)
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..core.units import EV_IN_KJ_PER_MOL, NM_IN_ANGSTROM
from ..potentials.exported import TorchModelComputation, check_model_atoms, read_model_metadata


class ExportedModelCalculator(Calculator):
    """ASE Calculator: energy (eV) and forces (eV/Å) of an exported openmlff model (non-periodic).

    The Atoms must have the model's atomic numbers in the model's order (ModelFileError naming
    the model file otherwise); their cell and periodic boundary conditions are ignored.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model_path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_path = str(model_path)
        self.metadata = read_model_metadata(model_path)
        self._computation = TorchModelComputation(model_path)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        check_model_atoms(self.model_path, self.metadata, self.atoms.get_atomic_numbers())
        positions_nm = np.asarray(self.atoms.get_positions(), dtype=np.float64) / NM_IN_ANGSTROM
        energy_kj, forces_kj_nm = self._computation.energy_and_forces(positions_nm)
        energy_ev = energy_kj / EV_IN_KJ_PER_MOL
        self.results["energy"] = energy_ev
        self.results["free_energy"] = energy_ev
        self.results["forces"] = forces_kj_nm / (EV_IN_KJ_PER_MOL * NM_IN_ANGSTROM)
