"""Read MLFF datasets into a Dataset in Å and eV, whatever the file's format and units.

Formats: MD17/MD22 npz (sGDML keys z, R, E, F), rMD17 npz (nuclear_charges, coords, energies,
forces), openmlff's own npz (z, R, E, F + openmlff_meta), extended XYZ, and sGDML's plain XYZ
(energy alone on the comment line, forces in columns 5-7).

Each format reader returns the arrays as stored plus what the file says about its units; one
resolver then picks the units, first source that speaks wins:
  1. the caller (`energy_unit=`, `length_unit=`),
  2. the file itself (sGDML `e_unit`/`r_unit` keys, a `theory` string naming units, openmlff_meta,
     `energy_unit=`/`length_unit=`/`units=` on an extended-XYZ comment line),
  3. a sidecar `<file>.units.json` such as {"energy": "eV", "length": "Å"},
  4. the convention of the format (MD17, MD22 and rMD17 files are kcal/mol and Å),
  5. for the energy only: inference from the total energy against free-atom energies
     (with a UnitInferenceWarning); the length unit defaults to Å.
A unit from the convention is cross-checked against the inference, and lengths not named by the
caller are checked against covalent radii, so a file in eV or in Bohr that looks like MD17 is
refused instead of silently converted wrong. The provenance records each decision.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from .. import elements
from ..units import (
    BOHR_IN_ANGSTROM,
    HARTREE_IN_EV,
    NM_IN_ANGSTROM,
    canonical_energy_unit,
    canonical_length_unit,
    energy_to_ev,
    length_to_angstrom,
)
from .dataset import Dataset, DatasetError, ensure_path
from .writers import OPENMLFF_FORMAT, OPENMLFF_FORMAT_VERSION, OPENMLFF_META_KEY


class UnitInferenceWarning(UserWarning):
    """The energy unit of a file was inferred from its total energies, not read or told."""


#: Source recorded in provenance when the energy unit was inferred.
INFERRED_SOURCE = "inferred from total energy"

#: Free-atom ground-state total energies in Hartree (exact non-relativistic values, Chakravorty
#: et al., Phys. Rev. A 47, 3649 (1993); H exact). Used only to tell energy units apart, which
#: needs ~10 %: correlation, relativity (< 0.5 % up to Ar) and molecular binding (~1 %) are far
#: below that. Heavier elements are left out: their files often use effective core potentials,
#: whose total energies are far from all-electron ones.
FREE_ATOM_ENERGY_HARTREE = {
    1: -0.5, 2: -2.9037, 3: -7.4781, 4: -14.6674, 5: -24.6539, 6: -37.8450, 7: -54.5892,
    8: -75.0673, 9: -99.7339, 10: -128.9376, 11: -162.2546, 12: -200.0530, 13: -242.3460,
    14: -289.3590, 15: -341.2590, 16: -398.1100, 17: -460.1480, 18: -527.5400,
}
#: (file energy) / (free-atom estimate in eV) expected for each energy unit.
_ENERGY_RATIO = {unit: 1.0 / energy_to_ev(unit) for unit in ("eV", "meV", "kcal/mol", "kJ/mol", "Hartree")}
_RATIO_TOLERANCE = 0.10

#: Shortest distance / (sum of covalent radii) of a molecule given in Å lies in this window
#: (bonds are 0.8-1.1 times the radii sum); Bohr gives ~1.9 times and nm ~0.1 times that.
_BOND_RATIO_WINDOW = (0.55, 1.45)

#: Level of theory of the well-known datasets, recognised from the file name.
_THEORY_BY_FILE_NAME = (
    (re.compile(r"(?<![a-z0-9])rmd17(?![a-z0-9])"), "PBE/def2-SVP (revised MD17)"),
    (re.compile(r"(?<![a-z0-9])md17(?![a-z0-9])"), "PBE+vdW-TS (MD17)"),
    (re.compile(r"(?<![a-z0-9])md22(?![a-z0-9])"), "PBE+MBD (MD22)"),
)
#: Unit aliases too short to trust inside free text such as a `theory` string.
_AMBIGUOUS_IN_TEXT = {"a", "au", "ha", "eh", "a0"}
_UNSPECIFIED_UNIT_VALUES = {"", "u", "unknown", "none"}


@dataclass(frozen=True)
class _NpzLayout:
    """Key names of one npz convention; `units` is the convention's (energy, length) or None."""

    format: str
    description: str
    z: str
    R: str
    E: str
    F: str
    required: tuple[str, ...]
    units: tuple[str, str] | None


_NPZ_LAYOUTS = (
    _NpzLayout("openmlff-npz", "openmlff", "z", "R", "E", "F", ("z", "R", OPENMLFF_META_KEY), None),
    _NpzLayout("rmd17-npz", "revised MD17", "nuclear_charges", "coords", "energies", "forces",
               ("nuclear_charges", "coords", "energies", "forces"), ("kcal/mol", "Å")),
    _NpzLayout("md17-npz", "MD17/MD22 (sGDML)", "z", "R", "E", "F", ("z", "R", "E", "F"), ("kcal/mol", "Å")),
)


@dataclass
class _Told:
    """A value someone told us (a unit, a level of theory) and where it came from."""

    value: str
    source: str


@dataclass
class _Sidecar:
    """What a `<file>.units.json` says: units, level of theory, other notes kept in provenance."""

    energy: _Told | None = None
    length: _Told | None = None
    level_of_theory: _Told | None = None
    notes: dict = field(default_factory=dict)


@dataclass
class _RawData:
    """Arrays as stored in the file (file units) and what the file says about itself."""

    format: str
    fields: dict  # role ('z', 'R', 'E', 'F') -> field name in the file, for error messages
    z: np.ndarray
    R: np.ndarray
    E: np.ndarray | None
    F: np.ndarray | None
    energy_unit: _Told | None = None
    length_unit: _Told | None = None
    convention: tuple[str, str, str] | None = None  # (energy unit, length unit, source text)
    name: str | None = None
    level_of_theory: _Told | None = None
    stored_provenance: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- public API


def load_dataset(path, *, energy_unit: str | None = None, length_unit: str | None = None,
                 name: str | None = None) -> Dataset:
    """Read a dataset file (format detected from extension and content) into Å / eV / eV/Å.

    energy_unit / length_unit name the file's units and override everything the file says;
    name overrides the dataset name (default: the file's own name key, else the file stem).
    Raises FileNotFoundError for a missing file, DatasetError (naming the file, the field and
    what was expected) for a malformed one or one whose units cannot be told.
    """
    path = ensure_path(path)
    caller_energy = _Told(canonical_energy_unit(energy_unit), "caller") if energy_unit else None
    caller_length = _Told(canonical_length_unit(length_unit), "caller") if length_unit else None
    raw = _read_raw(path)
    _check_raw_arrays(path, raw)
    sidecar = _read_sidecar(path)
    e_told, l_told = _resolve_units(path, raw, sidecar, caller_energy, caller_length)
    length_factor = length_to_angstrom(l_told.value)
    energy_factor = energy_to_ev(e_told.value) if e_told else 1.0
    R = raw.R * length_factor
    E = None if raw.E is None else raw.E.reshape(-1) * energy_factor
    F = None if raw.F is None else raw.F * (energy_factor / length_factor)
    if caller_length is None:
        _check_length_scale(path, raw, R, l_told)
    ds = Dataset(z=raw.z, R=R, E=E, F=F, name=name or raw.name or path.stem,
                 provenance=_provenance(path, raw, sidecar, e_told, l_told))
    return ds.validate(str(path))


def infer_energy_unit(z, energies) -> tuple[str | None, str]:
    """Energy unit of total energies `energies` of the molecule `z`, told from free-atom energies.

    Returns (unit, explanation); unit is None when the ratio of the mean energy to the
    free-atom estimate lies within 10 % of no unit or of more than one (e.g. relative energies).
    """
    z = np.asarray(z, dtype=int)
    unknown = sorted({int(a) for a in z} - set(FREE_ATOM_ENERGY_HARTREE))
    if unknown:
        return None, (f"free-atom energies are known for H-Ar only, not for {elements.symbols(unknown)}")
    estimate_ev = sum(FREE_ATOM_ENERGY_HARTREE[int(a)] for a in z) * HARTREE_IN_EV
    mean = float(np.mean(energies))
    ratio = mean / estimate_ev
    matches = [u for u, r in _ENERGY_RATIO.items() if abs(ratio / r - 1.0) <= _RATIO_TOLERANCE]
    expected = ", ".join(f"{u} {r:.4g}" for u, r in _ENERGY_RATIO.items())
    text = (f"mean energy {mean:.6g} over free-atom estimate {estimate_ev:.6g} eV is {ratio:.4g} "
            f"(expected within 10 % of: {expected})")
    return (matches[0] if len(matches) == 1 else None), text


def dataset_info(path, *, energy_unit: str | None = None, length_unit: str | None = None) -> dict:
    """Frames, atoms, elements, the file's units and their sources, label ranges in eV and eV/Å."""
    ds = load_dataset(path, energy_unit=energy_unit, length_unit=length_unit)
    prov = ds.provenance
    info = ds.summary()
    info["file"] = prov["source_file"]
    info["format"] = prov["format"]
    info["units_in_file"] = {
        "energy": prov.get("energy_unit_in_file"),
        "energy_source": prov.get("energy_unit_source"),
        "length": prov.get("length_unit_in_file"),
        "length_source": prov.get("length_unit_source"),
    }
    info["level_of_theory"] = prov.get("level_of_theory")
    return info


def format_dataset_info(info: dict) -> str:
    """Short human-readable text of a `dataset_info` dict (for `openmlff data info`)."""
    units = info["units_in_file"]
    elems = " ".join(f"{s}{n}" for s, n in info["elements"].items())
    lines = [
        f"{info['file']}  ({info['format']}, name {info['name']!r})",
        f"  frames: {info['frames']}   atoms: {info['atoms']}   elements: {elems}",
    ]
    if units["energy"]:
        lines.append(f"  energy unit in file: {units['energy']}  ({units['energy_source']})")
    lines.append(f"  length unit in file: {units['length']}  ({units['length_source']})")
    if info.get("level_of_theory"):
        lines.append(f"  level of theory: {info['level_of_theory']}")
    if "energy_range_eV" in info:
        lo, hi = info["energy_range_eV"]
        lines.append(f"  energy: {lo:.6f} .. {hi:.6f} eV (spread {hi - lo:.4f} eV)")
    if "force_component_range_eV_per_A" in info:
        lo, hi = info["force_component_range_eV_per_A"]
        lines.append(f"  force components: {lo:.4f} .. {hi:.4f} eV/Å, largest |F| {info['force_norm_max_eV_per_A']:.4f} eV/Å")
    if "energy_range_eV" not in info and "force_component_range_eV_per_A" not in info:
        lines.append("  no energy or force labels")
    return "\n".join(lines)


# --------------------------------------------------------------------------- format detection


def _read_raw(path: Path) -> _RawData:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PK\x03\x04") or path.suffix.lower() == ".npz":
        return _read_npz(path)
    text_head = head.decode("utf-8", errors="replace").splitlines()
    if len(text_head) >= 2 and text_head[0].strip().isdigit():
        if _is_number(text_head[1]):
            return _read_sgdml_xyz(path)
        return _read_extxyz(path)
    raise DatasetError(
        f"{path}: unknown dataset format; expected an npz (MD17/MD22 z,R,E,F; rMD17 "
        f"nuclear_charges,coords,energies,forces; openmlff z,R,E,F,{OPENMLFF_META_KEY}), an extended "
        f"XYZ file or an sGDML XYZ file (atom count, then a line with the energy)")


def _is_number(text: str) -> bool:
    tokens = text.strip().strip("[]").split()
    if len(tokens) != 1:
        return False
    try:
        float(tokens[0])
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- npz


def _read_npz(path: Path) -> _RawData:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: holds a single array, expected an npz archive with named fields")
    with npz:
        keys = set(npz.files)
        layout = next((lay for lay in _NPZ_LAYOUTS if set(lay.required) <= keys), None)
        if layout is None:
            expected = "; ".join(f"{lay.description}: {', '.join(lay.required)}" for lay in _NPZ_LAYOUTS)
            raise DatasetError(f"{path}: unknown npz key layout; found keys {sorted(keys)}; expected one of: {expected}")
        raw = _RawData(
            format=layout.format,
            fields={"z": layout.z, "R": layout.R, "E": layout.E, "F": layout.F},
            z=_npz_array(npz, layout.z, path),
            R=_npz_array(npz, layout.R, path),
            E=_npz_array(npz, layout.E, path) if layout.E in keys else None,
            F=_npz_array(npz, layout.F, path) if layout.F in keys else None,
        )
        if layout.format == "openmlff-npz":
            _read_openmlff_meta(path, npz, raw)
        else:
            raw.convention = (*layout.units, f"{layout.description} convention (kcal/mol, Å)")
            _read_sgdml_string_keys(path, npz, raw)
    return raw


def _npz_array(npz, key: str, path: Path) -> np.ndarray:
    try:
        arr = npz[key]
    except ValueError:
        raise DatasetError(f"{path}: field '{key}' holds pickled Python objects; expected a numeric array "
                           f"(openmlff does not unpickle data files)") from None
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: field '{key}' has dtype {arr.dtype}; expected numbers")
    return arr


def _npz_text(npz, key: str, path: Path) -> str | None:
    if key not in npz.files:
        return None
    try:
        arr = npz[key]
    except ValueError:
        raise DatasetError(f"{path}: field '{key}' holds pickled Python objects; expected a string") from None
    if arr.dtype.kind not in "US" or arr.size != 1:
        raise DatasetError(f"{path}: field '{key}' has dtype {arr.dtype} and shape {arr.shape}; expected one string")
    value = arr.reshape(()).item()
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_sgdml_string_keys(path: Path, npz, raw: _RawData) -> None:
    """Units from sGDML's `e_unit`/`r_unit`, else from a `theory` string; name and theory too."""
    raw.name = _npz_text(npz, "name", path) or None
    theory = _npz_text(npz, "theory", path)
    theory_energy = theory_length = None
    if theory:
        level, theory_energy, theory_length = _split_theory(theory)
        if level:
            raw.level_of_theory = _Told(level, "'theory' field")
    for key, kind in (("e_unit", "energy"), ("r_unit", "length")):
        value = _npz_text(npz, key, path)
        if value is None or value.strip().lower() in _UNSPECIFIED_UNIT_VALUES:
            continue
        told = _Told(_canonical_unit(kind, value, f"{path}: field '{key}'"), f"'{key}' field")
        setattr(raw, f"{kind}_unit", told)
    if raw.energy_unit is None and theory_energy:
        raw.energy_unit = _Told(theory_energy, "'theory' field")
    if raw.length_unit is None and theory_length:
        raw.length_unit = _Told(theory_length, "'theory' field")


def _read_openmlff_meta(path: Path, npz, raw: _RawData) -> None:
    text = _npz_text(npz, OPENMLFF_META_KEY, path)
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: field '{OPENMLFF_META_KEY}' is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != OPENMLFF_FORMAT:
        raise DatasetError(f"{path}: field '{OPENMLFF_META_KEY}' lacks \"format\": \"{OPENMLFF_FORMAT}\"")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > OPENMLFF_FORMAT_VERSION:
        raise DatasetError(f"{path}: field '{OPENMLFF_META_KEY}' has format_version {version!r}; "
                           f"this openmlff reads versions up to {OPENMLFF_FORMAT_VERSION}")
    units = meta.get("units") or {}
    for kind in ("energy", "length"):
        if kind not in units:
            raise DatasetError(f"{path}: field '{OPENMLFF_META_KEY}' names no {kind} unit (expected units.{kind})")
        told = _Told(_canonical_unit(kind, units[kind], f"{path}: field '{OPENMLFF_META_KEY}' units.{kind}"),
                     f"'{OPENMLFF_META_KEY}' field")
        setattr(raw, f"{kind}_unit", told)
    raw.name = meta.get("name")
    raw.stored_provenance = dict(meta.get("provenance") or {})
    if raw.stored_provenance.get("level_of_theory"):
        raw.level_of_theory = _Told(raw.stored_provenance["level_of_theory"],
                                    raw.stored_provenance.get("level_of_theory_source", "stored provenance"))
    stored = meta.get("fingerprint_sha256")
    if stored is not None:
        actual = Dataset(z=raw.z, R=raw.R, E=raw.E, F=raw.F).fingerprint()
        if actual != stored:
            raise DatasetError(f"{path}: the arrays z, R, E, F do not match the fingerprint stored in "
                               f"'{OPENMLFF_META_KEY}' (expected {stored[:12]}..., got {actual[:12]}...); the file was altered")


def _split_theory(theory: str) -> tuple[str | None, str | None, str | None]:
    """'MD17 DFT (PBE+vdW-TS); kcal/mol, kcal/mol/A' -> ('MD17 DFT (PBE+vdW-TS)', 'kcal/mol', 'Å')."""
    level, sep, rest = theory.partition(";")
    energy, length = _units_in_text(rest if sep else theory)
    if not sep:
        level = theory
    level = level.strip()
    return (level if level.lower() not in _UNSPECIFIED_UNIT_VALUES else None), energy, length


# --------------------------------------------------------------------------- XYZ


def _read_extxyz(path: Path) -> _RawData:
    import ase.io

    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many kinds for malformed text
        short = _extxyz_short_frame(path)
        if short is not None:
            raise DatasetError(short) from None
        raise DatasetError(f"{path}: cannot be read as extended XYZ ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise DatasetError(f"{path}: holds no frames")
    z = frames[0].numbers.astype(np.int64)
    n_frames, n_atoms = len(frames), len(z)
    R = np.empty((n_frames, n_atoms, 3))
    energies, forces, energy_keys = [], [], set()
    for i, atoms in enumerate(frames):
        if len(atoms) != n_atoms or not np.array_equal(atoms.numbers, z):
            raise DatasetError(f"{path}: frame {i} has atoms {atoms.get_chemical_formula()} ({len(atoms)}) but frame 0 has "
                               f"{frames[0].get_chemical_formula()} ({n_atoms}); field 'species' must list the same "
                               f"atoms in the same order in every frame")
        R[i] = atoms.positions
        results = atoms.calc.results if atoms.calc is not None else {}
        key, energy = _extxyz_energy(atoms, results)
        energy_keys.add(key)
        energies.append(energy)
        forces.append(results.get("forces", atoms.arrays.get("forces")))
    E = _all_or_none(path, energies, "energy (comment line key 'energy' or 'Energy')")
    F = _all_or_none(path, forces, "forces (per-atom property 'forces')")
    energy_key = next(iter(energy_keys - {None}), "energy")
    is_extended = any(frames[0].info) or E is not None or F is not None
    raw = _RawData(format="extxyz" if is_extended else "xyz",
                   fields={"z": "species", "R": "pos", "E": energy_key, "F": "forces"},
                   z=z, R=R, E=E, F=None if F is None else np.asarray(F, dtype=np.float64))
    raw.energy_unit, raw.length_unit = _extxyz_units(path, frames)
    return raw


def _extxyz_short_frame(path: Path) -> str | None:
    """The message for the first frame whose atom lines disagree with its header's atom count, if there is one.

    An (extended) XYZ frame is a count line, a comment line and that many atom lines; a frame with fewer
    makes the next frame's count line an atom line, so the frame is the one before the first count line
    that does not parse where a count is due.
    """
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    i = frame = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0]) if len(lines[i].split()) == 1 else None
        except ValueError:
            n = None
        if n is None:
            return None  # not a count line where one is due: some other malformation
        atom_lines = lines[i + 2:i + 2 + n]
        counted = next((k for k, line in enumerate(atom_lines) if len(line.split()) == 1 and line.strip().isdigit()),
                       len(atom_lines))
        if counted != n:
            return (f"{path}: frame {frame} (line {i + 1}) announces {n} atoms in its header but has {counted} atom "
                    f"lines; expected {n} lines 'symbol x y z ...' after the comment line")
        i += 2 + n
        frame += 1
    return None


def _extxyz_energy(atoms, results: dict) -> tuple[str | None, float | None]:
    if "energy" in results:
        return "energy", float(results["energy"])
    for key in ("energy", "Energy"):
        if key in atoms.info:
            try:
                return key, float(atoms.info[key])
            except (TypeError, ValueError):
                return key, float("nan")
    return None, None


def _all_or_none(path: Path, values: list, what: str) -> np.ndarray | None:
    missing = [i for i, v in enumerate(values) if v is None]
    if len(missing) == len(values):
        return None
    if missing:
        raise DatasetError(f"{path}: frame {missing[0]} has no {what} while other frames have; "
                           f"expected it in every frame or in none ({len(missing)} frames lack it)")
    return np.asarray(values, dtype=np.float64)


def _extxyz_units(path: Path, frames) -> tuple[_Told | None, _Told | None]:
    """Units named on the comment line (`energy_unit=`, `length_unit=`, `units=`); same in every frame."""
    def units_of(info: dict) -> tuple[str | None, str | None]:
        energy = length = None
        if "units" in info:
            energy, length = _units_in_text(str(info["units"]), strict=False)
        if "energy_unit" in info:
            energy = _canonical_unit("energy", str(info["energy_unit"]), f"{path}: comment-line key 'energy_unit'")
        if "length_unit" in info:
            length = _canonical_unit("length", str(info["length_unit"]), f"{path}: comment-line key 'length_unit'")
        return energy, length

    first = units_of(frames[0].info)
    for i, atoms in enumerate(frames[1:], start=1):
        if units_of(atoms.info) != first:
            raise DatasetError(f"{path}: frame {i} names units {units_of(atoms.info)} on its comment line but "
                               f"frame 0 names {first}; expected the same units in every frame")
    energy, length = first
    return (_Told(energy, "comment line") if energy else None, _Told(length, "comment line") if length else None)


def _read_sgdml_xyz(path: Path) -> _RawData:
    """sGDML's plain XYZ: n; a line with only the energy; n lines `symbol x y z fx fy fz`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    symbols0, R, E, F = None, [], [], []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        frame = len(R)
        try:
            n = int(lines[i].strip())
        except ValueError:
            raise DatasetError(f"{path}: line {i + 1}: expected the atom count of frame {frame}, got {lines[i]!r}") from None
        if i + 2 + n > len(lines):
            raise DatasetError(f"{path}: frame {frame} (line {i + 1}) announces {n} atoms but the file ends first")
        if not _is_number(lines[i + 1]):
            raise DatasetError(f"{path}: line {i + 2}: expected the energy of frame {frame} alone on the "
                               f"comment line (sGDML XYZ), got {lines[i + 1]!r}")
        E.append(float(lines[i + 1].strip().strip("[]")))
        syms, pos, frc = [], [], []
        for k in range(i + 2, i + 2 + n):
            cols = lines[k].split()
            if len(cols) != 7:
                raise DatasetError(f"{path}: line {k + 1}: expected 7 columns 'symbol x y z fx fy fz', got {len(cols)}")
            try:
                numbers = [float(c) for c in cols[1:]]
            except ValueError:
                raise DatasetError(f"{path}: line {k + 1}: expected numbers in columns 2-7, got {lines[k]!r}") from None
            syms.append(cols[0])
            pos.append(numbers[:3])
            frc.append(numbers[3:])
        if symbols0 is None:
            symbols0 = syms
        elif syms != symbols0:
            raise DatasetError(f"{path}: frame {frame} (line {i + 1}) lists atoms {syms}, frame 0 {symbols0}; "
                               f"expected the same atoms in the same order in every frame")
        R.append(pos)
        F.append(frc)
        i += 2 + n
    if symbols0 is None:
        raise DatasetError(f"{path}: holds no frames")
    try:
        z = np.array([elements.atomic_number(s) for s in symbols0], dtype=np.int64)
    except ValueError as exc:
        raise DatasetError(f"{path}: column 'symbol': {exc}") from None
    return _RawData(format="sgdml-xyz", fields={"z": "symbol", "R": "x y z", "E": "energy line", "F": "fx fy fz"},
                    z=z, R=np.asarray(R, dtype=np.float64), E=np.asarray(E, dtype=np.float64),
                    F=np.asarray(F, dtype=np.float64),
                    convention=("kcal/mol", "Å", "sGDML XYZ convention (kcal/mol, Å)"))


# --------------------------------------------------------------------------- checks and units


def _check_raw_arrays(path: Path, raw: _RawData) -> None:
    """Shapes and finiteness in the file's own field names (before any conversion)."""
    f = raw.fields
    z = np.asarray(raw.z)
    if z.ndim != 1 or z.size == 0:
        raise DatasetError(f"{path}: field '{f['z']}' has shape {z.shape}; expected a non-empty 1-D array of atomic numbers")
    if raw.R.ndim == 2:
        raw.R = raw.R[None]
    if raw.R.ndim != 3 or raw.R.shape[-1] != 3:
        raise DatasetError(f"{path}: field '{f['R']}' has shape {raw.R.shape}; expected (n_frames, n_atoms, 3)")
    n_frames, n_atoms = raw.R.shape[:2]
    if z.size != n_atoms:
        raise DatasetError(f"{path}: field '{f['z']}' holds {z.size} atomic numbers but '{f['R']}' has {n_atoms} atoms "
                           f"per frame (shape {raw.R.shape}); expected one atomic number per atom")
    try:
        elements.check_atomic_numbers(z)
    except ValueError as exc:
        raise DatasetError(f"{path}: field '{f['z']}': {exc}") from None
    raw.z = z.astype(np.int64)
    if raw.E is not None and raw.E.size != n_frames:
        raise DatasetError(f"{path}: field '{f['E']}' has shape {raw.E.shape}; expected one energy per frame ({n_frames})")
    if raw.F is not None and raw.F.shape != raw.R.shape:
        raise DatasetError(f"{path}: field '{f['F']}' has shape {raw.F.shape}; expected {raw.R.shape} like '{f['R']}'")
    for role, arr in (("R", raw.R), ("E", raw.E), ("F", raw.F)):
        if arr is None:
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            frame = int(np.argwhere(bad.reshape(n_frames, -1))[0][0])
            raise DatasetError(f"{path}: field '{f[role]}' has {int(bad.sum())} non-finite values (NaN or inf), "
                               f"the first in frame {frame}; expected finite numbers")


def _resolve_units(path: Path, raw: _RawData, sidecar: _Sidecar, caller_energy: _Told | None,
                   caller_length: _Told | None) -> tuple[_Told | None, _Told]:
    convention_energy = convention_length = None
    if raw.convention:
        convention_energy = _Told(raw.convention[0], raw.convention[2])
        convention_length = _Told(raw.convention[1], raw.convention[2])
    length = (caller_length or raw.length_unit or sidecar.length or convention_length
              or _Told("Å", "default: the file names no length unit"))
    if raw.E is None and raw.F is None:
        return None, length
    energy = caller_energy or raw.energy_unit or sidecar.energy
    if energy is not None:
        return energy, length
    how_to_name = (f"name it: load_dataset({str(path)!r}, energy_unit=...) or a sidecar "
                   f"{path.name}.units.json such as {{\"energy\": \"eV\", \"length\": \"Å\"}}")
    if raw.E is None:
        if convention_energy:
            return convention_energy, length
        raise DatasetError(f"{path}: the energy unit of field '{raw.fields['F']}' cannot be told (the file names "
                           f"none and has no energies to infer it from); {how_to_name}")
    inferred, explanation = infer_energy_unit(raw.z, raw.E)
    if convention_energy:
        if inferred not in (None, convention_energy.value):
            raise DatasetError(f"{path}: field '{raw.fields['E']}': the {convention_energy.source} says "
                               f"{convention_energy.value}, but the total energies look like {inferred} "
                               f"({explanation}); {how_to_name}")
        return convention_energy, length
    if inferred is None:
        raise DatasetError(f"{path}: the energy unit of field '{raw.fields['E']}' cannot be told: the file names "
                           f"none and {explanation}; {how_to_name}")
    warnings.warn(f"{path}: energy unit {inferred} inferred from the total energy ({explanation}); "
                  f"pass energy_unit= to state it", UnitInferenceWarning, stacklevel=3)
    return _Told(inferred, INFERRED_SOURCE), length


def _read_sidecar(path: Path) -> _Sidecar:
    """`<file>.units.json`: {"energy": "kcal/mol", "length": "Å"}, optionally "level_of_theory" and notes."""
    sidecar = path.with_name(path.name + ".units.json")
    if not sidecar.exists():
        return _Sidecar()
    try:
        doc = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{sidecar}: not valid JSON ({exc}); expected {{\"energy\": \"eV\", \"length\": \"Å\"}}") from None
    if not isinstance(doc, dict) or not {"energy", "length"} & set(doc):
        raise DatasetError(f"{sidecar}: expected an object with keys 'energy' and/or 'length', got {doc!r}")
    source = f"sidecar {sidecar.name}"
    told = {kind: _Told(_canonical_unit(kind, str(doc.pop(kind)), f"{sidecar}: key '{kind}'"), source)
            for kind in ("energy", "length") if kind in doc}
    theory = doc.pop("level_of_theory", None)
    return _Sidecar(energy=told.get("energy"), length=told.get("length"),
                    level_of_theory=_Told(str(theory), source) if theory else None, notes=doc)


def _check_length_scale(path: Path, raw: _RawData, R_angstrom: np.ndarray, length: _Told) -> None:
    """Refuse positions whose shortest bond is implausible in Å (likely nm or Bohr)."""
    pos = R_angstrom[0]
    if len(pos) < 2:
        return
    k = min(len(pos), 9)
    dist, idx = cKDTree(pos).query(pos, k=k)
    radii = elements.covalent_radii(raw.z)
    ratios = dist[:, 1:] / (radii[:, None] + radii[idx[:, 1:]])
    i, j = np.unravel_index(np.argmin(ratios), ratios.shape)
    ratio, d, partner = float(ratios[i, j]), float(dist[i, j + 1]), int(idx[i, j + 1])
    lo, hi = _BOND_RATIO_WINDOW
    if lo <= ratio <= hi:
        return
    looks_like = [u for u, size in (("nm", NM_IN_ANGSTROM), ("Bohr", BOHR_IN_ANGSTROM))
                  if lo <= ratio * size / length_to_angstrom(length.value) <= hi]
    guess = f"; the numbers look like {looks_like[0]}" if looks_like else ""
    pair = f"atoms {i} ({elements.symbol(raw.z[i])}) and {partner} ({elements.symbol(raw.z[partner])})"
    raise DatasetError(
        f"{path}: field '{raw.fields['R']}': the shortest distance in frame 0 is {d:.4g} Å when read as "
        f"{length.value} ({length.source}), between {pair}: {ratio:.3g} times their covalent radii sum, where a "
        f"molecule in Å gives {lo}-{hi}{guess}; name the length unit: load_dataset(..., length_unit=...)")


def _canonical_unit(kind: str, value: str, where: str) -> str:
    convert = canonical_energy_unit if kind == "energy" else canonical_length_unit
    try:
        return convert(value)
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from None


def _units_in_text(text: str, strict: bool = True) -> tuple[str | None, str | None]:
    """Energy and length units named in free text ('kcal/mol, kcal/mol/A' -> ('kcal/mol', 'Å')).

    A force unit 'E/L' names both. Returns None for a kind that is named not at all or in two
    different ways. strict skips one- and two-letter aliases ('a', 'au') that ordinary words use.
    """
    energies, lengths = set(), set()
    for token in re.split(r"[\s,;()\[\]]+", text):
        token = token.strip("\"'")
        if not token or (strict and token.lower() in _AMBIGUOUS_IN_TEXT):
            continue
        energy, length = _unit_token(token)
        if energy:
            energies.add(energy)
        if length:
            lengths.add(length)
    return (energies.pop() if len(energies) == 1 else None), (lengths.pop() if len(lengths) == 1 else None)


def _unit_token(token: str) -> tuple[str | None, str | None]:
    for convert, slot in ((canonical_energy_unit, 0), (canonical_length_unit, 1)):
        try:
            unit = convert(token)
        except ValueError:
            continue
        return (unit, None) if slot == 0 else (None, unit)
    energy, sep, length = token.rpartition("/")
    if sep:
        try:
            return canonical_energy_unit(energy), canonical_length_unit(length)
        except ValueError:
            pass
    return None, None


# --------------------------------------------------------------------------- provenance


_ORIGIN_KEYS = ("source_file", "format", "energy_unit_in_file", "energy_unit_source", "length_unit_in_file",
                "length_unit_source")


def _provenance(path: Path, raw: _RawData, sidecar: _Sidecar, energy: _Told | None, length: _Told) -> dict:
    """Where the numbers came from; keys named *_in_file are the file's units (the Dataset is Å/eV)."""
    prov = dict(raw.stored_provenance)
    first_origin = {k: prov[k] for k in _ORIGIN_KEYS if k in prov}
    if first_origin:  # re-reading an openmlff npz: keep where its numbers first came from
        prov.setdefault("origin", first_origin)
    prov.update({
        "source_file": str(path.resolve()),
        "format": raw.format,
        "n_frames": int(raw.R.shape[0]),
        "energy_unit_in_file": energy.value if energy else None,
        "energy_unit_source": energy.source if energy else "no energy or force labels",
        "length_unit_in_file": length.value,
        "length_unit_source": length.source,
    })
    if energy:
        prov["force_unit_in_file"] = f"{energy.value}/{length.value}"
    theory = raw.level_of_theory or sidecar.level_of_theory or _theory_from_file_name(path)
    if theory:
        prov["level_of_theory"] = theory.value
        prov["level_of_theory_source"] = theory.source
    if sidecar.notes:
        prov["sidecar_notes"] = sidecar.notes
    return prov


def _theory_from_file_name(path: Path) -> _Told | None:
    stem = path.name.lower()
    for pattern, level in _THEORY_BY_FILE_NAME:
        if pattern.search(stem):
            return _Told(level, "file name")
    return None
