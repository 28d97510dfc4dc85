"""Kohn-Sham DFT through PySCF: the reference method at the level of the rMD17 labels (PBE/def2-SVP).

Labels of new conformations must be at the training data's level of theory: GFN2-xTB differs from
the rMD17 PBE/def2-SVP labels by about 8 kcal/mol/Å in force MAE, so xTB labels cannot be mixed
into an rMD17-trained model. `dft` computes energy and analytic forces with PySCF (restricted KS
for closed shells, unrestricted otherwise), in vacuum; GPU4PySCF is used instead when it is
installed and a CUDA device is there (the `[gpu-dft]` extra), with the same settings.

Names: `dft` (PBE/def2-SVP), or `dft:FUNCTIONAL/BASIS` such as `dft:b3lyp/def2-tzvp`, so that
labelling workers rebuild the method from its name. Settings (`DFTSettings`): density fitting of
the Coulomb and exchange integrals (on by default: an aspirin single point is several times faster,
and the forces move by far less than the label noise), the integration grid level, the SCF
convergence threshold and iterations, and PySCF's thread count. PySCF works in atomic units; this
module converts to Å, eV and eV/Å.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..core import units
from ..core.errors import InputError
from .base import (ConvergenceError, ReferenceMethod, ReferenceMethodError, package_versions,
                   register_reference_method, register_reference_prefix)

DEFAULT_FUNCTIONAL = "PBE"
DEFAULT_BASIS = "def2-SVP"


@dataclass
class DFTSettings:
    """PySCF settings of a DFT single point."""

    functional: str = DEFAULT_FUNCTIONAL
    basis: str = DEFAULT_BASIS
    #: Density fitting (RI) with PySCF's default auxiliary basis for `basis` (def2-universal-jkfit for def2).
    density_fitting: bool = True
    #: PySCF's integration grid level (0-9; 3 is its default).
    grid_level: int = 3
    #: SCF convergence threshold on the energy in Hartree.
    conv_tol_hartree: float = 1e-9
    max_cycle: int = 100
    #: Threads of PySCF's OpenMP loops (None: PySCF's default, all cores). One, as for xTB: batch
    #: labelling runs one process per core, and two processes of all-core threads fight.
    threads: int | None = 1
    #: GPU4PySCF: None uses it when it is installed and a CUDA device is present; False never.
    gpu: bool | None = None


class DFTReference(ReferenceMethod):
    """Kohn-Sham DFT energy and forces of a molecule in vacuum via PySCF (elements H..Rn with def2 bases)."""

    supported_elements = frozenset(range(1, 87))

    def __init__(self, settings: DFTSettings | None = None):
        self.settings = settings or DFTSettings()
        s = self.settings
        if s.grid_level not in range(10):
            raise InputError(f"DFT grid_level must be 0..9, got {s.grid_level}")
        if s.functional.strip().lower() == DEFAULT_FUNCTIONAL.lower() and s.basis.strip().lower() == DEFAULT_BASIS.lower():
            self.name = "dft"
        else:
            self.name = f"dft:{s.functional.lower()}/{s.basis.lower()}"
        self.level_of_theory = (f"{s.functional}/{s.basis} (PySCF {package_versions(['pyscf'])['pyscf']}"
                                f"{', density fitting' if s.density_fitting else ''}), gas phase")

    def _calculate(self, z, pos_angstrom, charge, multiplicity):
        try:
            from pyscf import gto, lib
        except ImportError:
            raise ReferenceMethodError("dft needs PySCF: pip install pyscf (it is a dependency of openmlff; "
                                       "reinstall with `pip install -e .`)") from None
        s = self.settings
        if s.threads is not None:
            lib.num_threads(int(s.threads))
        try:
            mol = gto.M(atom=[(int(zi), tuple(map(float, p))) for zi, p in zip(z, pos_angstrom)], unit="Angstrom",
                        basis=s.basis, charge=int(charge), spin=int(multiplicity) - 1, verbose=0)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ReferenceMethodError(f"{self.name}: PySCF cannot build the molecule: {exc}") from None
        mf = self._scf(mol)
        energy = mf.kernel()
        if not mf.converged:
            raise ConvergenceError(f"{self.name}: the SCF did not converge in {s.max_cycle} cycles "
                                   f"(conv_tol {s.conv_tol_hartree:g} Hartree)")
        gradient = np.asarray(mf.nuc_grad_method().kernel())
        if hasattr(gradient, "get"):  # a CuPy array from GPU4PySCF
            gradient = gradient.get()
        return float(energy) * units.HARTREE_IN_EV, -gradient * (units.HARTREE_IN_EV / units.BOHR_IN_ANGSTROM)

    def _scf(self, mol):
        s = self.settings
        dft = _gpu_dft() if s.gpu is not False else None
        if dft is None:
            if s.gpu:
                raise ReferenceMethodError(f"{self.name}: gpu=True but GPU4PySCF or a CUDA device is missing")
            from pyscf import dft
        mf = dft.RKS(mol) if mol.spin == 0 else dft.UKS(mol)
        mf.xc = s.functional
        mf.grids.level = s.grid_level
        mf.conv_tol = s.conv_tol_hartree
        mf.max_cycle = s.max_cycle
        mf.verbose = 0
        return mf.density_fit() if s.density_fitting else mf

    def provenance(self) -> dict:
        out = super().provenance()
        out["dft_settings"] = {k: v for k, v in asdict(self.settings).items() if k not in ("threads", "gpu")}
        out["dft_settings"]["gpu4pyscf"] = _gpu_dft() is not None and self.settings.gpu is not False
        return out


def _gpu_dft():
    """gpu4pyscf.dft when GPU4PySCF is installed and CUDA works, else None."""
    try:
        import cupy
        from gpu4pyscf import dft

        return dft if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # not installed, or no driver/device: the CPU path
        return None


def _dft_from_spec(spec: str, **options) -> DFTReference:
    """`dft:FUNCTIONAL/BASIS`, e.g. `dft:b3lyp/def2-tzvp`."""
    body = spec.split(":", 1)[1]
    functional, sep, basis = body.partition("/")
    if not sep or not functional.strip() or not basis.strip():
        raise InputError(f"expected 'dft:FUNCTIONAL/BASIS' (e.g. dft:pbe/def2-svp), got {spec!r}")
    return DFTReference(DFTSettings(functional=functional.strip(), basis=basis.strip(), **options))


register_reference_method("dft", lambda **options: DFTReference(DFTSettings(**options) if options else None))
register_reference_prefix("dft:", _dft_from_spec)
