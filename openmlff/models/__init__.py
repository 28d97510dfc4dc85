"""Model architectures behind one interface: build_model(architecture, hyperparameters) -> EnergyModel.

An architecture is a pair (config dataclass, network class):
- the config has defaults sized for CPU training, a `paper()` classmethod giving the original
  paper's sizes, `to_dict()`, and a `cutoff_angstrom` field;
- the network is built as `Network(config)`, has a float attribute `cutoff_angstrom`, and maps
  (z (N,) long, pos (N, 3) in Å, batch (N,) long molecule index, box (3, 3) in Å or None) to one
  raw scalar per atom (N,); it finds its edges with `neighbors.find_pairs` (`neighbor_pairs`, which applies the
  periodic minimum image when a box is given, unless the caller passes the pairs: the compiled training step)
  and must be TorchScript-compatible.
`EnergyModel` turns the per-atom outputs into energies (eV) and forces (eV/Å).
"""

from __future__ import annotations

import importlib
from dataclasses import fields

from ..core.errors import InputError
from .et import ETConfig, EquivariantTransformer
from .energy_model import EnergyModel, fit_element_energies

#: architecture name -> (module, config class name, network class name), imported on first use
ARCHITECTURES = {
    "et": ("openmlff.models.et", "ETConfig", "EquivariantTransformer"),
    "visnet": ("openmlff.models.visnet", "ViSNetConfig", "ViSNet"),
    "nequip": ("openmlff.models.nequip", "NequIPConfig", "NequIP"),
}


def default_hyperparameters(architecture: str, preset: str = "cpu") -> dict:
    """Hyperparameters of `architecture`: 'cpu' (small, the default) or 'paper' (the original paper's sizes)."""
    config_cls, _ = _lookup(architecture)
    if preset == "cpu":
        return config_cls().to_dict()
    if preset == "paper":
        return config_cls.paper().to_dict()
    raise InputError(f"unknown preset {preset!r}; expected 'cpu' or 'paper'")


def build_model(architecture: str, hyperparameters: dict | None = None, saved: bool = False) -> EnergyModel:
    """A fresh EnergyModel of the named architecture; unknown hyperparameter names are an error.

    saved: the hyperparameters were stored with a model (a checkpoint): one stored before a hyperparameter
    existed lacks it and is rebuilt as it was then (the config's ADDED values), not with today's default.
    """
    config_cls, network_cls = _lookup(architecture)
    params = {**(getattr(config_cls, "ADDED", {}) if saved else {}), **dict(hyperparameters or {})}
    known = {f.name for f in fields(config_cls)}
    unknown = set(params) - known
    if unknown:
        raise InputError(f"unknown hyperparameters for {architecture!r}: {sorted(unknown)}; expected some of {sorted(known)}")
    config = config_cls(**params)
    return EnergyModel(network_cls(config), architecture, config.to_dict())


def _lookup(architecture: str):
    key = architecture.lower()
    if key not in ARCHITECTURES:
        raise InputError(f"unknown architecture {architecture!r}; available: {sorted(ARCHITECTURES)}")
    module_name, config_name, network_name = ARCHITECTURES[key]
    module = importlib.import_module(module_name)
    return getattr(module, config_name), getattr(module, network_name)


__all__ = ["ARCHITECTURES", "ETConfig", "EquivariantTransformer", "EnergyModel", "build_model",
           "default_hyperparameters", "fit_element_energies"]
