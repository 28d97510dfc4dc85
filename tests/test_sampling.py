"""Reference-MD sampling: labels consistent with the method, provenance, seeds, resumption."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from openmlff.data import load_dataset
from openmlff.reference.sampling import CHECKPOINT_SUFFIX, generate_dataset
from openmlff.reference import UnsupportedElementError, get_reference_method
from openmlff.structures.builtin import structure_from_atoms

SMALL = dict(method="gfn2-xtb", temperature_K=400.0, n_frames=4, stride_steps=2, equilibration_steps=4,
             timestep_fs=0.5, progress=False)


@pytest.fixture(scope="module")
def methanol():
    atoms = molecule("CH3OH")
    return structure_from_atoms("methanol", atoms.numbers, atoms.positions)


def test_generated_frames_carry_the_reference_labels_and_provenance(methanol, tmp_path):
    out = tmp_path / "methanol.npz"
    ds = generate_dataset(methanol, out, seed=3, **SMALL)
    assert ds.n_frames == 4 and ds.has_labels
    assert not (tmp_path / ("methanol.npz" + CHECKPOINT_SUFFIX)).exists()  # removed once the file is written
    method = get_reference_method("gfn2-xtb")
    for k in range(ds.n_frames):  # the MD's energies and forces are the method's at the kept positions
        energy, forces = method.compute(ds.z, ds.R[k])
        assert ds.E[k] == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(ds.F[k], forces, atol=1e-8)
    assert np.linalg.norm(ds.R[1] - ds.R[0], axis=-1).max() > 1e-3  # the molecule moves between frames
    p = ds.provenance
    assert p["method"] == "gfn2-xtb" and "GFN2-xTB" in p["level_of_theory"]
    assert (p["temperature_K"], p["seed"], p["stride_steps"], p["equilibration_steps"]) == (400.0, 3, 2, 4)
    assert p["total_steps"] == 4 + 4 * 2 and p["timestep_fs"] == 0.5 and p["structure"] == "methanol"
    assert {"openmlff", "numpy", "ase", "tblite"} <= set(p["package_versions"])
    on_disk = load_dataset(out)
    np.testing.assert_array_equal(on_disk.F, ds.F)
    assert on_disk.provenance["seed"] == 3


def test_same_seed_same_frames_other_seed_other_frames(methanol):
    first = generate_dataset(methanol, seed=1, **SMALL)
    again = generate_dataset(methanol, seed=1, **SMALL)
    other = generate_dataset(methanol, seed=2, **SMALL)
    np.testing.assert_array_equal(first.R, again.R)
    assert np.abs(first.R - other.R).max() > 1e-4


def test_killed_run_resumes_from_its_checkpoint(methanol, tmp_path):
    reference = generate_dataset(methanol, tmp_path / "whole.npz", seed=4, **SMALL)

    def stop_at_third_frame(frames_done: int) -> None:
        if frames_done == 3:
            raise KeyboardInterrupt  # as if killed after the checkpoint at frame 2
    out = tmp_path / "resumed.npz"
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(methanol, out, seed=4, checkpoint_every_frames=2, on_frame=stop_at_third_frame, **SMALL)
    checkpoint = tmp_path / ("resumed.npz" + CHECKPOINT_SUFFIX)
    assert checkpoint.exists() and not out.exists()
    with pytest.raises(ValueError, match="different sampling run.*seed"):
        generate_dataset(methanol, out, seed=5, **SMALL)
    resumed = generate_dataset(methanol, out, seed=4, checkpoint_every_frames=2, **SMALL)
    assert resumed.provenance["resumed_from_step"] == 4 + 2 * 2
    np.testing.assert_allclose(resumed.R, reference.R, atol=1e-10)
    np.testing.assert_allclose(resumed.F, reference.F, atol=1e-8)
    assert not checkpoint.exists()


def test_unsupported_element_fails_before_any_md(tmp_path):
    uranyl = structure_from_atoms("uranyl", [92, 8, 8], [[0, 0, 0], [0, 0, 1.8], [0, 0, -1.8]])
    with pytest.raises(UnsupportedElementError, match="U"):
        generate_dataset(uranyl, tmp_path / "u.npz", **SMALL)
    assert not list(tmp_path.iterdir())
