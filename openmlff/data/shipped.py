"""Data shipped inside the package (copied from the project's shared, public data), so the quick start needs no network."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"

#: name -> file under openmlff/resources/datasets (units in the sidecar <file>.units.json)
SHIPPED_DATASETS = {
    "rmd17_aspirin_1200": "rmd17_aspirin_1200.extxyz",
}


def shipped_dataset_path(name: str = "rmd17_aspirin_1200") -> Path:
    """Path of a dataset shipped with openmlff (default: 1200 rMD17 aspirin frames, PBE/def2-SVP)."""
    if name not in SHIPPED_DATASETS:
        raise InputError(f"no shipped dataset {name!r}; available: {sorted(SHIPPED_DATASETS)}")
    return RESOURCES / "datasets" / SHIPPED_DATASETS[name]
