"""Reference methods: energy and forces of any conformation, one at a time or in resumable batches.

`get_reference_method("gfn2-xtb")` gives GFN2-xTB through tblite, `get_reference_method("dft")`
PBE/def2-SVP through PySCF; `ASEReference(calc)` wraps any
ASE calculator; `label_conformations(...)` labels many conformations in parallel, in chunks on disk.
"""

from .base import (ConvergenceError, InvalidGeometryError, NonFiniteResultError, ReferenceMethod,
                   ReferenceMethodError, UnsupportedElementError, available_reference_methods,
                   get_reference_method, package_versions, register_reference_method)
from .xtb import XTBReference, XTBSettings  # registers 'gfn2-xtb' and 'gfn1-xtb'
from .dft import DFTReference, DFTSettings  # registers 'dft' and 'dft:FUNCTIONAL/BASIS' (PySCF, imported when used)
from .ase_bridge import ASEReference, ReferenceCalculator
from .labelling import FailedFrame, LabellingResult, label_conformations

__all__ = [
    "ReferenceMethod", "ReferenceMethodError", "UnsupportedElementError", "ConvergenceError",
    "NonFiniteResultError", "InvalidGeometryError", "get_reference_method", "register_reference_method",
    "available_reference_methods", "package_versions", "XTBReference", "XTBSettings", "DFTReference", "DFTSettings", "ASEReference",
    "ReferenceCalculator", "FailedFrame", "LabellingResult", "label_conformations",
]
