"""Reference methods (GFN-xTB via tblite, ASE calculators) and resumable batch labelling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.cluster import Octahedron

from openmlff.reference import (ASEReference, ConvergenceError, InvalidGeometryError, NonFiniteResultError,
                                ReferenceCalculator, ReferenceMethod, ReferenceMethodError, UnsupportedElementError,
                                XTBReference, XTBSettings, available_reference_methods, get_reference_method,
                                label_conformations)
from openmlff.reference.labelling import MANIFEST_NAME, chunk_path


@pytest.fixture(scope="module")
def methanol():
    atoms = molecule("CH3OH")  # geometry from ASE's G2 collection
    return atoms.numbers.copy(), atoms.positions.copy()


def finite_difference_forces(method: ReferenceMethod, z, pos, h=1e-3, **kwargs) -> np.ndarray:
    """-dE/dx by central differences of method.compute energies (eV/Å)."""
    forces = np.zeros_like(pos)
    for i in range(len(z)):
        for k in range(3):
            plus, minus = pos.copy(), pos.copy()
            plus[i, k] += h
            minus[i, k] -= h
            forces[i, k] = -(method.compute(z, plus, **kwargs)[0] - method.compute(z, minus, **kwargs)[0]) / (2 * h)
    return forces


def test_gfn2_forces_match_finite_differences_of_energy(methanol):
    z, pos = methanol
    method = XTBReference("gfn2-xtb", XTBSettings(accuracy=0.01))  # tight SCF for clean differences
    energy, forces = method.compute(z, pos)
    assert forces.shape == pos.shape and np.isfinite(energy)
    assert np.abs(forces).max() > 0.05  # not a stationary point, so the comparison means something
    np.testing.assert_allclose(forces, finite_difference_forces(method, z, pos), atol=5e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_tblite_runs_with_its_openmp_runtime_limited(methanol, monkeypatch, threads):
    """threadpoolctl limits the OpenMP runtime tblite loaded while tblite computes, and restores it afterwards."""
    from tblite.interface import Calculator
    from threadpoolctl import threadpool_info, threadpool_limits

    def openmp_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]

    seen = []
    singlepoint = Calculator.singlepoint

    def spy(self, *args, **kwargs):
        seen.append(openmp_threads())
        return singlepoint(self, *args, **kwargs)

    monkeypatch.setattr(Calculator, "singlepoint", spy)
    z, pos = methanol
    with threadpool_limits(limits=3, user_api="openmp"):  # what the process had before: not the count asked for
        assert openmp_threads() and set(openmp_threads()) == {3}
        XTBReference("gfn2-xtb", XTBSettings(openmp_threads=threads)).compute(z, pos)
        assert set(openmp_threads()) == {3}
        XTBReference("gfn2-xtb", XTBSettings(openmp_threads=None)).compute(z, pos)
    assert [set(s) for s in seen] == [{threads}, {3}]


def test_gfn2_units_agree_with_tblites_own_ase_calculator(methanol):
    from tblite.ase import TBLite

    z, pos = methanol
    energy, forces = get_reference_method("gfn2-xtb").compute(z, pos)
    atoms = Atoms(numbers=z, positions=pos)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    # ASE's Hartree is CODATA 2014, openmlff's CODATA 2018: they differ by 1e-8 relative.
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-7)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-6)
    assert energy < -100  # eV, not Hartree (methanol is about -14 Eh)


def test_registry_builds_methods_by_name(methanol):
    z, pos = methanol
    assert {"gfn2-xtb", "gfn1-xtb"} <= set(available_reference_methods())
    gfn1 = get_reference_method("GFN1-xTB")
    gfn2 = get_reference_method("gfn2-xtb")
    assert "GFN1-xTB" in gfn1.level_of_theory and "GFN2-xTB" in gfn2.level_of_theory
    assert gfn2.supported_elements == frozenset(range(1, 87))
    assert gfn1.compute(z, pos)[0] != pytest.approx(gfn2.compute(z, pos)[0], abs=1e-3)
    assert "dft" in available_reference_methods()
    with pytest.raises(ValueError, match="unknown reference method 'mp2'.*gfn2-xtb"):
        get_reference_method("mp2")


def test_unsupported_element_is_named(methanol):
    z, pos = methanol
    z = z.copy()
    z[0] = 92
    with pytest.raises(UnsupportedElementError, match=r"U \(Z=92\)"):
        get_reference_method("gfn2-xtb").compute(z, pos)


def test_scf_that_does_not_converge_raises_convergence_error(methanol):
    z, pos = methanol
    with pytest.raises(ConvergenceError, match="not converged"):
        get_reference_method("gfn2-xtb", max_iterations=2).compute(z, pos)


def test_broken_geometries_raise_invalid_geometry(methanol):
    z, pos = methanol
    method = get_reference_method("gfn2-xtb")
    nan_pos = pos.copy()
    nan_pos[2, 1] = np.nan
    with pytest.raises(InvalidGeometryError, match="not finite.*atom 2"):
        method.compute(z, nan_pos)
    stacked = pos.copy()
    stacked[3] = stacked[1]
    with pytest.raises(InvalidGeometryError, match="atoms 1 and 3"):
        method.compute(z, stacked)
    with pytest.raises(InvalidGeometryError, match="shape"):
        method.compute(z, pos[:-1])


class _BrokenBackend(ReferenceMethod):
    """A backend that returns NaN forces on atom 1: stands in for a numerically failing program."""

    name = "broken-backend"

    def _calculate(self, z, pos, charge, multiplicity):
        forces = np.zeros_like(pos)
        forces[1, 0] = np.nan
        return 0.0, forces


def test_non_finite_result_is_refused(methanol):
    z, pos = methanol
    with pytest.raises(NonFiniteResultError, match="not finite.*atom 1"):
        _BrokenBackend().compute(z, pos)


def test_ase_emt_reference_forces_match_finite_differences():
    cluster = Octahedron("Cu", 3)  # 19-atom Cu octahedron
    numbers = cluster.numbers.copy()
    numbers[::4] = 79  # a Cu/Au alloy cluster
    rng = np.random.default_rng(1)
    pos = cluster.positions + rng.normal(scale=0.05, size=cluster.positions.shape)
    method = ASEReference(EMT(), supported_elements=[13, 29, 47, 79, 28, 46, 78, 1, 6, 7, 8])
    energy, forces = method.compute(numbers, pos)
    assert np.isfinite(energy) and np.abs(forces).max() > 0.01
    np.testing.assert_allclose(forces, finite_difference_forces(method, numbers, pos, h=1e-4), atol=1e-5)
    by_spec = get_reference_method("ase:ase.calculators.emt:EMT")
    assert by_spec.name == "ase:ase.calculators.emt:EMT" and "EMT" in by_spec.level_of_theory
    assert by_spec.compute(numbers, pos)[0] == pytest.approx(energy, abs=1e-10)
    with pytest.raises(UnsupportedElementError, match="Fe"):
        method.compute(np.r_[numbers[:-1], 26], pos)


def test_ase_lennard_jones_reference_and_backend_errors():
    pos = np.array([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.2, 0.1], [0.7, 0.6, 1.0]])
    method = ASEReference(LennardJones(sigma=1.0, epsilon=1.0, rc=4.0, smooth=True))
    z = np.full(4, 18)
    _, forces = method.compute(z, pos)
    np.testing.assert_allclose(forces, finite_difference_forces(method, z, pos, h=1e-5), atol=1e-5)
    with pytest.raises(ValueError, match="does not name an ASE Calculator"):
        get_reference_method("ase:numpy:ndarray")
    with pytest.raises(ValueError, match="cannot import"):
        get_reference_method("ase:ase.calculators.emt:NoSuchCalculator")


def test_reference_method_drives_ase_as_a_calculator(methanol):
    z, pos = methanol
    atoms = Atoms(numbers=z, positions=pos)
    atoms.calc = ReferenceCalculator("gfn2-xtb")
    energy, forces = get_reference_method("gfn2-xtb").compute(z, pos)
    assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-10)


def _perturbed_frames(z, pos, n, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pos[None] + rng.normal(scale=0.03, size=(n, len(z), 3))


def test_batch_labelling_in_parallel_chunks_records_a_failed_frame(methanol, tmp_path):
    z, pos = methanol
    frames = _perturbed_frames(z, pos, 6)
    frames[4, 0, 0] = np.nan  # a broken frame (in the last chunk)
    out = tmp_path / "labels"
    result = label_conformations("gfn2-xtb", z, frames, out, chunk_size=2, n_workers=2, progress=False)
    assert sorted(p.name for p in out.glob("chunk_*.npz")) == ["chunk_00000.npz", "chunk_00001.npz", "chunk_00002.npz"]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["n_frames"] == 6 and manifest["chunk_size"] == 2 and manifest["method"] == "gfn2-xtb"
    assert result.chunks_computed == 3 and result.chunks_reused == 0
    assert [f.index for f in result.failures] == [4]
    assert result.failures[0].error == "InvalidGeometryError" and "not finite" in result.failures[0].message
    np.testing.assert_array_equal(result.frame_indices, [0, 1, 2, 3, 5])
    ds = result.dataset
    assert ds.n_frames == 5 and ds.provenance["frames_failed"] == 1
    assert ds.provenance["failed_frames"][0]["index"] == 4
    method = get_reference_method("gfn2-xtb")
    for k, index in enumerate(result.frame_indices):
        energy, forces = method.compute(z, frames[index])
        assert ds.E[k] == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(ds.F[k], forces, atol=1e-8)
        np.testing.assert_array_equal(ds.R[k], frames[index])


def test_labelling_resumes_and_skips_finished_chunks(methanol, tmp_path):
    z, pos = methanol
    frames = _perturbed_frames(z, pos, 6, seed=2)
    out = tmp_path / "labels"
    first = label_conformations("gfn2-xtb", z, frames, out, chunk_size=2, n_workers=1, progress=False)
    # A run killed after two chunks: chunk 1 never written. Mark chunk 0 so a recomputation would show.
    chunk_path(out, 1).unlink()
    with np.load(chunk_path(out, 0)) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["E"] = arrays["E"] + 1000.0
    np.savez(chunk_path(out, 0), **arrays)
    resumed = label_conformations("gfn2-xtb", z, frames, out, chunk_size=2, n_workers=1, progress=False)
    assert resumed.chunks_reused == 2 and resumed.chunks_computed == 1
    np.testing.assert_allclose(resumed.dataset.E[:2], first.dataset.E[:2] + 1000.0)  # kept, not recomputed
    np.testing.assert_allclose(resumed.dataset.E[2:], first.dataset.E[2:], atol=1e-10)
    with pytest.raises(ValueError, match="different labelling job.*input_sha256"):
        label_conformations("gfn2-xtb", z, frames + 0.01, out, chunk_size=2, n_workers=1, progress=False)


def test_labelling_sends_a_picklable_method_object_to_workers(tmp_path):
    cluster = Octahedron("Cu", 3)
    frames = _perturbed_frames(cluster.numbers, cluster.positions, 4, seed=3)
    method = ASEReference(EMT())
    result = label_conformations(method, cluster.numbers, frames, tmp_path / "emt", chunk_size=2, n_workers=2,
                                 progress=False)
    assert result.n_failed == 0 and result.chunks_computed == 2
    assert result.dataset.provenance["method"] == "ase:ase.calculators.emt:EMT"
    for k in range(4):
        assert result.dataset.E[k] == pytest.approx(method.compute(cluster.numbers, frames[k])[0], abs=1e-10)
