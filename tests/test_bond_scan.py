"""Bond scans (openmlff.metrics.bond_scan): scores by hand, the geometry, toy models that hold or break a bond, and
GFN2-xTB, a physical surface, on a real aspirin frame."""

import numpy as np
import pytest

from openmlff.core.errors import InputError
from openmlff.data import load_dataset
from openmlff.metrics.bond_scan import (FORCE_TOLERANCE_EV_PER_ANGSTROM, OWN_WINDOW_ANGSTROM, SCAN_OFFSETS_ANGSTROM,
                                        bond_scans, scan_geometries, scan_scores)


def morse(x, depth=4.5, a=1.8):
    """Energy (eV) and force along the bond (eV/Å, positive lengthens it) of a Morse bond stretched by x Å."""
    e = np.exp(-a * np.asarray(x))
    return depth * (1 - e) ** 2, -2 * a * depth * e * (1 - e)


def test_a_morse_bond_scores_clean_and_a_false_well_does_not():
    x = SCAN_OFFSETS_ANGSTROM
    E, f = morse(x)
    clean = scan_scores(x, E, f)
    beyond = x > OWN_WINDOW_ANGSTROM + 1e-9
    assert clean == {"wrong_sign_share": 0.0, "spurious_minimum": False, "min_stretch_energy_ev": pytest.approx(
        E[beyond].min())}
    # a Gaussian well centred at +0.6 Å, deep enough to make a local minimum there and push the bond outward on its
    # inner flank: the points between the barrier and the well's bottom count as wrong
    well = -3.0 * np.exp(-((x - 0.6) / 0.12) ** 2)
    dwell = 3.0 * 2 * (x - 0.6) / 0.12 ** 2 * np.exp(-((x - 0.6) / 0.12) ** 2)  # -dE/dx of the well
    scores = scan_scores(x, E + well, f + dwell)
    assert scores["spurious_minimum"] is True
    outside = np.abs(x) > OWN_WINDOW_ANGSTROM + 1e-9
    expected = ((f + dwell) > FORCE_TOLERANCE_EV_PER_ANGSTROM) & outside & (x > 0)
    assert 0 < expected.sum() < outside.sum()
    assert scores["wrong_sign_share"] == pytest.approx(expected.sum() / outside.sum())
    assert scores["min_stretch_energy_ev"] == pytest.approx((E + well)[beyond].min() - (E + well)[x == 0][0])
    # meV noise on a flat stretch is no well (float32 energies), a 20 meV dip is
    flat = np.where(x > 0.5, E[x > 0.5].min(), E) + 0.002 * (np.arange(x.size) % 2)
    assert scan_scores(x, flat, f)["spurious_minimum"] is False
    dip = flat - 0.02 * (np.abs(x - 0.8) < 1e-9)
    assert scan_scores(x, dip, f)["spurious_minimum"] is True
    # inside the window nothing counts: a start 0.1 Å off its minimum is not a wrong sign
    shifted_E, shifted_f = morse(x + 0.1)
    assert scan_scores(x, shifted_E, shifted_f)["wrong_sign_share"] == 0.0
    with pytest.raises(InputError, match="window"):
        scan_scores([-0.1, 0.0, 0.1], [1.0, 0.0, 1.0], [1.0, 0.0, -1.0])


def test_scan_geometries_move_one_atom_along_the_bond():
    R = np.array([[0.0, 0.0, 0.0], [0.6, 0.8, 0.0], [2.0, -1.0, 0.5]])
    frames, axis = scan_geometries(R, (0, 1), moved=1, offsets=[-0.2, 0.0, 0.5])
    assert np.allclose(axis, [0.6, 0.8, 0.0])
    assert np.allclose(np.linalg.norm(frames[:, 1] - frames[:, 0], axis=1), [0.8, 1.0, 1.5])
    assert np.allclose(frames[:, [0, 2]], R[[0, 2]])  # everything else fixed
    assert np.allclose(frames[1], R)


def test_toy_models_that_hold_or_break_a_bond(models, aspirin_data):
    """The harmonic toy model pulls every bond back; the blow-up model, whose C0-H14 rest length is 1 Å longer,
    pushes that bond out over most of its stretch, and only that bond."""
    from campaign_helpers import STRETCHED_BOND

    start = load_dataset(aspirin_data).R[:1]
    z = load_dataset(aspirin_data).z
    stable = bond_scans(models["stable"], z, start)
    assert stable["summary"] == {"wrong_sign_share": 0.0, "spurious_minimum_share": 0.0, "H.wrong_sign_share": 0.0,
                                 "H.spurious_minimum_share": 0.0}
    assert len(stable["scans"]) == 21 and stable["units"]["force"] == "eV/Å"
    assert all(scan["moved"] == 14 for scan in stable["scans"] if sorted(scan["atoms"]) == [0, 14])  # the H moves
    broken = bond_scans(models["blowup"], z, start)
    by_bond = {tuple(sorted(s["atoms"])): s for s in broken["scans"]}
    assert by_bond[tuple(sorted(STRETCHED_BOND))]["wrong_sign_share"] >= 0.75
    assert by_bond[tuple(sorted(STRETCHED_BOND))]["min_stretch_energy_ev"] < 0
    assert broken["summary"]["H.wrong_sign_share"] > broken["summary"]["wrong_sign_share"] > 0


def test_gfn2_xtb_bonds_with_hydrogen_pull_back(aspirin_data):
    """A physical surface: GFN2-xTB on an rMD17 aspirin frame. Every X-H bond pulls back over the whole scan with no
    false well (measured: the heavy-atom bonds are not all clean, since moving one carbon deforms its other bonds)."""
    data = load_dataset(aspirin_data)
    result = bond_scans("gfn2-xtb", data.z, data.R[:1])
    assert result["summary"]["H.wrong_sign_share"] == 0.0 and result["summary"]["H.spurious_minimum_share"] == 0.0
    assert result["summary"]["wrong_sign_share"] < 0.05
    assert all(s["min_stretch_energy_ev"] > 0 for s in result["scans"] if "H" in s["elements"])
