"""An exported TorchScript model as a potential, and the OpenMM System it drives.

The model file follows the export contract (docs/architecture.md "Exported model contract"): `forward(positions)` takes (n_atoms, 3)
positions in nm of any float dtype and returns the potential energy in kJ/mol; a JSON document
`openmlff.json` inside the file (a TorchScript extra file) describes it. The model enters OpenMM
through openmmtorch.TorchForce (C++, fast) or openmm.PythonForce (Python callback, for
comparisons and models TorchForce cannot run); both give the same energies and forces.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
import openmm
import torch

from ..core import elements, units
from ..core.atomic_io import atomic_torchscript_save
from ..core.errors import InputError
from ..model_file.reader import (
    METADATA_NAME as MODEL_METADATA_FILE, ModelFileError, check_contract, check_model_atoms, energies_and_forces, file_sha256, load_exported, read_model_metadata,
)
from .base import Potential
from .computation import TorchModelComputation
from .model_ref import BACKENDS

__all__ = ["BACKENDS", "MODEL_METADATA_FILE", "ExportedModel", "ModelFileError", "TorchModelComputation",
           "build_replica_system", "build_system", "model_force", "write_replica_module", "check_model_atoms", "file_sha256", "read_model_metadata", "torchforce_properties"]


def torchforce_properties(cuda_graphs: bool = False, cuda_graph_warmup_steps: int = 10) -> dict[str, str]:
    """TorchForce properties (openmm-torch 1.10, TorchForce.setProperty): 'useCUDAGraphs' ('true'/'false') and
    'CUDAGraphWarmupSteps' (model calls before the graph is captured). They act on the CUDA platform only;
    elsewhere TorchForce keeps them but runs the model as usual."""
    if int(cuda_graph_warmup_steps) < 1:
        raise InputError(f"cuda_graph_warmup_steps must be a positive integer, got {cuda_graph_warmup_steps}")
    return {"useCUDAGraphs": "true" if cuda_graphs else "false", "CUDAGraphWarmupSteps": str(int(cuda_graph_warmup_steps))}


def build_system(atomic_numbers, model_path, backend: str = "torchforce",
                 torch_properties: dict[str, str] | None = None) -> openmm.System:
    """A non-periodic System: one particle per atom (masses from openmlff.core.elements, dalton) and the model as its only force.

    backend: 'torchforce' (openmmtorch.TorchForce, outputsForces False) or 'pythonforce'
    (openmm.PythonForce with forces from torch.autograd). torch_properties: TorchForce properties
    (see torchforce_properties), set with TorchForce.setProperty; 'torchforce' backend only.
    ModelFileError naming the model file if its metadata's atomic numbers differ from `atomic_numbers`.
    """
    _check_backend(backend, torch_properties)
    model_path = Path(model_path)
    zs = np.asarray(atomic_numbers, dtype=np.int64)
    metadata = read_model_metadata(model_path)
    check_model_atoms(model_path, metadata, zs)

    return _system(zs, model_path, backend, torch_properties)


def _check_backend(backend: str, torch_properties: dict[str, str] | None) -> None:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    if torch_properties and backend != "torchforce":
        raise InputError(f"TorchForce properties {sorted(torch_properties)} need the 'torchforce' backend, not {backend!r}")


def _system(zs: np.ndarray, model_path: Path, backend: str, torch_properties: dict[str, str] | None,
            replicas: bool = False) -> openmm.System:
    """One particle per atom (openmlff masses) and the TorchScript file as the System's only force."""
    system = openmm.System()
    for mass in elements.masses(zs):
        system.addParticle(float(mass))
    system.addForce(model_force(model_path, backend, torch_properties, replicas=replicas))
    return system


def model_force(model_path, backend: str = "torchforce", torch_properties: dict[str, str] | None = None, atoms=None,
                periodic: bool = False, replicas: bool = False) -> openmm.Force:
    """The model file as an OpenMM Force (TorchForce, or PythonForce of TorchScript or of the compiled model; the
    file is not checked here).

    atoms: the System's particles that are the model's atoms, in the model's order (None: particle i is atom i);
    periodic: the force uses periodic boundary conditions and the model gets OpenMM's box. With `atoms`, TorchForce
    runs a TorchScript module that selects those particles and calls the model (openmm-ml's mixed systems).
    replicas: for the compiled backend, the file is the molecule's model and the System holds N copies of it.
    """
    _check_backend(backend, torch_properties)
    if backend == "torchforce":
        from ..core._compat import import_openmmtorch

        openmmtorch = import_openmmtorch()
        if atoms is None:
            force = openmmtorch.TorchForce(str(model_path))
        else:
            model, _ = load_exported(model_path)
            force = openmmtorch.TorchForce(torch.jit.script(_Placed(model, [int(a) for a in atoms])))
        force.setOutputsForces(False)
        for name, value in (torch_properties or {}).items():
            force.setProperty(str(name), str(value))
    elif backend == "compiled":
        from .compiled import CompiledModelComputation

        force = openmm.PythonForce(CompiledModelComputation(model_path, atoms, periodic, replicas))
    else:
        force = openmm.PythonForce(TorchModelComputation(model_path, atoms, periodic))
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setName(f"openmlff model ({backend})")
    return force


class _Placed(torch.nn.Module):
    """The model on some of a System's particles: forward(positions (n_particles, 3) nm, box) = model(positions[atoms],
    box)."""

    def __init__(self, model, atoms: list[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("atoms", torch.tensor(atoms, dtype=torch.long))

    def forward(self, positions: torch.Tensor, box_vectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.model(positions.index_select(0, self.atoms), box_vectors)


def write_replica_module(model_path, n_atoms: int, out_path) -> Path:
    """Write a TorchScript module for replicas: N non-interacting copies of the molecule in one System.

    `forward(positions)` takes (N * n_atoms, 3) positions in nm (copy k is atoms k*n_atoms .. (k+1)*n_atoms - 1;
    N is read off the positions, so one file serves any number of copies) and returns the sum of the copies'
    energies in kJ/mol from one batched call of the model's `energies`: each copy is a frame of its own, so its
    neighbour pairs never reach another copy. `energies(positions)` returns the copies' energies (N,).
    Written atomically; ModelFileError naming the model file if it has no batched `energies` method.
    """
    model, _ = load_exported(model_path)
    if not hasattr(model, "energies"):
        raise ModelFileError(f"{model_path}: has no batched `energies` method (docs/architecture.md \"Exported model "
                             "contract\"); replicas need an openmlff export")
    module = torch.jit.script(_Replicas(model, int(n_atoms)))
    return atomic_torchscript_save(out_path, module)


class _Replicas(torch.nn.Module):
    """write_replica_module's module: the copies of a molecule as the frames of one batched `energies` call."""

    def __init__(self, model, n_atoms: int) -> None:
        super().__init__()
        self.model = model
        self.n_atoms = n_atoms

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.model.energies(positions.reshape(-1, self.n_atoms, 3)).sum()

    @torch.jit.export
    def energies(self, positions: torch.Tensor) -> torch.Tensor:
        return self.model.energies(positions.reshape(-1, self.n_atoms, 3))


def build_replica_system(atomic_numbers, replica_module_path, n_replicas: int, backend: str = "torchforce",
                         torch_properties: dict[str, str] | None = None, model_path=None) -> openmm.System:
    """A non-periodic System of `n_replicas` copies of the molecule (write_replica_module's file as its one force;
    the compiled backend compiles the molecule's `model_path` instead): particle k * n_atoms + i is atom i of copy k."""
    zs = np.tile(np.asarray(atomic_numbers, dtype=np.int64), int(n_replicas))
    if backend == "compiled":
        return _system(zs, Path(model_path), backend, torch_properties, replicas=True)
    return _system(zs, replica_module_path, backend, torch_properties)


class ExportedModel(Potential):
    """An exported model file (docs/architecture.md "Exported model contract") as a potential, kind "mlff"."""

    kind = "mlff"
    #: TorchScript's profiling executor runs a model's first two calls through other graphs.
    warmup_evaluations = 2

    def __init__(self, model_path, loaded: tuple | None = None) -> None:
        """loaded: (module, metadata) when the caller has read the file already (model_file.load_model_file)."""
        self._path = Path(model_path).resolve()
        self.name = str(model_path)
        self._module, self._metadata = loaded or load_exported(self._path)  # ModelFileError naming the file
        check_contract(self._path, self._module, self._metadata)

    @property
    def path(self) -> Path:
        return self._path

    def check_atoms(self, atomic_numbers, where: str = "structure") -> None:
        check_model_atoms(self._path, self._metadata, atomic_numbers, structure_name=where)

    def metadata(self, atomic_numbers=None) -> dict:
        return self._metadata

    def identity_sha256(self, atomic_numbers=None, positions_angstrom=None, topology=None) -> str:
        return file_sha256(self._path)

    def build_system(self, atomic_numbers, positions_angstrom=None, backend: str = "torchforce",
                     torch_properties: dict | None = None, topology=None) -> openmm.System:
        return build_system(atomic_numbers, self._path, backend=backend, torch_properties=torch_properties)

    def energies_and_forces(self, atomic_numbers, positions_angstrom) -> tuple[np.ndarray, np.ndarray]:
        """One batched call of the TorchScript module (kJ/mol, kJ/mol/nm) converted to eV and eV/Å."""
        e_kj, f_kj = energies_and_forces(self._batched(), np.asarray(positions_angstrom) / units.NM_IN_ANGSTROM)
        return e_kj / units.EV_IN_KJ_PER_MOL, f_kj / (units.EV_IN_KJ_PER_MOL * units.NM_IN_ANGSTROM)

    def _batched(self):
        """What evaluates batches of frames: an object with `energies(positions (n_frames, n_atoms, 3) nm)`."""
        return self._module


class CompiledModel(ExportedModel):
    """An exported model file evaluated in batches by its form compiled by Inductor (potentials/compiled.py), for
    `metrics --backend compiled`; MD, the System and everything else as ExportedModel."""

    def _batched(self):
        from .compiled import compiled_model

        return SimpleNamespace(energies=compiled_model(self._path, "frames"))
