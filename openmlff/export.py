"""TorchScript export of a trained Potential, speaking OpenMM's units, with its metadata inside.

Contract (DESIGN.md): `forward(positions)` takes an (n_atoms, 3) tensor in nm of any float dtype
and returns the potential energy in kJ/mol as a scalar tensor; periodic models take
`forward(positions, box_vectors)` with OpenMM's box vectors (3, 3) in nm as rows (the same file
works without a box for an isolated molecule). `energies(positions)` does the same for a batch
(n_frames, n_atoms, 3) -> (n_frames,), for fast evaluation. The JSON document
`openmlff.json`, stored as a TorchScript extra file, says what the model is and what it was
trained on. The same file runs in TorchForce, in PythonForce and in plain torch.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from . import __version__, elements, units
from .atomic_io import atomic_write
from .errors import InputError
from .versions import runtime_versions
from .models.potential import Potential

METADATA_NAME = "openmlff.json"
EXPORT_FORMAT = 1


class ExportedPotential(nn.Module):
    """A Potential for one molecule: positions in nm -> energy in kJ/mol (float64 scalar)."""

    def __init__(self, potential: Potential, atomic_numbers):
        super().__init__()
        self.potential = potential
        dtype = next(potential.parameters()).dtype
        self.register_buffer("atomic_numbers", torch.as_tensor(np.asarray(atomic_numbers), dtype=torch.long))
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype))
        self.n_atoms = int(len(atomic_numbers))
        self.nm_to_angstrom = units.NM_IN_ANGSTROM
        self.ev_to_kj_per_mol = units.EV_IN_KJ_PER_MOL

    def forward(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        pos = positions.to(self.dtype_probe.dtype) * self.nm_to_angstrom
        batch = torch.zeros(self.n_atoms, dtype=torch.long, device=pos.device)
        return self.potential(self.atomic_numbers, pos, batch, 1, self._box_angstrom(box_vectors))[0] * self.ev_to_kj_per_mol

    @torch.jit.export
    def energies(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        """Energies (n_frames,) in kJ/mol of a batch of positions (n_frames, n_atoms, 3) in nm (one box for all)."""
        n_frames = positions.size(0)
        pos = positions.to(self.dtype_probe.dtype).reshape(-1, 3) * self.nm_to_angstrom
        z = self.atomic_numbers.repeat(n_frames)
        batch = torch.arange(n_frames, device=pos.device).repeat_interleave(self.n_atoms)
        return self.potential(z, pos, batch, n_frames, self._box_angstrom(box_vectors)) * self.ev_to_kj_per_mol

    def _box_angstrom(self, box_vectors: Optional[Tensor]) -> Optional[Tensor]:
        if box_vectors is None:
            return None
        return box_vectors.to(self.dtype_probe.dtype) * self.nm_to_angstrom


def export_potential(potential: Potential, atomic_numbers, path, metadata: dict | None = None,
                     periodic: bool = False) -> Path:
    """Script `potential` for one molecule (or a periodic system when `periodic`) and save it with its metadata."""
    path = Path(path)
    module = torch.jit.script(ExportedPotential(potential.eval(), atomic_numbers))
    dtype = str(next(potential.parameters()).dtype).replace("torch.", "")
    meta = {
        "format": EXPORT_FORMAT,
        "atomic_numbers": [int(z) for z in atomic_numbers],
        "symbols": elements.symbols(atomic_numbers),
        "architecture": potential.architecture,
        "hyperparameters": potential.hyperparameters,
        "cutoff_angstrom": potential.cutoff_angstrom,
        "dtype": dtype,
        "parameters": potential.count_parameters(),
        "periodic": bool(periodic),
        "units": {"positions": "nm", "energy": "kJ/mol", "forces": "kJ/mol/nm"},
        "versions": runtime_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(metadata or {})
    extra = {METADATA_NAME: json.dumps(meta, indent=2, default=str)}
    atomic_write(path, lambda tmp: torch.jit.save(module, tmp, _extra_files=extra))
    return path


def export_checkpoint(checkpoint_path, out_path, weights: str = "best") -> Path:
    """Export the model of a training checkpoint, with the training data's fingerprint and metrics in its metadata."""
    from .training.trainer import load_checkpoint  # training sits above export in the flow

    potential, ckpt = load_checkpoint(checkpoint_path, weights=weights)
    best = next((h for h in ckpt["history"] if h["epoch"] == ckpt["best_epoch"]), {})
    split = ckpt["split"]
    metadata = {
        "training": {
            "checkpoint": str(Path(checkpoint_path).resolve()),
            "weights": weights,
            "data_fingerprint_sha256": ckpt["data_fingerprint"],
            "data_provenance": ckpt["data_provenance"],
            "data_units": ckpt["units"],
            "split": {k: split[k] for k in ("seed",)} | {f"n_{k}": len(split[k]) for k in ("train", "val", "test")},
            "epochs": ckpt["epoch"], "steps": ckpt["step"], "elapsed_s": round(ckpt["elapsed_s"], 1),
            "best_epoch": ckpt["best_epoch"], "stop_reason": ckpt["stop_reason"],
            "config": ckpt["config"],
            "metrics": {k: v for k, v in best.items() if k.startswith("val_")},
        },
        "element_energy_eV": {elements.symbol(z): float(ckpt["element_energy_ev"][z]) for z in sorted(set(ckpt["atomic_numbers"]))},
    }
    return export_potential(potential, ckpt["atomic_numbers"], out_path, metadata)


class ModelFileError(InputError):
    """An exported model file is unreadable, lacks its metadata, or does not fit the structure."""


#: Keys every exported model's metadata must have.
REQUIRED_METADATA_KEYS = ("atomic_numbers", "dtype", "architecture", "cutoff_angstrom")


def load_exported(path) -> tuple[torch.jit.ScriptModule, dict]:
    """The TorchScript module and its openmlff.json metadata.

    ModelFileError naming the file if it cannot be loaded, has no metadata, or lacks one of
    REQUIRED_METADATA_KEYS.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    extra = {METADATA_NAME: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError for non-TorchScript files
        raise ModelFileError(f"{path}: not a TorchScript model file ({str(exc).splitlines()[0]})") from None
    raw = extra[METADATA_NAME]
    if not raw:
        raise ModelFileError(f"{path}: the model file has no '{METADATA_NAME}' metadata (TorchScript extra file)")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: '{METADATA_NAME}' is not valid JSON ({exc})") from None
    missing = [k for k in REQUIRED_METADATA_KEYS if k not in metadata]
    if missing:
        raise ModelFileError(f"{path}: '{METADATA_NAME}' lacks the keys {missing}; required: {list(REQUIRED_METADATA_KEYS)}")
    return module, metadata


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
    """Energies (n_frames,) in kJ/mol and forces (n_frames, n_atoms, 3) in kJ/mol/nm of an exported model."""
    pos = torch.as_tensor(np.asarray(positions_nm), dtype=torch.float64)
    if pos.ndim == 2:
        pos = pos[None]
    pos.requires_grad_(True)
    energy = module.energies(pos)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    return energy.detach().numpy(), (-grad).detach().numpy()
