"""The reading side of the exported-model contract (docs/architecture.md "Exported model contract").

An exported model is one TorchScript file whose extra file `openmlff.json` holds its metadata.
md/, metrics/, analysis/ and campaign/ read models only through this module, so reading a model
loads neither the model classes nor any training code; writer.py, the writer, imports the shared
names from here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..core import elements
from ..core.errors import InputError
from ..core.threads import flush_denormals

#: Name of the metadata document inside the TorchScript file (an extra file).
METADATA_NAME = "openmlff.json"


class ModelFileError(InputError):
    """An exported model file is unreadable, lacks its metadata, or does not fit the structure."""


#: Keys every exported model's metadata must have.
REQUIRED_METADATA_KEYS = ("atomic_numbers", "dtype", "architecture", "cutoff_angstrom")


def load_torchscript(path) -> tuple[torch.jit.ScriptModule, bytes | str]:
    """A TorchScript file's module and its raw openmlff.json ('' when the file has none: another code's model).
    ModelFileError naming the file if it is missing or not TorchScript."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    extra = {METADATA_NAME: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError for non-TorchScript files
        raise ModelFileError(f"{path}: not a TorchScript model file ({str(exc).splitlines()[0]})") from None
    return module, extra[METADATA_NAME]


def load_exported(path) -> tuple[torch.jit.ScriptModule, dict]:
    """The TorchScript module and its openmlff.json metadata.

    ModelFileError naming the file if it cannot be loaded, has no metadata, or lacks one of
    REQUIRED_METADATA_KEYS.
    """
    path = Path(path)
    module, metadata = load_model_file(path)
    if metadata is None:
        raise ModelFileError(f"{path}: the model file has no '{METADATA_NAME}' metadata (TorchScript extra file)")
    return module, metadata


def load_model_file(path) -> tuple[torch.jit.ScriptModule, dict | None]:
    """Any TorchScript model file, read once: its module, and openmlff's metadata checked as load_exported does, or
    None for another code's file (no openmlff.json). ModelFileError naming the file otherwise."""
    path = Path(path)
    module, raw = load_torchscript(path)
    if not raw:
        return module, None
    try:
        metadata = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"{path}: '{METADATA_NAME}' is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: '{METADATA_NAME}' is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: '{METADATA_NAME}' is not a JSON object")
    missing = [k for k in REQUIRED_METADATA_KEYS if k not in metadata]
    if missing:
        raise ModelFileError(f"{path}: '{METADATA_NAME}' lacks the keys {missing}; required: {list(REQUIRED_METADATA_KEYS)}")
    if not hasattr(module, "energies"):
        raise ModelFileError(f"{path}: has openmlff's metadata but its module has no batched `energies` method "
                             "(docs/architecture.md \"Exported model contract\"); export the model with openmlff")
    return module, metadata


def check_contract(path, module: torch.jit.ScriptModule, metadata: dict) -> None:
    """ModelFileError naming the file unless one probe call keeps the contract: `energies` of one frame (its atoms
    on a line 0.15 nm apart) gives one energy and `forward` a scalar, both finite. A file whose metadata says
    openmlff but whose module is something else is refused here, before any run directory is written."""
    n_atoms = len(metadata["atomic_numbers"])
    positions = torch.zeros((1, n_atoms, 3), dtype=torch.float64)
    positions[0, :, 0] = 0.15 * torch.arange(n_atoms, dtype=torch.float64)
    try:
        with torch.no_grad():
            energies, energy = module.energies(positions), module(positions[0])
    except Exception as exc:  # noqa: BLE001 - any failure of the probe is the file's, reported as such
        raise ModelFileError(f"{path}: does not keep the exported model contract: a probe call with {n_atoms} atoms "
                             f"failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})") from None
    if not (isinstance(energies, torch.Tensor) and tuple(energies.shape) == (1,) and isinstance(energy, torch.Tensor)
            and energy.numel() == 1):
        raise ModelFileError(f"{path}: does not keep the exported model contract: `energies` of one frame must give "
                             "shape (1,) and `forward` a scalar energy in kJ/mol")
    if not (torch.isfinite(energies).all() and torch.isfinite(energy).all()):
        raise ModelFileError(f"{path}: does not keep the exported model contract: a probe call gave a non-finite energy")


def read_model_metadata(path) -> dict:
    """The openmlff.json metadata of an exported model file (see load_exported for the errors)."""
    return load_exported(path)[1]


def check_model_atoms(model_path, metadata: dict, atomic_numbers, structure_name: str = "structure") -> None:
    """ModelFileError naming the model file unless its metadata's atomic numbers equal the structure's."""
    model_zs = [int(z) for z in metadata["atomic_numbers"]]
    zs = [int(z) for z in np.asarray(atomic_numbers).reshape(-1)]
    if model_zs == zs:
        return
    if len(model_zs) != len(zs):
        detail = f"the model has {len(model_zs)} atoms, {structure_name} {len(zs)}"
    else:
        i = next(k for k, (a, b) in enumerate(zip(model_zs, zs)) if a != b)
        detail = f"first difference at atom {i}: model Z={model_zs[i]}, {structure_name} Z={zs[i]}"
    raise ModelFileError(
        f"{model_path}: the model's atomic numbers (metadata 'atomic_numbers') do not match the {structure_name}: {detail}; "
        f"model {elements.symbols(model_zs) if model_zs else []}, {structure_name} {elements.symbols(zs) if zs else []}")


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes: the fingerprint of an exported model."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def energies_and_forces(module: torch.jit.ScriptModule, positions_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies (n_frames,) in kJ/mol and forces (n_frames, n_atoms, 3) in kJ/mol/nm of an exported model
    (denormals flushed to zero: threads.flush_denormals)."""
    flush_denormals()
    pos = torch.as_tensor(np.asarray(positions_nm), dtype=torch.float64)
    if pos.ndim == 2:
        pos = pos[None]
    pos.requires_grad_(True)
    energy = module.energies(pos)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    return energy.detach().numpy(), (-grad).detach().numpy()
