"""The Dataset: atomic numbers, positions, energies and forces of many conformations of one molecule.

Internal units are Å and eV (forces eV/Å), float64. Provenance records where the numbers came
from (source file, original units, level of theory) so that a model trained on them can say so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import elements
from ..core.errors import InputError


class DatasetError(InputError):
    """A dataset file or array is malformed; the message names the file, the field and the problem."""


@dataclass
class Dataset:
    """Conformations of one molecule with optional labels, in Å and eV.

    z: (n_atoms,) atomic numbers; R: (n_frames, n_atoms, 3) positions in Å;
    E: (n_frames,) energies in eV or None; F: (n_frames, n_atoms, 3) forces in eV/Å or None.
    """

    z: np.ndarray
    R: np.ndarray
    E: np.ndarray | None = None
    F: np.ndarray | None = None
    name: str = "dataset"
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.z = np.asarray(self.z, dtype=np.int64)
        self.R = np.asarray(self.R, dtype=np.float64)
        if self.R.ndim == 2:
            self.R = self.R[None]
        if self.E is not None:
            self.E = np.asarray(self.E, dtype=np.float64).reshape(-1)
        if self.F is not None:
            self.F = np.asarray(self.F, dtype=np.float64)

    @property
    def n_frames(self) -> int:
        return int(self.R.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.z.shape[0])

    @property
    def has_labels(self) -> bool:
        return self.E is not None and self.F is not None

    @property
    def source(self) -> str:
        return str(self.provenance.get("source_file", self.name))

    def validate(self, source: str | None = None) -> "Dataset":
        """Check shapes, finiteness and atomic numbers; DatasetError names the file and field."""
        where = source or self.source
        n = self.n_atoms
        if self.z.ndim != 1 or n == 0:
            raise DatasetError(f"{where}: field 'z' (atomic numbers) must be a non-empty 1-D array, got shape {self.z.shape}")
        try:
            elements.check_atomic_numbers(self.z)
        except ValueError as exc:
            raise DatasetError(f"{where}: field 'z' (atomic numbers): {exc}") from None
        if self.R.ndim != 3 or self.R.shape[1:] != (n, 3):
            raise DatasetError(
                f"{where}: field 'R' (positions) has shape {self.R.shape}, expected (n_frames, {n}, 3) "
                f"to match the {n} atomic numbers in 'z'")
        if self.n_frames == 0:
            raise DatasetError(f"{where}: field 'R' (positions) holds no frames")
        _check_finite(self.R, "R (positions)", where)
        if self.E is not None:
            if self.E.shape != (self.n_frames,):
                raise DatasetError(f"{where}: field 'E' (energies) has {self.E.size} values, expected one per frame ({self.n_frames})")
            _check_finite(self.E, "E (energies)", where)
        if self.F is not None:
            if self.F.shape != self.R.shape:
                raise DatasetError(f"{where}: field 'F' (forces) has shape {self.F.shape}, expected {self.R.shape} like 'R'")
            _check_finite(self.F, "F (forces)", where)
        return self

    def subset(self, indices) -> "Dataset":
        """A new Dataset with the frames at `indices` (provenance keeps the parent's and the indices)."""
        idx = np.asarray(indices, dtype=np.int64)
        prov = dict(self.provenance)
        prov["frames_from_parent"] = len(idx)
        return Dataset(
            z=self.z.copy(), R=self.R[idx], E=None if self.E is None else self.E[idx],
            F=None if self.F is None else self.F[idx], name=self.name, provenance=prov)

    def fingerprint(self) -> str:
        """SHA-256 over z, R, E, F (float64 bytes): identifies the exact numbers a model saw."""
        h = hashlib.sha256()
        for arr in (self.z, self.R, self.E, self.F):
            if arr is not None:
                h.update(np.ascontiguousarray(arr))  # buffer protocol: no copy of the array
        return h.hexdigest()

    def summary(self) -> dict:
        """Frames, atoms, elements and label ranges (internal units), for `openmlff data info`."""
        out = {
            "name": self.name,
            "frames": self.n_frames,
            "atoms": self.n_atoms,
            "elements": {s: int(c) for s, c in zip(*np.unique(elements.symbols(self.z), return_counts=True))},
            "units": {"positions": "Å", "energy": "eV", "forces": "eV/Å"},
            "provenance": self.provenance,
        }
        if self.E is not None:
            out["energy_range_eV"] = [float(self.E.min()), float(self.E.max())]
        if self.F is not None:
            norms = np.linalg.norm(self.F, axis=-1)
            out["force_component_range_eV_per_A"] = [float(self.F.min()), float(self.F.max())]
            out["force_norm_max_eV_per_A"] = float(norms.max())
        return out


def _check_finite(arr: np.ndarray, field_name: str, where: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise DatasetError(f"{where}: field '{field_name}' has {int(bad.sum())} non-finite values (first at index {first})")


def provenance_json(prov: dict) -> str:
    """Provenance as sorted JSON (numpy scalars made plain)."""
    return json.dumps(prov, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o))


def ensure_path(path) -> Path:
    """Path object for a str/Path; FileNotFoundError naming it if it does not exist, DatasetError for a
    folder or an empty file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise DatasetError(f"{p}: is a folder; expected a dataset file (npz, extended XYZ or XYZ)")
    if p.stat().st_size == 0:
        raise DatasetError(f"{p}: is empty (0 bytes); expected a dataset file (npz, extended XYZ or XYZ)")
    return p
