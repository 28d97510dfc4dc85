"""Any ASE calculator as a model: `ase:MODULE:CLASS` with keyword arguments (nequip's, MACE's, ... calculators).

One mechanism with the reference layer: the calculator is `reference.ASEReference.from_spec` (CLASS(**options)
imported from MODULE), and the System is QuantumPotential's, a PythonForce that calls it (ASE speaks Å and eV;
the force converts to nm and kJ/mol). What differs from a reference method is the kind ("mlff", so that the
metrics, campaigns and correlation treat it as a model), the consent it needs (importing MODULE runs code:
model_ref.py), and its identity: name, options, the files the options name and the versions of ASE and of the
package that holds MODULE. `openmm-ml:ase` with `calculator = "MODULE:CLASS"` is the same model.

With the option `python = PATH` (an interpreter of another environment) the calculator, or an `openmm-ml:NAME`
potential, is built and run in that environment and served over ASE's socket (reference/served.py): the way to
models whose code cannot be installed beside openmlff (mace-torch, torchmd-net).
"""

from __future__ import annotations

import numpy as np

from ..core import elements
from ..core.errors import InputError
from ..core.versions import package_versions
from .base import json_sha256
from .model_ref import ASE_PREFIX, ModelRef
from .quantum import QuantumPotential


def module_distribution(module: str) -> str | None:
    """The installed distribution that provides the top-level package of `module` (None when unknown)."""
    from importlib.metadata import packages_distributions

    names = packages_distributions().get(module.split(".")[0], [])
    return names[0] if names else None


class ASEPotential(QuantumPotential):
    """`ase:MODULE:CLASS` (kind "mlff"); see the module docstring."""

    kind = "mlff"

    def __init__(self, ref: ModelRef) -> None:
        ref.check_consent()
        if ref.kind == "ase" and ref.backend_name.count(":") != 1:
            raise InputError(f"{ref.name}: expected 'ase:MODULE:CLASS', e.g. 'ase:mace.calculators:MACECalculator'")
        self.ref = ref
        self._files = ref.files()
        self._python = ref.options.get("python")
        super().__init__(ref.name, method_options=ref.options)

    def _versions(self) -> dict:
        if self._python is not None:  # served: the versions of the environment that runs it
            from ..reference.served import served_versions

            return served_versions(self._python, self.ref.name if self.ref.kind == "openmm-ml" else
                                   self.ref.backend_name)
        dist = module_distribution(self.ref.backend_name.split(":")[0])
        return package_versions(["ase"] + ([dist] if dist and dist != "ase" else []))

    def metadata(self, atomic_numbers=None) -> dict:
        out = {"kind": self.kind, "source": "ASE calculator", "potential": self.name, "options": dict(self.ref.options),
               "files": dict(self._files), "versions": self._versions(),
               "units": {"positions": "nm", "energy": "kJ/mol", "forces": "kJ/mol/nm"}}
        if atomic_numbers is not None:
            z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
            out.update(atomic_numbers=z.tolist(), symbols=elements.symbols(z), charge=self.molecule_charge(z))
        return out

    def identity_sha256(self, atomic_numbers=None, positions_angstrom=None, topology=None) -> str:
        return json_sha256({"potential": self.name, "options": self.ref.options, "files": self._files,
                            "versions": self._versions()})



def from_openmm_ml_ase(ref: ModelRef) -> ModelRef:
    """`openmm-ml:ase` with `calculator = "MODULE:CLASS"` and keyword arguments as the `ase:MODULE:CLASS` model."""
    options = dict(ref.options)
    calculator = options.pop("calculator", None)
    if not isinstance(calculator, str) or calculator.count(":") != 1:
        raise InputError(f"{ref.name}: name the ASE calculator as an option, calculator=MODULE:CLASS (its keyword "
                         "arguments as the other options)")
    return ModelRef(ASE_PREFIX + calculator, options, ref.allow_code)
