"""Potentials: exported MLFFs, classical force fields and reference methods behind one interface (see base.py)."""

from .base import KINDS, Potential
from .lookup import get_potential, potential_names

__all__ = ["KINDS", "Potential", "get_potential", "potential_names"]
