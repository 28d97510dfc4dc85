"""The reference-method interface: energy and forces of one conformation, and the registry of methods.

In the spirit of ASE's Calculator: one small interface that several backends implement
(GFN2-xTB/GFN1-xTB through tblite, any ASE calculator). Positions go in as Å, energy comes
out in eV and forces in eV/Å, the internal units of openmlff. Every failure is a
`ReferenceMethodError` subclass, so batch labelling can record a bad frame and go on.

Methods are named by a string (`get_reference_method("gfn2-xtb")`) so that worker processes
can build their own copy from the name instead of pickling a live calculator. Backends register
themselves: xtb.py its names, ase_bridge.py the 'ase:' prefix; this module imports neither.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from ..core import elements
from ..core.errors import InputError, OpenMLFFError
from ..core.versions import package_versions


class ReferenceMethodError(OpenMLFFError, RuntimeError):
    """A reference calculation could not give energy and forces for a conformation."""


class UnsupportedElementError(ReferenceMethodError):
    """The structure holds an element the method cannot treat; the message names it."""


class ConvergenceError(ReferenceMethodError):
    """The self-consistent (or other iterative) calculation did not converge."""


class NonFiniteResultError(ReferenceMethodError):
    """The calculation returned a NaN or infinite energy or force."""


class InvalidGeometryError(ReferenceMethodError):
    """The positions cannot be computed: wrong shape, non-finite values, or atoms on top of each other."""


class ReferenceMethod(ABC):
    """Energy and forces of one conformation from a reference electronic-structure method.

    Subclasses set `name` (the registry name or spec that rebuilds them), `level_of_theory`
    (a human-readable description that goes into dataset provenance) and `supported_elements`
    (atomic numbers, or None when the method does not say), and implement `_calculate`.
    `compute` checks the input and the result around it, so every backend fails the same way.
    """

    name: str = "reference"
    level_of_theory: str = "unknown"
    supported_elements: frozenset[int] | None = None

    #: Smallest interatomic distance (Å) accepted before calling the backend; closer atoms
    #: are a broken geometry, not a chemistry question.
    min_distance_angstrom: float = 0.1

    def compute(self, atomic_numbers, positions_angstrom, charge: int = 0,
                multiplicity: int = 1) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (n_atoms, 3) in eV/Å of one conformation given in Å.

        Raises UnsupportedElementError, InvalidGeometryError, ConvergenceError,
        NonFiniteResultError, or ReferenceMethodError for any other failure of the backend.
        """
        z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        pos = np.asarray(positions_angstrom, dtype=np.float64)
        self.check_input(z, pos, multiplicity)
        energy, forces = self._calculate(z, pos, int(charge), int(multiplicity))
        forces = np.asarray(forces, dtype=np.float64).reshape(pos.shape)
        energy = float(energy)
        if not np.isfinite(energy):
            raise NonFiniteResultError(f"{self.name}: the energy is {energy}")
        bad = ~np.isfinite(forces)
        if bad.any():
            raise NonFiniteResultError(
                f"{self.name}: {int(bad.sum())} force components are not finite "
                f"(first at atom {int(np.argwhere(bad)[0][0])})")
        return energy, forces

    def check_input(self, z: np.ndarray, pos: np.ndarray, multiplicity: int = 1) -> None:
        """Raise a ReferenceMethodError subclass if this method cannot compute the conformation."""
        if pos.shape != (z.size, 3):
            raise InvalidGeometryError(
                f"{self.name}: positions have shape {pos.shape}, expected ({z.size}, 3) for {z.size} atoms")
        if multiplicity < 1:
            raise ReferenceMethodError(f"{self.name}: multiplicity must be >= 1, got {multiplicity}")
        if self.supported_elements is not None:
            unsupported = sorted({int(v) for v in z} - set(self.supported_elements))
            if unsupported:
                names = ", ".join(f"{_symbol_or_number(v)} (Z={v})" for v in unsupported)
                raise UnsupportedElementError(f"{self.name} cannot treat element(s) {names}")
        bad = ~np.isfinite(pos)
        if bad.any():
            raise InvalidGeometryError(
                f"{self.name}: {int(bad.sum())} position components are not finite "
                f"(first at atom {int(np.argwhere(bad)[0][0])})")
        if z.size > 1:
            d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
            d[np.diag_indices(z.size)] = np.inf
            i, j = np.unravel_index(int(np.argmin(d)), d.shape)
            if d[i, j] < self.min_distance_angstrom:
                raise InvalidGeometryError(
                    f"{self.name}: atoms {min(i, j)} and {max(i, j)} are {d[i, j]:.3g} Å apart "
                    f"(less than {self.min_distance_angstrom} Å)")

    @abstractmethod
    def _calculate(self, z: np.ndarray, pos_angstrom: np.ndarray, charge: int,
                   multiplicity: int) -> tuple[float, np.ndarray]:
        """Backend call on checked input: (energy eV, forces eV/Å). Raise ReferenceMethodError on failure."""

    def provenance(self) -> dict:
        """What a dataset labelled by this method records about it."""
        return {"method": self.name, "level_of_theory": self.level_of_theory,
                "package_versions": package_versions()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _symbol_or_number(z: int) -> str:
    try:
        return elements.symbol(z)
    except ValueError:
        return "?"


#: name -> factory(**options) of the built-in methods; ASE calculators go by "ase:module:Class".
_REGISTRY: dict[str, Callable[..., ReferenceMethod]] = {}
#: spec prefix -> factory(spec, **options) of methods named by a spec ("ase:" from ase_bridge.py).
_PREFIXES: dict[str, Callable[..., ReferenceMethod]] = {}


def register_reference_method(name: str, factory: Callable[..., ReferenceMethod]) -> None:
    """Make `get_reference_method(name)` build a method with `factory(**options)`."""
    _REGISTRY[name.strip().lower()] = factory


def register_reference_prefix(prefix: str, factory: Callable[..., ReferenceMethod]) -> None:
    """Make `get_reference_method(spec)` build `factory(spec, **options)` for every spec starting with `prefix`."""
    _PREFIXES[prefix.strip().lower()] = factory


def available_reference_methods() -> list[str]:
    """Names `get_reference_method` accepts (besides 'ase:module:Class' specs)."""
    return sorted(_REGISTRY)


def get_reference_method(name: str | ReferenceMethod, **options) -> ReferenceMethod:
    """The reference method called `name` ('gfn2-xtb', 'gfn1-xtb', or 'ase:module.path:ClassName').

    An 'ase:' spec builds `ClassName(**options)` from `module.path` and wraps it in ASEReference,
    e.g. 'ase:ase.calculators.emt:EMT'. A ReferenceMethod instance is returned as it is.
    """
    if isinstance(name, ReferenceMethod):
        return name
    key = str(name).strip()
    for prefix, spec_factory in _PREFIXES.items():
        if key.lower().startswith(prefix):
            return spec_factory(key, **options)
    factory = _REGISTRY.get(key.lower())
    if factory is None:
        raise InputError(
            f"unknown reference method {name!r}; expected one of {available_reference_methods()} "
            "or an ASE calculator as 'ase:module.path:ClassName'")
    return factory(**options)


def import_object(spec: str):
    """The object named 'module.path:attribute' (used to build methods from a name in worker processes)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise InputError(f"expected 'module.path:Name', got {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import {attribute!r} from {module_name!r}: {exc}") from None
