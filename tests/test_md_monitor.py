"""openmlff.md.monitor: the stability criterion of docs/architecture.md on real aspirin geometries."""

from __future__ import annotations

import time

import numpy as np
import pytest

from openmlff.core import elements
from openmlff.md import StabilityMonitor, default_temperature_limit_K


@pytest.fixture
def monitor(aspirin):
    return StabilityMonitor(aspirin.atomic_numbers, aspirin.positions_angstrom, timestep_fs=0.5,
                            temperature_limit_K=2000.0)


def stretch(positions: np.ndarray, i: int, j: int, by_angstrom: float) -> np.ndarray:
    """Move atom j along the bond i->j so that the bond is `by_angstrom` longer."""
    out = positions.copy()
    direction = out[j] - out[i]
    out[j] += by_angstrom * direction / np.linalg.norm(direction)
    return out


def test_bonds_and_reference_lengths_come_from_the_starting_structure(monitor, aspirin):
    bonds = elements.find_bonds(aspirin.atomic_numbers, aspirin.positions_angstrom)
    np.testing.assert_array_equal(monitor.bonds, bonds)
    expected = [np.linalg.norm(aspirin.positions_angstrom[j] - aspirin.positions_angstrom[i]) for i, j in bonds]
    np.testing.assert_allclose(monitor.reference_lengths_angstrom, expected, rtol=1e-12)


def test_starting_structure_and_small_deviations_are_stable(monitor, aspirin):
    pos = aspirin.positions_angstrom
    assert monitor.check(0, pos, -1000.0, 300.0) is None
    assert monitor.check(10, stretch(pos, 9, 13, 0.45), -1000.0, 300.0) is None
    assert monitor.check(10, stretch(pos, 9, 13, -0.45), -1000.0, 300.0) is None


def test_a_bond_beyond_the_limit_is_a_collapse_naming_atoms_elements_and_lengths(monitor, aspirin):
    pos = stretch(aspirin.positions_angstrom, 9, 13, 0.6)  # the carboxylic O-H
    event = monitor.check(1200, pos, -1000.0, 300.0)
    assert event is not None and event.reason == "bond_deviation"
    assert event.step == 1200 and event.time_ps == pytest.approx(0.6)
    bond = event.broken_bond
    assert bond.atoms == (9, 13) and bond.elements == ("O", "H")
    reference = np.linalg.norm(aspirin.positions_angstrom[13] - aspirin.positions_angstrom[9])
    assert bond.reference_length_angstrom == pytest.approx(reference)
    assert bond.length_angstrom == pytest.approx(reference + 0.6)
    assert bond.deviation_angstrom == pytest.approx(0.6)
    assert event.n_broken_bonds == 1
    assert event.to_dict()["broken_bond"]["elements"] == ["O", "H"]


def test_the_most_deviating_of_several_broken_bonds_is_reported(monitor, aspirin):
    pos = stretch(aspirin.positions_angstrom, 0, 14, 0.7)   # C-H by 0.7 Å
    pos = stretch(pos, 4, 18, 1.3)                          # methyl C-H by 1.3 Å
    event = monitor.check(5, pos, 0.0, 300.0)
    assert event.broken_bond.atoms == (4, 18) and event.broken_bond.elements == ("C", "H")
    assert event.n_broken_bonds == 2


def test_compression_counts_like_stretching(monitor, aspirin):
    event = monitor.check(5, stretch(aspirin.positions_angstrom, 1, 15, -0.55), 0.0, 300.0)
    assert event.broken_bond.atoms == (1, 15)
    assert event.broken_bond.length_angstrom < event.broken_bond.reference_length_angstrom


def test_non_finite_positions_energy_and_hot_frames_are_collapses(monitor, aspirin):
    pos = aspirin.positions_angstrom.copy()
    pos[3, 1] = np.nan
    assert monitor.check(1, pos, 0.0, 300.0).reason == "non_finite_positions"
    assert "atom 3" in monitor.check(1, pos, 0.0, 300.0).message
    assert monitor.check(1, aspirin.positions_angstrom, np.inf, 300.0).reason == "non_finite_energy"
    assert monitor.check(1, aspirin.positions_angstrom, np.nan, 300.0).reason == "non_finite_energy"
    hot = monitor.check(1, aspirin.positions_angstrom, 0.0, 2500.0)
    assert hot.reason == "temperature" and hot.broken_bond is None
    assert monitor.check(1, aspirin.positions_angstrom, 0.0, 1999.0) is None


def test_non_finite_forces_are_a_collapse_and_forces_are_optional(monitor, aspirin):
    forces = np.ones((21, 3))
    assert monitor.check(1, aspirin.positions_angstrom, 0.0, 300.0, forces) is None
    forces[17, 2] = np.inf
    event = monitor.check(1, aspirin.positions_angstrom, 0.0, 300.0, forces)
    assert event.reason == "non_finite_forces" and "atom 17 (H)" in event.message
    assert monitor.check(1, aspirin.positions_angstrom, None, 300.0, None) is None  # energy and forces not evaluated


def test_non_bonded_atoms_closer_than_the_limit_are_a_collapse_naming_the_pair(aspirin):
    # bond deviations allowed up to 10 Å here, so that only the contact criterion can fire
    monitor = StabilityMonitor(aspirin.atomic_numbers, aspirin.positions_angstrom, 0.5, bond_deviation_limit_angstrom=10.0)
    pos = aspirin.positions_angstrom.copy()
    pos[18] = pos[7] + 0.6 * (pos[18] - pos[7]) / np.linalg.norm(pos[18] - pos[7])  # H18 0.6 Å from O7
    assert monitor.check(3, aspirin.positions_angstrom, 0.0, 300.0) is None
    event = monitor.check(3, pos, 0.0, 300.0)
    assert event.reason == "nonbonded_contact"
    assert event.close_pair.atoms == (7, 18) and event.close_pair.elements == ("O", "H")
    assert event.close_pair.distance_angstrom == pytest.approx(0.6)
    assert "O7 and H18" in event.message
    assert event.to_dict()["close_pair"]["atoms"] == [7, 18]
    # settable, and None switches it off
    lenient = StabilityMonitor(aspirin.atomic_numbers, aspirin.positions_angstrom, 0.5, bond_deviation_limit_angstrom=10.0,
                               min_nonbonded_distance_angstrom=0.5)
    assert lenient.check(3, pos, 0.0, 300.0) is None
    off = StabilityMonitor(aspirin.atomic_numbers, aspirin.positions_angstrom, 0.5, bond_deviation_limit_angstrom=10.0,
                           min_nonbonded_distance_angstrom=None)
    assert off.check(3, pos, 0.0, 300.0) is None


def test_bonded_atoms_do_not_count_as_close_pairs(monitor, aspirin):
    # a C-H bond compressed to 0.65 Å (within the 0.5 Å bond limit of its ~1.09 Å reference) is no contact
    pos = stretch(aspirin.positions_angstrom, 0, 14, -0.44)
    assert np.linalg.norm(pos[14] - pos[0]) < 0.7
    assert monitor.check(1, pos, 0.0, 300.0) is None


def test_the_last_checked_frames_are_kept_oldest_first(aspirin):
    monitor = StabilityMonitor(aspirin.atomic_numbers, aspirin.positions_angstrom, 0.5, frames_kept=3)
    for k in range(5):
        monitor.check(10 * k, stretch(aspirin.positions_angstrom, 9, 13, 0.1 * k), -1.0 * k, 300.0 + k)
    kept = list(monitor.recent_frames)
    assert [f.step for f in kept] == [20, 30, 40]
    assert [f.temperature_K for f in kept] == [302.0, 303.0, 304.0]
    assert [f.potential_energy_kJ_per_mol for f in kept] == [-2.0, -3.0, -4.0]
    np.testing.assert_allclose([f.max_bond_deviation_angstrom for f in kept], [0.2, 0.3, 0.4])
    np.testing.assert_allclose(kept[-1].positions_angstrom, stretch(aspirin.positions_angstrom, 9, 13, 0.4))
    monitor.check(50, stretch(aspirin.positions_angstrom, 9, 13, 0.8), None, 300.0)  # the collapsed frame is kept too
    assert [f.step for f in monitor.recent_frames] == [30, 40, 50]
    assert np.isnan(monitor.recent_frames[-1].potential_energy_kJ_per_mol)


def test_reference_lengths_are_the_mean_over_reference_frames(aspirin, test_data):
    frames = np.load(test_data / "datasets" / "md17_aspirin_15.npz")["R"]  # Å, same atom order
    monitor = StabilityMonitor(aspirin.atomic_numbers, aspirin.positions_angstrom, 0.5,
                               reference_positions_angstrom=frames)
    i, j = monitor.bonds[:, 0], monitor.bonds[:, 1]
    expected = np.linalg.norm(frames[:, j] - frames[:, i], axis=-1).mean(axis=0)
    np.testing.assert_allclose(monitor.reference_lengths_angstrom, expected, rtol=1e-12)
    start = np.linalg.norm(aspirin.positions_angstrom[j] - aspirin.positions_angstrom[i], axis=-1)
    assert not np.allclose(expected, start)  # the mean really differs from the starting structure
    with pytest.raises(ValueError, match=r"expected \(n_frames, 21, 3\)"):
        StabilityMonitor(aspirin.atomic_numbers, aspirin.positions_angstrom, 0.5,
                         reference_positions_angstrom=frames[:, :20])


def test_default_temperature_limit():
    assert default_temperature_limit_K(300.0) == 2000.0
    assert default_temperature_limit_K(700.0) == 2800.0


def test_a_check_costs_microseconds(monitor, aspirin):
    pos = aspirin.positions_angstrom
    monitor.check(0, pos, 0.0, 300.0)
    n = 2000
    start = time.perf_counter()
    for step in range(n):
        monitor.check(step, pos, 0.0, 300.0, np.zeros((21, 3)))
    per_check_s = (time.perf_counter() - start) / n
    assert per_check_s < 300e-6, f"{per_check_s * 1e6:.1f} µs per check"
