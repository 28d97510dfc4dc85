"""The `dft` reference method (PySCF): agrees with an rMD17 label at its level (PBE/def2-SVP), forces are the
energy's gradient, names rebuild it, a failed SCF is a ConvergenceError."""

from __future__ import annotations

import numpy as np
import pytest

from openmlff.core import units
from openmlff.data import load_dataset
from openmlff.core.errors import InputError
from openmlff.reference import ConvergenceError, DFTReference, DFTSettings, get_reference_method

WATER_Z = np.array([8, 1, 1])
WATER_R = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]])
KCAL = units.ev_to("kcal/mol")


@pytest.mark.slow
def test_dft_reproduces_an_rmd17_label(test_data):
    """rMD17 aspirin is PBE/def2-SVP (ORCA); PySCF with density fitting gives the same forces to about 0.01 kcal/mol/Å."""
    ds = load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")
    method = get_reference_method("dft", threads=2)
    assert method.name == "dft" and method.level_of_theory.startswith("PBE/def2-SVP (PySCF")
    energy, forces = method.compute(ds.z, ds.R[0])
    error = (forces - ds.F[0]) * KCAL  # kcal/mol/Å
    assert np.abs(error).mean() < 0.05 and np.abs(error).max() < 0.2
    assert abs(energy - ds.E[0]) * KCAL < 1.0  # same level of theory: even the total energy agrees


def test_dft_forces_are_minus_the_gradient_of_its_energy():
    method = DFTReference(DFTSettings(basis="sto-3g"))
    _, forces = method.compute(WATER_Z, WATER_R)
    h = 1e-4
    for atom, axis in ((0, 2), (1, 1)):
        plus, minus = WATER_R.copy(), WATER_R.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(method.compute(WATER_Z, plus)[0] - method.compute(WATER_Z, minus)[0]) / (2 * h)
        assert forces[atom, axis] == pytest.approx(numeric, abs=2e-3)  # eV/Å; the grid limits the agreement
    assert abs(forces.sum(axis=0)).max() < 1e-3


def test_dft_names_and_errors():
    m = get_reference_method("dft:b3lyp/def2-tzvp")
    assert m.name == "dft:b3lyp/def2-tzvp" and m.settings.functional == "b3lyp" and m.settings.basis == "def2-tzvp"
    assert get_reference_method("dft:PBE/def2-SVP").name == "dft"
    assert m.provenance()["dft_settings"]["density_fitting"] is True
    with pytest.raises(InputError, match="FUNCTIONAL/BASIS"):
        get_reference_method("dft:pbe")
    with pytest.raises(ConvergenceError, match="did not converge in 1 cycles"):
        DFTReference(DFTSettings(basis="sto-3g", max_cycle=1)).compute(WATER_Z, WATER_R)
