"""GFN2-xTB and GFN1-xTB through tblite: the built-in reference method.

tblite works in atomic units: positions go in as Bohr, the energy comes out in Hartree and the
gradient in Hartree/Bohr; this module converts with openmlff.core.units so callers see Å, eV and eV/Å.
Each call builds a fresh tblite Calculator from the superposition-of-atomic-densities guess, so
a conformation's labels do not depend on which conformation was computed before it. tblite's
own printout is silenced; its failures become ReferenceMethodError subclasses.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from ..core import units
from ..core.errors import InputError
from .base import (ConvergenceError, InvalidGeometryError, ReferenceMethod, ReferenceMethodError,
                   UnsupportedElementError, package_versions, register_reference_method)

_TBLITE_NAMES = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}


@dataclass
class XTBSettings:
    """tblite self-consistent-charge settings (tblite's defaults) and the OpenMP thread count."""

    accuracy: float = 1.0
    max_iterations: int = 250
    electronic_temperature_K: float = 300.0
    #: OpenMP threads for tblite (None: leave OMP_NUM_THREADS alone). One thread is fastest for
    #: molecules of tens of atoms, and on a busy machine two spinning OpenMP threads can be 100x
    #: slower (measured here: 1 s instead of 9 ms per aspirin single point).
    openmp_threads: int | None = 1


class XTBReference(ReferenceMethod):
    """GFN-xTB energy and forces of a molecule in vacuum via tblite (elements H..Rn, Z = 1..86)."""

    supported_elements = frozenset(range(1, 87))

    def __init__(self, method: str = "gfn2-xtb", settings: XTBSettings | None = None):
        key = method.strip().lower()
        if key not in _TBLITE_NAMES:
            raise InputError(f"unknown xTB method {method!r}; expected one of {sorted(_TBLITE_NAMES)}")
        self.name = key
        self.tblite_method = _TBLITE_NAMES[key]
        self.settings = settings or XTBSettings()
        self.level_of_theory = f"{self.tblite_method} (tblite {package_versions(['tblite'])['tblite']}), gas phase"

    def _calculate(self, z, pos_angstrom, charge, multiplicity):
        from tblite.exceptions import TBLiteRuntimeError, TBLiteValueError
        from tblite.interface import Calculator

        positions_bohr = pos_angstrom / units.BOHR_IN_ANGSTROM
        try:
            with _openmp_threads(self.settings.openmp_threads):
                calc = Calculator(self.tblite_method, z, positions_bohr, charge=float(charge),
                                  uhf=multiplicity - 1, logger=_discard)
                calc.set("verbosity", 0)
                calc.set("accuracy", self.settings.accuracy)
                calc.set("max-iter", self.settings.max_iterations)
                calc.set("temperature", self.settings.electronic_temperature_K * units.BOLTZMANN_HARTREE_PER_K)
                result = calc.singlepoint()
        except (TBLiteRuntimeError, TBLiteValueError) as exc:
            raise _translate_error(self.name, exc) from None
        energy_ev = float(result.get("energy")) * units.HARTREE_IN_EV
        forces = -np.asarray(result.get("gradient")) * (units.HARTREE_IN_EV / units.BOHR_IN_ANGSTROM)
        return energy_ev, forces

    def provenance(self) -> dict:
        out = super().provenance()
        out["xtb_settings"] = {"accuracy": self.settings.accuracy, "max_iterations": self.settings.max_iterations,
                               "electronic_temperature_K": self.settings.electronic_temperature_K}
        return out


_openmp_controller = None


def _openmp_threads(n: int | None):
    """Context manager that limits the OpenMP runtimes loaded in this process (tblite's among them) to n threads.

    threadpoolctl calls omp_set_num_threads of each runtime, since OpenMP reads OMP_NUM_THREADS
    only when it starts, and restores the previous count on exit. The controller lists the
    loaded libraries once (about 1 ms, against 10 µs for each limit after that, next to 9 ms for
    an aspirin single point); tblite's runtime is loaded by then. n None: no limit.
    """
    global _openmp_controller
    if n is None:
        return contextlib.nullcontext()
    if _openmp_controller is None:
        from threadpoolctl import ThreadpoolController

        _openmp_controller = ThreadpoolController()
    return _openmp_controller.limit(limits=int(n), user_api="openmp")


def _discard(message: str) -> None:
    """tblite logger that drops its printout."""


def _translate_error(name: str, exc: Exception) -> ReferenceMethodError:
    """Map a tblite error message onto the ReferenceMethodError subclass that says what went wrong."""
    text = str(exc)
    lowered = text.lower()
    if "not converged" in lowered:
        return ConvergenceError(f"{name}: {text}")
    if "no support for element" in lowered:
        return UnsupportedElementError(f"{name}: {text}")
    if "too close" in lowered:
        return InvalidGeometryError(f"{name}: {text}")
    return ReferenceMethodError(f"{name}: tblite failed: {text}")


def _xtb_factory(method: str):
    def factory(**options) -> XTBReference:
        settings = XTBSettings(**options) if options else None
        return XTBReference(method, settings)
    return factory


for _name in _TBLITE_NAMES:
    register_reference_method(_name, _xtb_factory(_name))
