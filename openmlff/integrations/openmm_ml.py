"""openmm-ml plugin: `MLPotential("openmlff", modelPath="model.pt")` for createSystem and createMixedSystem.

openmm-ml finds it through its entry point group "openmmml.potentials" (pyproject.toml; `pip install -e
".[openmm-ml]"`), so an OpenMM script needs no openmlff import:

    from openmmml import MLPotential
    potential = MLPotential("openmlff", modelPath="model.pt")
    system = potential.createSystem(topology)                             # the whole topology is the molecule
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)   # the model on ml_atoms, MM on the rest

The ML atoms' elements must be the model's atoms in the model's order: the check of `openmlff simulate`, with
ModelFileError naming the model file and the first differing atom. Options of createSystem/createMixedSystem:
backend="torchforce" (default), "pythonforce" or "compiled" (potentials/compiled.py), torchProperties={...}
(openmlff.md.torchforce_properties). A periodic topology hands the model OpenMM's box (its neighbour list takes
minimum images); the model's energy is local, within its cutoff (getMLLongRange False).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from ..core.errors import InputError
from ..model_file.reader import check_model_atoms, read_model_metadata
from ..potentials.exported import model_force


class OpenMLFFPotentialImplFactory(MLPotentialImplFactory):
    """Creates the openmlff potential for openmm-ml (entry point `openmlff`)."""

    def createImpl(self, name: str, modelPath=None, **args) -> "OpenMLFFPotentialImpl":
        if modelPath is None:
            raise InputError(f"MLPotential({name!r}) needs modelPath=<an exported openmlff model, .pt>")
        return OpenMLFFPotentialImpl(modelPath)


class OpenMLFFPotentialImpl(MLPotentialImpl):
    """An exported openmlff model on a topology's atoms (all, or openmm-ml's ML subset)."""

    def __init__(self, model_path) -> None:
        self.model_path = Path(model_path).expanduser().resolve()
        self.metadata = read_model_metadata(self.model_path)  # ModelFileError naming the file, at once

    def addForces(self, topology: openmm.app.Topology, system: openmm.System, atoms, forceGroup: int,
                  backend: str = "torchforce", torchProperties: dict | None = None, **args) -> None:
        if args:
            raise InputError(f"MLPotential('openmlff'): unknown option(s) {sorted(args)}; the options are backend and "
                             "torchProperties")
        every = list(topology.atoms())
        indices = list(range(len(every))) if atoms is None else [int(a) for a in atoms]
        missing = [i for i in indices if every[i].element is None]
        if missing:
            raise InputError(f"topology atom {missing[0]} ({every[missing[0]].name}) has no element; the model "
                             f"{self.model_path} needs one for every ML atom")
        zs = np.array([every[i].element.atomic_number for i in indices], dtype=np.int64)
        check_model_atoms(self.model_path, self.metadata, zs)
        periodic = topology.getPeriodicBoxVectors() is not None
        whole = atoms is None or indices == list(range(system.getNumParticles()))
        force = model_force(self.model_path, backend, torchProperties, atoms=None if whole else indices,
                            periodic=periodic)
        force.setForceGroup(int(forceGroup))
        system.addForce(force)

    def getMLLongRange(self) -> bool:
        return False
