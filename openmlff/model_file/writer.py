"""TorchScript export of a trained EnergyModel, speaking OpenMM's units, with its metadata inside.

Contract (docs/architecture.md "Exported model contract"): `forward(positions)` takes an (n_atoms, 3) tensor in nm of any float dtype
and returns the potential energy in kJ/mol as a scalar tensor; periodic models take
`forward(positions, box_vectors)` with OpenMM's box vectors (3, 3) in nm as rows (the same file
works without a box for an isolated molecule). `energies(positions)` does the same for a batch
(n_frames, n_atoms, 3) -> (n_frames,), for fast evaluation. The JSON document
`openmlff.json`, stored as a TorchScript extra file, says what the model is and what it was
trained on. The same file runs in TorchForce, in PythonForce and in plain torch.

This module is the writer; the readers (load_exported, read_model_metadata, check_model_atoms,
energies_and_forces, file_sha256, ModelFileError) live in openmlff.model_file.reader and are re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..core import elements
from ..core.atomic_io import atomic_torchscript_save
from ..data.splits import make_split
from .reader import (
    METADATA_NAME, REQUIRED_METADATA_KEYS, ModelFileError, check_model_atoms, energies_and_forces, file_sha256, load_exported, read_model_metadata,
)
from ..models.energy_model import EnergyModel, ExportedPotential
from ..core.versions import runtime_versions, utc_now

EXPORT_FORMAT = 1

__all__ = ["EXPORT_FORMAT", "CommitteePotential", "ExportedPotential", "export_checkpoint", "export_committee", "export_model", "METADATA_NAME",
           "REQUIRED_METADATA_KEYS", "ModelFileError", "check_model_atoms", "energies_and_forces", "file_sha256",
           "load_exported", "read_model_metadata"]


class CommitteePotential(nn.Module):
    """K ExportedPotentials of one molecule: the committee mean as the model, and the members' force spread.

    forward / energies: the mean of the members' energies (kJ/mol), so MD on the file runs on the mean
    force. `uncertainty(positions)`: per atom (n_atoms,), the spread of the members' forces
    sigma_i = sqrt(mean_k |F_ik - mean_k F_ik|^2) in kJ/mol/nm; `frame_uncertainties` the same for a batch
    (n_frames, n_atoms); `member_energies` (K, n_frames).
    """

    def __init__(self, members: list[ExportedPotential]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.n_members = len(members)
        self.register_buffer("atomic_numbers", members[0].atomic_numbers.clone())

    def forward(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        total = torch.zeros((), dtype=torch.float64, device=positions.device)
        for member in self.members:
            total = total + member(positions, box_vectors).to(torch.float64)
        return total / self.n_members

    @torch.jit.export
    def energies(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        return self.member_energies(positions, box_vectors).mean(0)

    @torch.jit.export
    def member_energies(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        """(K, n_frames) energies in kJ/mol of each member for positions (n_frames, n_atoms, 3) in nm."""
        out = [member.energies(positions, box_vectors).to(torch.float64) for member in self.members]
        return torch.stack(out)

    @torch.jit.export
    def frame_uncertainties(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        """(n_frames, n_atoms) spread of the members' forces in kJ/mol/nm (positions (n_frames, n_atoms, 3), nm)."""
        pos = positions.detach().to(torch.float64).requires_grad_(True)
        forces = []
        for member in self.members:
            energy = member.energies(pos, box_vectors).sum()
            grad = torch.autograd.grad([energy], [pos])[0]
            assert grad is not None
            forces.append(-grad)
        stacked = torch.stack(forces)  # (K, n_frames, n_atoms, 3)
        deviation = stacked - stacked.mean(0, keepdim=True)
        return (deviation * deviation).sum(-1).mean(0).sqrt().detach()

    @torch.jit.export
    def uncertainty(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        """(n_atoms,) spread of the members' forces in kJ/mol/nm at one conformation (n_atoms, 3) in nm."""
        return self.frame_uncertainties(positions.unsqueeze(0), box_vectors)[0]


def export_model(potential: EnergyModel, atomic_numbers, path, metadata: dict | None = None,
                     periodic: bool = False) -> Path:
    """Script `potential` for one molecule (or a periodic system when `periodic`) and save it with its metadata."""
    path = Path(path)
    module = torch.jit.script(ExportedPotential(potential.eval(), atomic_numbers))
    return _save_module(module, potential, atomic_numbers, path, metadata, periodic)


def _save_module(module, potential: EnergyModel, atomic_numbers, path: Path, metadata: dict | None,
                 periodic: bool) -> Path:
    """Write a scripted module with the metadata of `potential` (a representative member) and `metadata`."""
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
        "created": utc_now(),
    }
    meta.update(metadata or {})
    extra = {METADATA_NAME: json.dumps(meta, indent=2, default=str)}
    atomic_torchscript_save(path, module, extra)
    return path


def export_checkpoint(checkpoint_path, out_path, weights: str = "best") -> Path:
    """Export the model of a training checkpoint, with the training data's fingerprint and metrics in its metadata."""
    from ..training.checkpoint import read_checkpoint  # here only, so importing export loads no training code

    checkpoint = read_checkpoint(checkpoint_path)
    potential = checkpoint.potential(weights)
    metadata = _training_metadata(checkpoint_path, checkpoint.state, weights)
    return export_model(potential, checkpoint.state["atomic_numbers"], out_path, metadata)


def export_committee(checkpoint_paths, out_path, weights: str = "best") -> Path:
    """One TorchScript file of the committee of several checkpoints (CommitteePotential): the mean drives MD,
    `uncertainty(positions)` gives the members' force spread. The members must be of one molecule and
    one training split; the metadata's `training` is the first member's, `committee` lists them all."""
    from ..training.checkpoint import read_checkpoint

    paths = [Path(p) for p in checkpoint_paths]
    if len(paths) < 2:
        raise ModelFileError(f"a committee needs at least 2 checkpoints, got {len(paths)}")
    checkpoints = [read_checkpoint(p) for p in paths]
    first = checkpoints[0]
    for c in checkpoints[1:]:
        if c.state["atomic_numbers"] != first.state["atomic_numbers"]:
            raise ModelFileError(f"{c.path}: a model of other atoms than {first.path}; a committee is of one molecule")
        if c.state["split"] != first.state["split"] or c.data_fingerprint != first.data_fingerprint:
            raise ModelFileError(f"{c.path}: trained on other data or another split than {first.path}; committee "
                                 "members must share both (openmlff train --ensemble K)")
    potentials = [c.potential(weights) for c in checkpoints]
    z = first.state["atomic_numbers"]
    module = torch.jit.script(CommitteePotential([ExportedPotential(p.eval(), z) for p in potentials]))
    metadata = _training_metadata(paths[0], first.state, weights)
    metadata["committee"] = {
        "members": len(paths), "checkpoints": [str(p.resolve()) for p in paths],
        "architectures": [c.architecture for c in checkpoints], "seeds": [c.config["seed"] for c in checkpoints],
        "model": "forward/energies: the mean of the members' energies (MD runs on the mean force)",
        "uncertainty": "uncertainty(positions (n_atoms, 3) nm) -> (n_atoms,): sigma_i = sqrt(mean_k |F_ik - "
                       "mean_k F_ik|^2) in kJ/mol/nm; frame_uncertainties for a batch; member_energies (K, n_frames)",
    }
    metadata["parameters_total"] = int(sum(p.count_parameters() for p in potentials))
    return _save_module(module, potentials[0], z, Path(out_path), metadata, periodic=False)


def _training_metadata(checkpoint_path, ckpt: dict, weights: str) -> dict:
    """The `training` block (and per-element energies) of an exported model's metadata."""
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
    if not _recomputable(split):  # a kept split (train --split) or a parent's: name its frames
        metadata["training"]["split_indices"] = {k: list(split[k]) for k in ("train", "val", "test")}
        metadata["training"]["split_file"] = ckpt["config"].get("split") or str(Path(checkpoint_path).resolve())
    return metadata


def _recomputable(split: dict) -> bool:
    """Whether make_split gives this split again from its seed and sizes (what a reader falls back on)."""
    if split.get("n_frames") is None:
        return False
    again = make_split(split["n_frames"], len(split["train"]), len(split["val"]), len(split["test"]), seed=split["seed"])
    return all(np.array_equal(np.sort(split[k]), getattr(again, k)) for k in ("train", "val", "test"))


def train_committee_model(dataset, out_dir, members: int, config=None, progress: bool = True,
                          workers: int = 1) -> tuple[list, Path]:
    """Train a committee of `members` models (training.train_committee: out_dir/member_<k>, one split) and export
    it as out_dir/committee.pt (`train --ensemble K`); the members' TrainingResults and the file. Resumes."""
    from ..training.trainer import train_committee

    results = train_committee(dataset, out_dir, members, config, progress=progress, workers=workers)
    return results, export_committee([r.checkpoint for r in results], Path(out_dir) / "committee.pt")

