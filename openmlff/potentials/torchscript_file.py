"""Another code's TorchScript file as a potential: openmm-torch's TorchForce contract, no openmlff metadata.

The contract (openmm-torch's README): `forward(positions)` takes the System's positions (n_atoms, 3) in nm and
returns the potential energy in kJ/mol, or a tuple (energy, forces in kJ/mol/nm) when the file computes its own
forces. The file names no atoms: they are the data's or the structure's, and one probe call on them (atoms on a
line 0.15 nm apart) checks that the module takes that many atoms and gives a finite energy, before anything is
written. In OpenMM the file is a TorchForce (outputsForces as the probe found) or a PythonForce; frames for the
metrics are evaluated by the module itself, forces by autograd unless it returns them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core import elements, units
from ..model_file.reader import ModelFileError, file_sha256
from ..core.threads import flush_denormals
from .base import Potential

CONTRACT = "openmm-torch TorchForce: forward(positions nm (n_atoms, 3)) -> energy kJ/mol [, forces kJ/mol/nm]"


class TorchScriptFile(Potential):
    """A TorchScript file of another code (kind "mlff"), see the module docstring."""

    kind = "mlff"
    warmup_evaluations = 2  # TorchScript's profiling executor, as for openmlff's own files

    def __init__(self, path, module: torch.jit.ScriptModule) -> None:
        self._path = Path(path).resolve()
        self.name = str(path)
        self._module = module
        self._module.eval()
        self._probed: dict[int, tuple[torch.dtype, bool]] = {}  # n_atoms -> (positions dtype, outputs forces)

    @property
    def path(self) -> Path:
        return self._path

    def check_atoms(self, atomic_numbers, where: str = "structure") -> None:
        self._probe(len(np.asarray(atomic_numbers).reshape(-1)), where)

    def _probe(self, n_atoms: int, where: str = "structure") -> tuple[torch.dtype, bool]:
        """(positions dtype the module takes, whether it returns forces): one call at float64, else float32."""
        if n_atoms in self._probed:
            return self._probed[n_atoms]
        failure = ""
        for dtype in (torch.float64, torch.float32):
            positions = torch.zeros((n_atoms, 3), dtype=dtype)
            positions[:, 0] = 0.15 * torch.arange(n_atoms, dtype=dtype)
            try:  # with gradients: a file that returns its own forces differentiates inside
                out = self._module(positions)
            except Exception as exc:  # noqa: BLE001 - any failure of the probe is the file's
                failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}" if str(exc).strip() else \
                    type(exc).__name__
                continue
            energy, forces = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)
            if not (isinstance(energy, torch.Tensor) and energy.numel() == 1 and torch.isfinite(energy).all()):
                raise ModelFileError(f"{self._path}: does not keep the TorchForce contract ({CONTRACT}): with the "
                                     f"{n_atoms} atoms of {where} it gave no finite scalar energy")
            if forces is not None and tuple(forces.shape) != (n_atoms, 3):
                raise ModelFileError(f"{self._path}: returns forces of shape {tuple(forces.shape)}, expected "
                                     f"({n_atoms}, 3) for the {n_atoms} atoms of {where}")
            self._probed[n_atoms] = (dtype, forces is not None)
            return self._probed[n_atoms]
        raise ModelFileError(f"{self._path}: a TorchScript file without openmlff metadata is taken under the TorchForce "
                             f"contract ({CONTRACT}), but a probe call with the {n_atoms} atoms of {where} failed "
                             f"({failure})")

    def metadata(self, atomic_numbers=None) -> dict:
        out = {"kind": self.kind, "source": "TorchScript file of another code", "contract": CONTRACT,
               "files": {str(self._path): file_sha256(self._path)}, "units": {"positions": "nm", "energy": "kJ/mol", "forces": "kJ/mol/nm"}}
        if atomic_numbers is not None:
            z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
            out.update(atomic_numbers=z.tolist(), symbols=elements.symbols(z),
                       outputs_forces=self._probe(len(z))[1])
        return out

    def identity_sha256(self, atomic_numbers=None, positions_angstrom=None, topology=None) -> str:
        return file_sha256(self._path)


    def build_system(self, atomic_numbers, positions_angstrom=None, backend: str = "torchforce",
                     torch_properties: dict | None = None, topology=None):
        import openmm

        from .exported import model_force

        z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        _, outputs_forces = self._probe(len(z))
        system = openmm.System()
        for mass in elements.masses(z):
            system.addParticle(float(mass))
        force = model_force(self._path, backend, torch_properties)
        if backend == "torchforce" and outputs_forces:
            force.setOutputsForces(True)
        system.addForce(force)
        return system

    def energies_and_forces(self, atomic_numbers, positions_angstrom) -> tuple[np.ndarray, np.ndarray]:
        """The module frame by frame (kJ/mol, kJ/mol/nm; forces by autograd unless returned) in eV and eV/Å."""
        flush_denormals()
        R = np.asarray(positions_angstrom, dtype=np.float64)
        dtype, outputs_forces = self._probe(R.shape[1])
        energies, forces = np.empty(len(R)), np.empty_like(R)
        for k, frame in enumerate(R):
            x = torch.tensor(frame / units.NM_IN_ANGSTROM, dtype=dtype, requires_grad=not outputs_forces)
            out = self._module(x)
            if outputs_forces:
                energies[k], forces[k] = float(out[0].detach()), out[1].detach().double().numpy()
            else:
                (grad,) = torch.autograd.grad(out, x)
                energies[k], forces[k] = float(out.detach()), -grad.double().numpy()
        return energies / units.EV_IN_KJ_PER_MOL, forces / (units.EV_IN_KJ_PER_MOL * units.NM_IN_ANGSTROM)
