"""Dataset readers and writers against the real MD17 / rMD17 / MD22 files in tests/data/datasets."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pytest

from openmlff.core import units
from openmlff.data import (
    Dataset,
    DatasetError,
    UnitInferenceWarning,
    dataset_info,
    format_dataset_info,
    infer_energy_unit,
    load_dataset,
    save_dataset,
    write_extxyz,
    write_md17_npz,
)
from openmlff.core.atomic_io import atomic_write_stream

KCAL = units.energy_to_ev("kcal/mol")  # eV per kcal/mol


@pytest.fixture(scope="module")
def datasets(test_data):
    return test_data / "datasets"


def _load_quietly(path, **kwargs) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitInferenceWarning)
        return load_dataset(path, **kwargs)


@pytest.fixture(scope="module")
def rmd17_extxyz(datasets) -> Dataset:
    from openmlff.data.shipped import shipped_dataset_path

    return _load_quietly(shipped_dataset_path())  # ships inside the package, not copied into tests/data


def _assert_same_numbers(a: Dataset, b: Dataset, rtol: float = 1e-12) -> None:
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_allclose(a.R, b.R, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(a.E, b.E, rtol=rtol, atol=0)
    np.testing.assert_allclose(a.F, b.F, rtol=rtol, atol=1e-12)


def _strip_unit_keys(path) -> None:
    """Remove energy_unit=/length_unit= from every comment line (a file that names no units)."""
    text = path.read_text()
    path.write_text(re.sub(r" (energy|length)_unit=\S+", "", text))


# ----------------------------------------------------------------------------- real files agree


def test_rmd17_npz_kcal_matches_first_100_extxyz_frames_in_ev(datasets, rmd17_extxyz):
    npz = load_dataset(datasets / "rmd17_aspirin_100.npz")
    assert npz.provenance["format"] == "rmd17-npz"
    assert npz.provenance["energy_unit_in_file"] == "kcal/mol"
    assert rmd17_extxyz.provenance["energy_unit_in_file"] == "eV"
    assert rmd17_extxyz.n_frames == 1200
    _assert_same_numbers(npz, rmd17_extxyz.subset(range(100)))


def test_md17_aspirin_npz_and_extxyz_agree_in_ev(datasets):
    npz = load_dataset(datasets / "md17_aspirin_15.npz")
    xyz = _load_quietly(datasets / "md17_aspirin_15.extxyz")
    _assert_same_numbers(npz, xyz)
    assert npz.E.shape == (15,)
    assert np.all((npz.E > -17700) & (npz.E < -17500)), "aspirin total energies are about -17600 eV"
    assert np.abs(npz.F).max() < 20.0  # eV/Å; in kcal/mol/Å they would be ~23x larger
    assert npz.name == "aspirin"
    assert npz.provenance["level_of_theory"] == "MD17 DFT (PBE+vdW-TS)"
    assert npz.provenance["energy_unit_source"] == "'theory' field"


def test_md22_npz_and_extxyz_agree(datasets):
    npz = load_dataset(datasets / "md22_Ac-Ala3-NHMe_5.npz")
    xyz = _load_quietly(datasets / "md22_Ac-Ala3-NHMe_5.extxyz")
    _assert_same_numbers(npz, xyz)
    assert (npz.n_frames, npz.n_atoms) == (5, 42)
    assert xyz.provenance["energy_unit_in_file"] == "kcal/mol"
    assert xyz.provenance["level_of_theory"] == "PBE+MBD (MD22)"


def test_sgdml_plain_xyz_ethanol(datasets):
    ds = load_dataset(datasets / "md17_ethanol_3.xyz")
    assert (ds.n_frames, ds.n_atoms) == (3, 9)
    np.testing.assert_array_equal(ds.z, [6, 6, 8, 1, 1, 1, 1, 1, 1])
    # first frame as written in the file (kcal/mol, kcal/mol/Å, Å)
    assert ds.E[0] == pytest.approx(-97208.40600498248 * KCAL, rel=1e-14)
    np.testing.assert_allclose(ds.F[0, 2], np.array([-4.0883694515, 22.5901955842, 3.30876819905e-06]) * KCAL, rtol=1e-14)
    np.testing.assert_allclose(ds.R[0, 2], [1.1304, 0.3147, 0.0])
    assert ds.provenance["format"] == "sgdml-xyz"
    assert "sGDML" in ds.provenance["energy_unit_source"]


def test_provenance_records_source_units_and_frames(datasets):
    ds = load_dataset(datasets / "rmd17_benzene_10.npz")
    prov = ds.provenance
    assert prov["source_file"] == str((datasets / "rmd17_benzene_10.npz").resolve())
    assert prov["n_frames"] == 10
    assert (prov["energy_unit_in_file"], prov["length_unit_in_file"]) == ("kcal/mol", "Å")
    assert prov["level_of_theory"].startswith("PBE/def2-SVP")


# ----------------------------------------------------------------------------- refusing bad input


def test_published_malformed_rmd17_file_is_refused(datasets):
    path = datasets / "rmd17_benzene_10_malformed.npz"
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert str(path) in msg and "'nuclear_charges'" in msg and "'coords'" in msg
    assert "10 atomic numbers" in msg and "12 atoms" in msg


def test_unknown_npz_layout_lists_keys_and_layouts(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, numbers=np.array([1, 1]), xyz=np.zeros((1, 2, 3)))
    with pytest.raises(DatasetError, match="found keys \\['numbers', 'xyz'\\]") as err:
        load_dataset(path)
    assert "nuclear_charges" in str(err.value) and "openmlff_meta" in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.npz"):
        load_dataset(tmp_path / "no_such.npz")


def test_nan_label_is_refused_with_field_and_frame(datasets, tmp_path):
    with np.load(datasets / "md17_aspirin_15.npz") as src:
        arrays = dict(src)
    arrays["F"][4, 3, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=r"field 'F' has 1 non-finite .*frame 4"):
        load_dataset(path)


def test_md17_layout_with_ev_energies_contradicts_convention(datasets, tmp_path):
    ev = load_dataset(datasets / "rmd17_aspirin_100.npz")  # kcal/mol in the file, eV after reading
    path = tmp_path / "looks_like_md17_but_ev.npz"
    np.savez(path, z=ev.z, R=ev.R, E=ev.E, F=ev.F)  # no unit keys: the convention would say kcal/mol
    with pytest.raises(DatasetError, match="look like eV"):
        load_dataset(path)
    np.testing.assert_array_equal(load_dataset(path, energy_unit="eV").E, ev.E)


# ----------------------------------------------------------------------------- units of extended XYZ


def test_inferred_unit_warns_and_is_recorded(datasets):
    with pytest.warns(UnitInferenceWarning, match="kcal/mol"):
        ds = load_dataset(datasets / "md17_aspirin_15.extxyz")
    assert ds.provenance["energy_unit_source"] == "inferred from total energy"


def test_caller_units_override_inference(datasets, recwarn):
    path = datasets / "md17_aspirin_15.extxyz"
    told = load_dataset(path, energy_unit="kcal_mol", length_unit="angstrom")
    assert not [w for w in recwarn if issubclass(w.category, UnitInferenceWarning)]
    assert told.provenance["energy_unit_source"] == "caller"
    # the caller wins even against the evidence: numbers are taken as eV and left as they are
    as_ev = load_dataset(path, energy_unit="eV")
    np.testing.assert_allclose(as_ev.E, told.E / KCAL, rtol=1e-14)


def test_sidecar_units_override_inference(datasets, tmp_path, recwarn):
    path = tmp_path / "aspirin.extxyz"
    shutil.copy(datasets / "md17_aspirin_15.extxyz", path)
    sidecar = tmp_path / "aspirin.extxyz.units.json"
    sidecar.write_text(json.dumps({"energy": "kJ/mol", "length": "Å", "level_of_theory": "PBE+TS", "origin": "test"}))
    ds = load_dataset(path)
    assert not [w for w in recwarn if issubclass(w.category, UnitInferenceWarning)]
    assert ds.provenance["energy_unit_source"] == "sidecar aspirin.extxyz.units.json"
    assert ds.provenance["level_of_theory"] == "PBE+TS"
    assert ds.provenance["sidecar_notes"] == {"origin": "test"}
    reference = load_dataset(datasets / "md17_aspirin_15.npz")
    np.testing.assert_allclose(ds.E, reference.E / units.KCAL_IN_KJ, rtol=1e-13)
    sidecar.write_text(json.dumps({"energy": "furlongs"}))
    with pytest.raises(DatasetError, match="aspirin.extxyz.units.json: key 'energy'"):
        load_dataset(path)


@pytest.mark.parametrize("unit_keys", ["energy_unit=kcal/mol length_unit=Ang", 'units="kcal/mol Å"'])
def test_comment_line_units_are_read(datasets, tmp_path, unit_keys, recwarn):
    path = tmp_path / "aspirin.extxyz"
    text = (datasets / "md17_aspirin_15.extxyz").read_text()
    path.write_text(text.replace('pbc="F F F"', f'{unit_keys} pbc="F F F"'))
    ds = load_dataset(path)
    assert ds.provenance["energy_unit_source"] == "comment line"
    assert not [w for w in recwarn if issubclass(w.category, UnitInferenceWarning)]
    _assert_same_numbers(ds, load_dataset(datasets / "md17_aspirin_15.npz"))


def test_relative_energies_without_units_are_refused(datasets, tmp_path):
    ds = load_dataset(datasets / "md17_aspirin_15.npz")
    relative = Dataset(z=ds.z, R=ds.R, E=ds.E - ds.E.mean(), F=ds.F, name="relative")
    path = write_extxyz(relative, tmp_path / "relative.extxyz")
    _strip_unit_keys(path)
    with pytest.raises(DatasetError, match=r"relative.extxyz: the energy unit .* cannot be told.*energy_unit="):
        load_dataset(path)
    assert load_dataset(path, energy_unit="eV").E == pytest.approx(relative.E, abs=1e-12)


@pytest.mark.parametrize("unit", ["nm", "Bohr"])
def test_positions_not_in_angstrom_are_refused_unless_named(datasets, tmp_path, unit):
    ds = load_dataset(datasets / "md17_ethanol_3.xyz")
    scaled = Dataset(z=ds.z, R=ds.R / units.length_to_angstrom(unit), E=ds.E, F=ds.F, name="scaled")
    path = write_extxyz(scaled, tmp_path / "scaled.extxyz")
    _strip_unit_keys(path)
    with pytest.raises(DatasetError, match=rf"scaled.extxyz: field 'pos'.* look like {unit}; name the length unit"):
        load_dataset(path, energy_unit="eV")
    named = load_dataset(path, energy_unit="eV", length_unit=unit)
    np.testing.assert_allclose(named.R, ds.R, rtol=1e-14)


def test_infer_energy_unit_tells_the_units_apart(datasets):
    ds = load_dataset(datasets / "md17_aspirin_15.npz")
    for unit in ("eV", "kcal/mol", "kJ/mol", "Hartree"):
        found, _ = infer_energy_unit(ds.z, ds.E * units.ev_to(unit))
        assert found == unit
    assert infer_energy_unit(ds.z, ds.E - ds.E.mean())[0] is None
    assert infer_energy_unit([35, 35], [-5000.0])[0] is None  # Br: no free-atom energy known


# ----------------------------------------------------------------------------- writers: round trips


@pytest.fixture(scope="module")
def sample(rmd17_extxyz) -> Dataset:
    return rmd17_extxyz.subset(range(0, 1200, 40))  # 30 frames


def test_save_dataset_round_trip_is_exact_and_keeps_provenance(sample, tmp_path):
    path = save_dataset(sample, tmp_path / "aspirin.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["aspirin.npz"]  # no temporary left behind
    back = load_dataset(path)
    for name in ("z", "R", "E", "F"):
        np.testing.assert_array_equal(getattr(back, name), getattr(sample, name))
    assert back.name == sample.name
    assert back.fingerprint() == sample.fingerprint()
    assert back.provenance["format"] == "openmlff-npz"
    assert back.provenance["origin"]["source_file"].endswith("rmd17_aspirin_1200.extxyz")
    assert back.provenance["level_of_theory"] == sample.provenance["level_of_theory"]
    with np.load(path) as raw:
        assert raw["R"].dtype == np.float64 and raw["E"].dtype == np.float64
        assert json.loads(str(raw["openmlff_meta"]))["units"]["energy"] == "eV"


def test_altered_openmlff_npz_is_refused(sample, tmp_path):
    path = save_dataset(sample, tmp_path / "a.npz")
    with np.load(path) as raw:
        arrays = dict(raw)
    arrays["E"][0] += 1e-3
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match="fingerprint"):
        load_dataset(path)


@pytest.mark.parametrize("energy_unit", ["kcal/mol", "eV"])
def test_md17_npz_round_trip(sample, tmp_path, energy_unit):
    path = write_md17_npz(sample, tmp_path / "md17.npz", energy_unit=energy_unit)
    with np.load(path) as raw:
        assert raw["E"].shape == (sample.n_frames, 1)
        assert str(raw["e_unit"]) == energy_unit
    back = load_dataset(path)
    assert back.provenance["energy_unit_source"] == "'e_unit' field"
    _assert_same_numbers(back, sample, rtol=1e-14)


@pytest.mark.parametrize("energy_unit", ["eV", "kcal/mol", "Hartree"])
def test_extxyz_round_trip(sample, tmp_path, energy_unit, recwarn):
    path = write_extxyz(sample, tmp_path / "out.extxyz", energy_unit=energy_unit)
    back = load_dataset(path)
    assert not [w for w in recwarn if issubclass(w.category, UnitInferenceWarning)]
    assert back.provenance["energy_unit_in_file"] == energy_unit
    if energy_unit == "eV":  # no conversion: every digit must survive the text
        for name in ("R", "E", "F"):
            np.testing.assert_array_equal(getattr(back, name), getattr(sample, name))
    _assert_same_numbers(back, sample, rtol=1e-14)


def test_unlabelled_structure_reads_and_round_trips(test_data, tmp_path):
    ds = load_dataset(test_data / "structures" / "aspirin.xyz")
    assert (ds.n_frames, ds.n_atoms, ds.E, ds.F) == (1, 21, None, None)
    back = load_dataset(save_dataset(ds, tmp_path / "s.npz"))
    np.testing.assert_array_equal(back.R, ds.R)
    assert back.E is None and back.F is None
    with pytest.raises(DatasetError, match="needs energies"):
        write_md17_npz(ds, tmp_path / "s_md17.npz")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")

    def broken(fh):
        fh.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_stream(path, broken, text=True)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# ----------------------------------------------------------------------------- data info


def test_dataset_info_and_text(datasets):
    info = dataset_info(datasets / "rmd17_aspirin_100.npz")
    assert (info["frames"], info["atoms"]) == (100, 21)
    assert info["elements"] == {"C": 9, "H": 8, "O": 4}
    assert info["units_in_file"]["energy"] == "kcal/mol"
    assert "convention" in info["units_in_file"]["energy_source"]
    lo, hi = info["energy_range_eV"]
    assert -17700 < lo < hi < -17500
    text = format_dataset_info(info)
    assert "rmd17_aspirin_100.npz" in text and "frames: 100" in text and "C9 H8 O4" in text
    assert "kcal/mol" in text and "eV/Å" in text
