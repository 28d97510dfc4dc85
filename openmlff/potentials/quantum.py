"""Reference methods as potentials: GFN2-xTB / GFN1-xTB (tblite) and DFT (PySCF PBE/def2-SVP) in metrics and MD.

The method is openmlff.reference's (`get_reference_method(name)`): each frame is one single point.
In OpenMM it is a PythonForce whose computation converts nm to Å and eV, eV/Å to kJ/mol, kJ/mol/nm;
the computation pickles as the method's name, atoms, charge and spin. The molecule's net charge is
the shipped structure's when the atoms are one (chignolin: -2), else 0, unless `charge` is given.
"""

from __future__ import annotations

import numpy as np

from ..core import elements, units
from ..core.errors import InputError
from ..reference import ReferenceMethodError, get_reference_method
from .base import Potential, json_sha256
from .model_ref import QUANTUM_NAMES

NAMES = QUANTUM_NAMES

_KJ_PER_MOL_NM_PER_EV_PER_A = units.EV_IN_KJ_PER_MOL * units.NM_IN_ANGSTROM


def make(name: str, **options) -> "QuantumPotential":
    return QuantumPotential(name, **options)


class ReferenceComputation:
    """PythonForce computation: a reference method's energy (kJ/mol) and forces (kJ/mol/nm) at the State's positions."""

    def __init__(self, method_name: str, atomic_numbers, charge: int, multiplicity: int,
                 method_options: dict | None = None, method=None) -> None:
        self.method_name = method_name
        self.method_options = dict(method_options or {})
        self.atomic_numbers = [int(v) for v in atomic_numbers]
        self.charge = int(charge)
        self.multiplicity = int(multiplicity)
        self._method = method  # the potential's own (one served process per potential); rebuilt after unpickling

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_method"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _method=None)

    def __call__(self, state) -> tuple[float, np.ndarray]:
        from openmm import unit

        if self._method is None:
            self._method = get_reference_method(self.method_name, **self.__dict__.get("method_options", {}))
        positions_nm = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        energy, forces = self._method.compute(self.atomic_numbers, positions_nm * units.NM_IN_ANGSTROM,
                                              self.charge, self.multiplicity)
        return energy * units.EV_IN_KJ_PER_MOL, forces * _KJ_PER_MOL_NM_PER_EV_PER_A


class QuantumPotential(Potential):
    """A reference method (kind "quantum"): labels and MD at the level of theory itself."""

    kind = "quantum"

    def __init__(self, name: str, charge: int | None = None, multiplicity: int = 1,
                 method_options: dict | None = None) -> None:
        self.name = name
        self.method_options = dict(method_options or {})
        self.method = get_reference_method(name, **self.method_options)
        self.charge = charge
        self.multiplicity = int(multiplicity)

    def molecule_charge(self, atomic_numbers) -> int:
        """The net charge used: `charge` if given, else the matching shipped structure's, else 0."""
        if self.charge is not None:
            return int(self.charge)
        from ..structures import find_builtin

        builtin = find_builtin(atomic_numbers)
        return 0 if builtin is None else int(builtin.charge)

    def check_atoms(self, atomic_numbers, where: str = "structure") -> None:
        supported = self.method.supported_elements
        z = {int(v) for v in np.asarray(atomic_numbers).reshape(-1)}
        if supported is not None and z - set(supported):
            raise InputError(f"{where}: {self.name} cannot treat element(s) {sorted(z - set(supported))}")

    def _settings(self) -> dict:
        from dataclasses import asdict, is_dataclass

        settings = getattr(self.method, "settings", None)
        return asdict(settings) if is_dataclass(settings) else {}

    def metadata(self, atomic_numbers) -> dict:
        z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        return {"kind": self.kind, "name": self.name, "level_of_theory": self.method.level_of_theory,
                "atomic_numbers": z.tolist(), "symbols": elements.symbols(z), "charge": self.molecule_charge(z),
                "multiplicity": self.multiplicity, "settings": self._settings(),
                "units": {"positions": "nm", "energy": "kJ/mol", "forces": "kJ/mol/nm"},
                "provenance": self.method.provenance()}

    def identity_sha256(self, atomic_numbers, positions_angstrom=None, topology=None) -> str:
        return json_sha256({"method": self.method.name, "level_of_theory": self.method.level_of_theory,
                            "settings": self._settings(), "charge": self.molecule_charge(atomic_numbers),
                            "multiplicity": self.multiplicity})

    def build_system(self, atomic_numbers, positions_angstrom=None, backend: str = "torchforce",
                     torch_properties: dict | None = None, topology=None):
        """Masses of openmlff.core.elements and one PythonForce calling the method (backend options are ignored)."""
        import openmm

        z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        self.check_atoms(z)
        system = openmm.System()
        for mass in elements.masses(z):
            system.addParticle(float(mass))
        force = openmm.PythonForce(ReferenceComputation(self.name, z, self.molecule_charge(z),
                                                        self.multiplicity, self.method_options, self.method))
        force.setUsesPeriodicBoundaryConditions(False)
        force.setName(f"openmlff reference method {self.name}")
        system.addForce(force)
        return system

    def energies_and_forces(self, atomic_numbers, positions_angstrom) -> tuple[np.ndarray, np.ndarray]:
        """One single point per frame; a failed frame raises ReferenceMethodError naming it."""
        R = np.asarray(positions_angstrom, dtype=np.float64)
        charge = self.molecule_charge(atomic_numbers)
        energies, forces = np.empty(len(R)), np.empty_like(R)
        for k, frame in enumerate(R):
            try:
                energies[k], forces[k] = self.method.compute(atomic_numbers, frame, charge, self.multiplicity)
            except ReferenceMethodError as exc:
                raise type(exc)(f"frame {k} of the batch: {exc}") from None
        return energies, forces
