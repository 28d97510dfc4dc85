"""Model architectures behind one interface: build_potential(architecture, hyperparameters) -> Potential."""

from __future__ import annotations

from dataclasses import fields

from .et import ETConfig, EquivariantTransformer
from .potential import Potential, fit_element_energies

#: architecture name -> (config dataclass, network class)
ARCHITECTURES = {"et": (ETConfig, EquivariantTransformer)}


def default_hyperparameters(architecture: str, preset: str = "cpu") -> dict:
    """Hyperparameters of `architecture`: 'cpu' (small, the default) or 'paper' (the original paper's sizes)."""
    config_cls, _ = _lookup(architecture)
    if preset == "cpu":
        return config_cls().to_dict()
    if preset == "paper":
        return config_cls.paper().to_dict()
    raise ValueError(f"unknown preset {preset!r}; expected 'cpu' or 'paper'")


def build_potential(architecture: str, hyperparameters: dict | None = None) -> Potential:
    """A fresh Potential of the named architecture; unknown hyperparameter names are an error."""
    config_cls, network_cls = _lookup(architecture)
    params = dict(hyperparameters or {})
    known = {f.name for f in fields(config_cls)}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown hyperparameters for {architecture!r}: {sorted(unknown)}; expected some of {sorted(known)}")
    config = config_cls(**params)
    return Potential(network_cls(config), architecture, config.to_dict())


def _lookup(architecture: str):
    key = architecture.lower()
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; available: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[key]


__all__ = ["ARCHITECTURES", "ETConfig", "EquivariantTransformer", "Potential", "build_potential",
           "default_hyperparameters", "fit_element_energies"]
