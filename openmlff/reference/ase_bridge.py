"""The bridge to ASE, both ways.

`ASEReference` wraps any ASE calculator as a ReferenceMethod (ASE already speaks Å and eV), and
`ReferenceCalculator` wraps any ReferenceMethod as an ASE calculator, so ASE's integrators
(Langevin in openmlff.reference.sampling) and optimisers can drive a reference method. Importing it
registers the 'ase:module.path:ClassName' specs with base.get_reference_method (the package does).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ..core.errors import InputError
from .base import (ConvergenceError, ReferenceMethod, ReferenceMethodError, get_reference_method,
                   import_object, register_reference_prefix)


class ASEReference(ReferenceMethod):
    """Any ASE calculator as a reference method.

    ASE has no total charge or spin on Atoms; by the convention of calculators that read them
    (tblite's and xtb's ASE calculators), the charge goes in as initial charges and the number
    of unpaired electrons as initial magnetic moments, both on the first atom. A calculator that
    ignores them (EMT, Lennard-Jones) takes its charge and spin from its own settings.
    Pass `supported_elements` when the calculator's element coverage is known, so unsupported
    structures fail with a clear UnsupportedElementError before the calculator is called.
    """

    def __init__(self, calculator: Calculator, name: str | None = None,
                 supported_elements=None, level_of_theory: str | None = None):
        self.calculator = calculator
        cls = type(calculator)
        self.name = name or f"ase:{cls.__module__}:{cls.__name__}"
        params = getattr(calculator, "parameters", None) or {}
        described = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
        self.level_of_theory = level_of_theory or f"ASE {cls.__name__}" + (f" ({described})" if described else "")
        self.supported_elements = None if supported_elements is None else frozenset(int(v) for v in supported_elements)

    @classmethod
    def from_spec(cls, spec: str, **options) -> "ASEReference":
        """Build from 'ase:module.path:ClassName', the calculator made as ClassName(**options).

        With the option `python` (an interpreter of another environment), the calculator is made and run there and
        answers over ASE's socket (reference/served.py); then 'openmm-ml:NAME' is also a spec: openmm-ml's potential
        NAME in that environment."""
        spec = spec.strip()
        options = dict(options)
        python = options.pop("python", None)
        target = spec[len("openmm-ml:"):] if spec.lower().startswith("openmm-ml:") else spec[len("ase:"):]
        if python is not None:
            from .served import close_with, served_calculator

            calculator = served_calculator(python, spec if spec.lower().startswith("openmm-ml:") else target, options)
            method = cls(calculator, name=spec, level_of_theory=f"{spec}, served from {python}")
            close_with(method, calculator)
            return method
        if spec.lower().startswith("openmm-ml:"):
            raise InputError(f"{spec}: as an ASE calculator, an openmm-ml potential runs in another environment; "
                             "name its interpreter with the option python=PATH")
        calculator_class = import_object(target)
        if not (isinstance(calculator_class, type) and issubclass(calculator_class, Calculator)):
            raise InputError(f"{spec!r} does not name an ASE Calculator class")
        try:
            calculator = calculator_class(**options)
        except TypeError as exc:
            raise InputError(f"{spec}: the options {sorted(options)} do not fit {target}: {exc}") from None
        return cls(calculator, name=spec)

    def _calculate(self, z, pos_angstrom, charge, multiplicity):
        atoms = Atoms(numbers=z, positions=pos_angstrom)
        if charge:
            initial = np.zeros(len(z))
            initial[0] = charge
            atoms.set_initial_charges(initial)
        if multiplicity != 1:
            moments = np.zeros(len(z))
            moments[0] = multiplicity - 1
            atoms.set_initial_magnetic_moments(moments)
        atoms.calc = self.calculator
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
        except ReferenceMethodError:
            raise
        except Exception as exc:  # an arbitrary backend may raise anything; say which and why
            from .served import failure_detail

            kind = ConvergenceError if "converge" in str(exc).lower() else ReferenceMethodError
            raise kind(f"{self.name}: {type(exc).__name__}: {exc}{failure_detail(self.calculator)}") from exc
        finally:
            atoms.calc = None
        return float(energy), np.array(forces, dtype=np.float64)


register_reference_prefix("ase:", ASEReference.from_spec)  # get_reference_method("ase:module.path:ClassName")
register_reference_prefix("openmm-ml:", ASEReference.from_spec)  # served from another environment (python=PATH)


class ReferenceCalculator(Calculator):
    """An ASE calculator that asks a ReferenceMethod for energy (eV) and forces (eV/Å)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, method: str | ReferenceMethod, charge: int = 0, multiplicity: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.method = get_reference_method(method)
        self.charge = int(charge)
        self.multiplicity = int(multiplicity)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces = self.method.compute(self.atoms.numbers, self.atoms.positions,
                                             self.charge, self.multiplicity)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
