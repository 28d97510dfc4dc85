"""A potential: whatever gives a molecule's energy and forces, for metrics and for MD, behind one interface.

Three kinds answer to `openmlff metrics --model X` and `openmlff simulate --model X`:
- "mlff": an exported TorchScript model file (potentials/exported.py; TorchForce or PythonForce in OpenMM);
- "classical": a classical force field, `amber14` (ff14SB, peptides) or `gaff-2.11` (GAFF 2.11 with
  AM1-BCC charges from AmberTools' sqm, any small molecule) (potentials/classical.py);
- "quantum": a reference method, `gfn2-xtb`, `gfn1-xtb` (tblite) or `dft` (PySCF PBE/def2-SVP), whose
  energy and forces enter OpenMM through a PythonForce (potentials/quantum.py).

Every potential builds an `openmm.System` for the molecule (non-periodic, masses from openmlff.core.elements)
and evaluates frames in openmlff's internal units (positions Å in; energies eV, forces eV/Å out), so the
force metrics and the MD runner treat them alike. `record()` is what a run's run.json keeps as "model":
its kind, name, path (files only), metadata and a SHA-256 identity (the file's, or that of the System's
XML for a classical force field, or of the method's settings for a quantum one) that a resume must match.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


#: Potential kinds, as recorded in run.json and metrics reports.
KINDS = ("mlff", "classical", "quantum")


class Potential(ABC):
    """Energy and forces of one molecule; see the module docstring."""

    kind: str = "mlff"
    #: What the user named: a file path or a registered name ('amber14', 'gfn2-xtb', ...).
    name: str = ""
    #: Evaluations of a fresh Context before it steps (TorchScript compiles on its first calls).
    warmup_evaluations: int = 0

    @abstractmethod
    def build_system(self, atomic_numbers, positions_angstrom, backend: str = "torchforce",
                     torch_properties: dict | None = None, topology=None):
        """A non-periodic openmm.System of the molecule (positions: a conformation, for bonds and charges;
        topology: the caller's residues, which amber14 uses when given)."""

    @abstractmethod
    def metadata(self, atomic_numbers) -> dict:
        """JSON-ready description: kind, level of theory or force field, versions, how it was built."""

    @abstractmethod
    def identity_sha256(self, atomic_numbers, positions_angstrom, topology=None) -> str:
        """A SHA-256 that changes whenever the energies this potential gives could change."""

    def check_atoms(self, atomic_numbers, where: str = "structure") -> None:
        """InputError naming `where` when this potential cannot treat these atoms (default: any atoms)."""

    def topology(self, atomic_numbers, positions_angstrom):
        """An OpenMM Topology with residues the potential needs (amber14), or None to let the caller choose."""
        return None

    def record(self, atomic_numbers, positions_angstrom, topology=None) -> dict:
        """run.json's "model" block: kind, name, path (None unless a file), sha256, metadata."""
        path = self.path
        return {"kind": self.kind, "name": self.name, "path": None if path is None else str(path),
                "sha256": self.identity_sha256(atomic_numbers, positions_angstrom, topology),
                "metadata": self.metadata(atomic_numbers)}

    @property
    def path(self) -> Path | None:
        """The file behind the potential (exported models), else None."""
        return None

    def energies_and_forces(self, atomic_numbers, positions_angstrom) -> tuple[np.ndarray, np.ndarray]:
        """Energies (n,) in eV and forces (n, n_atoms, 3) in eV/Å of frames (n, n_atoms, 3) in Å.

        The default evaluates the System in an OpenMM Context (CPU platform, one thread) frame by frame.
        """
        import openmm
        from openmm import unit

        from ..core import units

        R = np.asarray(positions_angstrom, dtype=np.float64)
        key = tuple(np.asarray(atomic_numbers).reshape(-1).tolist())
        contexts = self.__dict__.setdefault("_evaluation_contexts", {})  # one Context per molecule, not per batch
        if key not in contexts:
            system = self.build_system(atomic_numbers, R[0])
            platform = openmm.Platform.getPlatformByName("CPU")
            contexts[key] = openmm.Context(system, openmm.VerletIntegrator(0.0005), platform, {"Threads": "1"})
        context = contexts[key]
        energies = np.empty(len(R))
        forces = np.empty_like(R)
        for k, frame in enumerate(R):
            context.setPositions(frame / units.NM_IN_ANGSTROM)
            state = context.getState(getEnergy=True, getForces=True)
            energies[k] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            forces[k] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return energies / units.EV_IN_KJ_PER_MOL, forces / (units.EV_IN_KJ_PER_MOL * units.NM_IN_ANGSTROM)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def json_sha256(document) -> str:
    """SHA-256 of a JSON document with sorted keys (identity of a potential given by its settings)."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()
