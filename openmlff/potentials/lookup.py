"""Potentials by name: `get_potential('amber14')`, a model file path, or a Potential; the names accepted."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from . import classical, quantum
from .base import Potential
from .exported import ExportedModel


def get_potential(model, **options) -> Potential:
    """The potential named by `model`: a Potential (returned as is), a registered name, or a model file path.

    Names: 'amber14', 'gaff-2.11' (classical; the [classical] extra), 'gfn2-xtb', 'gfn1-xtb', 'dft' (quantum).
    Anything else is an exported model file (ModelFileError naming it when it is not one).
    """
    if isinstance(model, Potential):
        return model
    key = str(model).strip().lower()
    for module in (classical, quantum):
        if key in module.NAMES:
            return module.make(key, **options)
    if options:
        raise InputError(f"options {sorted(options)} apply to named potentials, not to the model file {model}")
    if not Path(model).exists():
        from ..model_file import ModelFileError

        raise ModelFileError(f"{Path(model).resolve()}: no such model file, and not a potential name "
                             f"({', '.join(potential_names())})")
    return ExportedModel(model)


def potential_names() -> list[str]:
    """Every name get_potential accepts besides a model file."""
    return sorted(classical.NAMES) + sorted(quantum.NAMES)
