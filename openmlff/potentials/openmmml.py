"""A model of another code through openmm-ml: `openmm-ml:NAME` with options (nequip, mace, torchmdnet, ...).

The System is openmm-ml's own: `MLPotential(NAME, **constructor options).createSystem(topology, **the other
options)`, with openmlff's masses and no centre-of-mass remover, as every potential's System (base.py). The
options the backend's factory takes (`createImpl`'s parameters, e.g. modelPath, lengthScale, energyScale) go to
the constructor, the rest to createSystem (e.g. precision, atomTypes). Frames for the metrics are evaluated in
an OpenMM Context of that System (Potential.energies_and_forces), so metrics and MD see one model.

The identity of the model (what a resume must match) is the SHA-256 of its name, options, the files the
options name (model_ref.ModelRef.files) and the versions of openmm-ml and the backend's package.
"""

from __future__ import annotations

import numpy as np

from ..core import elements
from ..core.errors import InputError
from ..core.versions import package_versions
from ..reference.socket_client import split_openmm_ml_options
from .base import Potential, json_sha256
from .model_ref import ModelRef, check_not_downloaded

#: openmm-ml backend name (prefix) -> the distribution that holds its code, for the record and the install hint.
BACKEND_DISTRIBUTIONS = {"nequip": "nequip", "mace": "mace-torch", "torchmdnet": "torchmd-net", "aceff": "torchmd-net",
                         "ani": "torchani", "aimnet": "aimnet", "fennix": "fennol", "orb": "orb-models",
                         "deepmd": "deepmd-kit"}


def backend_distribution(name: str) -> str | None:
    key = name.lower()
    return next((dist for prefix, dist in BACKEND_DISTRIBUTIONS.items() if key.startswith(prefix)), None)


class OpenMMMLPotential(Potential):
    """`openmm-ml:NAME` (kind "mlff"); see the module docstring."""

    kind = "mlff"

    def __init__(self, ref: ModelRef) -> None:
        ref.check_consent()
        self.ref = ref
        self.name = ref.name
        self.backend = ref.backend_name
        check_not_downloaded(self.backend, ref.options)
        try:
            from openmmml import MLPotential
        except ImportError:
            raise InputError(f"{ref.name} needs openmm-ml: pip install 'openmlff[openmm-ml]'") from None
        factory = MLPotential._implFactories.get(self.backend)
        if factory is None:
            raise InputError(f"{ref.name}: openmm-ml has no potential {self.backend!r}; it has "
                             f"{', '.join(sorted(MLPotential._implFactories))}")
        self.constructor_options, self.system_options = split_openmm_ml_options(self.backend, ref.options)
        self._files = ref.files()
        try:
            self._potential = MLPotential(self.backend, **self.constructor_options)
        except ImportError as exc:
            dist = backend_distribution(self.backend)
            raise InputError(f"{ref.name} needs the package {dist or self.backend} in openmlff's environment ({exc}); "
                             "see the README, \"Testing a model you trained elsewhere\"") from None
        except (TypeError, ValueError, FileNotFoundError) as exc:
            raise InputError(f"{ref.name}: openmm-ml refused the options {self.constructor_options}: {exc}") from None

    def _versions(self) -> dict:
        names = ["openmmml"] + ([backend_distribution(self.backend)] if backend_distribution(self.backend) else [])
        return package_versions(names)

    def metadata(self, atomic_numbers=None) -> dict:
        out = {"kind": self.kind, "source": "openmm-ml", "potential": self.name, "backend": self.backend,
               "options": dict(self.ref.options), "files": dict(self._files), "versions": self._versions(),
               "units": {"positions": "nm", "energy": "kJ/mol", "forces": "kJ/mol/nm"}}
        if atomic_numbers is not None:
            z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
            out.update(atomic_numbers=z.tolist(), symbols=elements.symbols(z))
        return out

    def identity_sha256(self, atomic_numbers=None, positions_angstrom=None, topology=None) -> str:
        return json_sha256({"potential": self.name, "options": self.ref.options, "files": self._files,
                            "versions": self._versions()})


    def build_system(self, atomic_numbers, positions_angstrom=None, backend: str = "torchforce",
                     torch_properties: dict | None = None, topology=None):
        """openmm-ml's System of the molecule (openmlff's backend and TorchForce properties do not apply here)."""
        from ..structures.builtin import structure_from_atoms

        z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        if topology is None:
            positions = np.zeros((len(z), 3)) if positions_angstrom is None else positions_angstrom
            topology = structure_from_atoms("molecule", z, positions).topology
        try:
            system = self._potential.createSystem(topology, removeCMMotion=False, **self.system_options)
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{self.name}: openmm-ml could not build the System of these {len(z)} atoms with "
                             f"options {self.system_options}: {type(exc).__name__}: {exc}") from None
        for i, mass in enumerate(elements.masses(z)):
            system.setParticleMass(i, float(mass))
        return system
