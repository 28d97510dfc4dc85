"""Read MLFF dataset files (MD17/rMD17/MD22/openmlff npz, extended XYZ, sGDML XYZ) into a Dataset in Å and eV.

Each format reader returns the arrays as stored; file_units.py decides their units. See docs/architecture.md "Dataset".
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import elements
from ..core.units import canonical_energy_unit, canonical_length_unit, energy_to_ev, length_to_angstrom
from .dataset import Dataset, DatasetError, ensure_path
from .file_units import (
    RawFile,
    UNSPECIFIED_UNIT_VALUES,
    Told,
    UnitInferenceWarning,
    canonical_unit,
    check_length_scale,
    infer_energy_unit,
    provenance,
    read_sidecar,
    resolve_units,
    split_theory,
    units_in_text,
)
from .writers import OPENMLFF_FORMAT, OPENMLFF_FORMAT_VERSION, OPENMLFF_META_KEY

#: UnitInferenceWarning and infer_energy_unit moved to file_units.py; re-exported so imports from here keep working.
__all__ = ["load_dataset", "dataset_info", "format_dataset_info", "infer_energy_unit", "UnitInferenceWarning"]


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
    caller_energy = Told(canonical_energy_unit(energy_unit), "caller") if energy_unit else None
    caller_length = Told(canonical_length_unit(length_unit), "caller") if length_unit else None
    raw = _read_raw(path)
    _check_raw_arrays(path, raw)
    sidecar = read_sidecar(path)
    e_told, l_told = resolve_units(path, raw, sidecar, caller_energy, caller_length)
    length_factor = length_to_angstrom(l_told.value)
    energy_factor = energy_to_ev(e_told.value) if e_told else 1.0
    R = raw.R * length_factor
    E = None if raw.E is None else raw.E.reshape(-1) * energy_factor
    F = None if raw.F is None else raw.F * (energy_factor / length_factor)
    if caller_length is None:
        check_length_scale(path, raw, R, l_told)
    ds = Dataset(z=raw.z, R=R, E=E, F=F, name=name or raw.name or path.stem,
                 provenance=provenance(path, raw, sidecar, e_told, l_told))
    return ds.validate(str(path))


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


def _read_raw(path: Path) -> RawFile:
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


def _read_npz(path: Path) -> RawFile:
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
        raw = RawFile(
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


def _read_sgdml_string_keys(path: Path, npz, raw: RawFile) -> None:
    """Units from sGDML's `e_unit`/`r_unit`, else from a `theory` string; name and theory too."""
    raw.name = _npz_text(npz, "name", path) or None
    theory = _npz_text(npz, "theory", path)
    theory_energy = theory_length = None
    if theory:
        level, theory_energy, theory_length = split_theory(theory)
        if level:
            raw.level_of_theory = Told(level, "'theory' field")
    for key, kind in (("e_unit", "energy"), ("r_unit", "length")):
        value = _npz_text(npz, key, path)
        if value is None or value.strip().lower() in UNSPECIFIED_UNIT_VALUES:
            continue
        told = Told(canonical_unit(kind, value, f"{path}: field '{key}'"), f"'{key}' field")
        setattr(raw, f"{kind}_unit", told)
    if raw.energy_unit is None and theory_energy:
        raw.energy_unit = Told(theory_energy, "'theory' field")
    if raw.length_unit is None and theory_length:
        raw.length_unit = Told(theory_length, "'theory' field")


def _read_openmlff_meta(path: Path, npz, raw: RawFile) -> None:
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
        told = Told(canonical_unit(kind, units[kind], f"{path}: field '{OPENMLFF_META_KEY}' units.{kind}"),
                    f"'{OPENMLFF_META_KEY}' field")
        setattr(raw, f"{kind}_unit", told)
    raw.name = meta.get("name")
    raw.stored_provenance = dict(meta.get("provenance") or {})
    if raw.stored_provenance.get("level_of_theory"):
        raw.level_of_theory = Told(raw.stored_provenance["level_of_theory"],
                                   raw.stored_provenance.get("level_of_theory_source", "stored provenance"))
    stored = meta.get("fingerprint_sha256")
    if stored is not None:
        actual = Dataset(z=raw.z, R=raw.R, E=raw.E, F=raw.F).fingerprint()
        if actual != stored:
            raise DatasetError(f"{path}: the arrays z, R, E, F do not match the fingerprint stored in "
                               f"'{OPENMLFF_META_KEY}' (expected {stored[:12]}..., got {actual[:12]}...); the file was altered")


# --------------------------------------------------------------------------- XYZ


def _read_extxyz(path: Path) -> RawFile:
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
            if len(atoms) != n_atoms:
                what = f"{len(atoms)} atoms ({atoms.get_chemical_formula()}) where frame 0 has {n_atoms}"
            else:  # the same formula in another order: name the first atom that differs
                k = int(np.flatnonzero(atoms.numbers != z)[0])
                what = (f"atom {k} {elements.symbol(int(atoms.numbers[k]))} where frame 0 has "
                        f"{elements.symbol(int(z[k]))} (the same atoms in another order)")
            raise DatasetError(f"{path}: frame {i} has {what}; field 'species' must list the same atoms in the same "
                               "order in every frame")
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
    raw = RawFile(format="extxyz" if is_extended else "xyz",
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


def _extxyz_units(path: Path, frames) -> tuple[Told | None, Told | None]:
    """Units named on the comment line (`energy_unit=`, `length_unit=`, `units=`); same in every frame."""
    def units_of(info: dict) -> tuple[str | None, str | None]:
        energy = length = None
        if "units" in info:
            energy, length = units_in_text(str(info["units"]), strict=False)
        if "energy_unit" in info:
            energy = canonical_unit("energy", str(info["energy_unit"]), f"{path}: comment-line key 'energy_unit'")
        if "length_unit" in info:
            length = canonical_unit("length", str(info["length_unit"]), f"{path}: comment-line key 'length_unit'")
        return energy, length

    first = units_of(frames[0].info)
    for i, atoms in enumerate(frames[1:], start=1):
        if units_of(atoms.info) != first:
            raise DatasetError(f"{path}: frame {i} names units {units_of(atoms.info)} on its comment line but "
                               f"frame 0 names {first}; expected the same units in every frame")
    energy, length = first
    return (Told(energy, "comment line") if energy else None, Told(length, "comment line") if length else None)


def _read_sgdml_xyz(path: Path) -> RawFile:
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
    return RawFile(format="sgdml-xyz", fields={"z": "symbol", "R": "x y z", "E": "energy line", "F": "fx fy fz"},
                    z=z, R=np.asarray(R, dtype=np.float64), E=np.asarray(E, dtype=np.float64),
                    F=np.asarray(F, dtype=np.float64),
                    convention=("kcal/mol", "Å", "sGDML XYZ convention (kcal/mol, Å)"))


# --------------------------------------------------------------------------- checks


def _check_raw_arrays(path: Path, raw: RawFile) -> None:
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
    if n_frames == 0:
        raise DatasetError(f"{path}: field '{f['R']}' holds no frames (shape {raw.R.shape}); expected at least one")
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
