"""Potentials: exported MLFFs, models of other codes, classical force fields and reference methods behind one
interface (see base.py). Names resolve lazily, so that `potentials.model_ref` (what a spec names) stays light."""

__all__ = ["KINDS", "ModelRef", "Potential", "get_potential", "potential_names"]


def __getattr__(name: str):
    if name in ("KINDS", "Potential"):
        from . import base

        return getattr(base, name)
    if name in ("get_potential", "potential_names"):
        from . import lookup

        return getattr(lookup, name)
    if name == "ModelRef":
        from .model_ref import ModelRef

        return ModelRef
    raise AttributeError(f"module 'openmlff.potentials' has no attribute {name!r}")
