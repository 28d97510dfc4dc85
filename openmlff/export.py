"""TorchScript export of a trained Potential, speaking OpenMM's units, with its metadata inside.

Contract (docs/architecture.md "Exported model contract"): `forward(positions)` takes an (n_atoms, 3) tensor in nm of any float dtype
and returns the potential energy in kJ/mol as a scalar tensor; periodic models take
`forward(positions, box_vectors)` with OpenMM's box vectors (3, 3) in nm as rows (the same file
works without a box for an isolated molecule). `energies(positions)` does the same for a batch
(n_frames, n_atoms, 3) -> (n_frames,), for fast evaluation. The JSON document
`openmlff.json`, stored as a TorchScript extra file, says what the model is and what it was
trained on. The same file runs in TorchForce, in PythonForce and in plain torch.

This module is the writer; the readers (load_exported, read_model_metadata, check_model_atoms,
energies_and_forces, file_sha256, ModelFileError) live in openmlff.model_file and are re-exported here.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from . import elements, units
from .atomic_io import atomic_write
from .model_file import (  # the readers, re-exported for `from openmlff.export import load_exported`
    METADATA_NAME, REQUIRED_METADATA_KEYS, ModelFileError, check_model_atoms, energies_and_forces, file_sha256,
    load_exported, read_model_metadata,
)
from .models.potential import Potential
from .versions import runtime_versions

EXPORT_FORMAT = 1

__all__ = ["EXPORT_FORMAT", "ExportedPotential", "export_checkpoint", "export_potential", "METADATA_NAME",
           "REQUIRED_METADATA_KEYS", "ModelFileError", "check_model_atoms", "energies_and_forces", "file_sha256",
           "load_exported", "read_model_metadata"]


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
    from .training.checkpoint import read_checkpoint  # here only, so importing export loads no training code

    checkpoint = read_checkpoint(checkpoint_path)
    potential, ckpt = checkpoint.potential(weights), checkpoint.state
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
            "origin": ckpt.get("origin"),  # the parent of a fine-tuned or continued model (training.start)
            "metrics": {k: v for k, v in best.items() if k.startswith("val_")},
        },
        "element_energy_eV": {elements.symbol(z): float(ckpt["element_energy_ev"][z]) for z in sorted(set(ckpt["atomic_numbers"]))},
    }
    return export_potential(potential, ckpt["atomic_numbers"], out_path, metadata)
