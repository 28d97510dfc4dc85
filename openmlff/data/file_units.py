"""Decide a dataset file's units (caller > file > sidecar > format convention > inference) and check them.

Kept apart from the format readers so the unit rules live in one place; see docs/architecture.md "Units".
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..core import elements
from ..core.units import (
    BOHR_IN_ANGSTROM, HARTREE_IN_EV, NM_IN_ANGSTROM, canonical_energy_unit, canonical_length_unit, energy_to_ev, length_to_angstrom,
)
from .dataset import DatasetError


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
UNSPECIFIED_UNIT_VALUES = {"", "u", "unknown", "none"}


@dataclass
class Told:
    """A value someone told us (a unit, a level of theory) and where it came from."""

    value: str
    source: str


@dataclass
class Sidecar:
    """What a `<file>.units.json` says: units, level of theory, other notes kept in provenance."""

    energy: Told | None = None
    length: Told | None = None
    level_of_theory: Told | None = None
    notes: dict = field(default_factory=dict)


@dataclass
class RawFile:
    """Arrays as stored in the file (file units) and what the file says about itself: what a format reader
    returns and what the unit decision reads."""

    format: str
    fields: dict  # role ('z', 'R', 'E', 'F') -> field name in the file, for error messages
    z: np.ndarray
    R: np.ndarray
    E: np.ndarray | None
    F: np.ndarray | None
    energy_unit: Told | None = None
    length_unit: Told | None = None
    convention: tuple[str, str, str] | None = None  # (energy unit, length unit, source text)
    name: str | None = None
    level_of_theory: Told | None = None
    stored_provenance: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- deciding the units


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


def resolve_units(path: Path, raw: RawFile, sidecar: Sidecar, caller_energy: Told | None,
                  caller_length: Told | None) -> tuple[Told | None, Told]:
    convention_energy = convention_length = None
    if raw.convention:
        convention_energy = Told(raw.convention[0], raw.convention[2])
        convention_length = Told(raw.convention[1], raw.convention[2])
    length = (caller_length or raw.length_unit or sidecar.length or convention_length
              or Told("Å", "default: the file names no length unit"))
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
    return Told(inferred, INFERRED_SOURCE), length


def read_sidecar(path: Path) -> Sidecar:
    """`<file>.units.json`: {"energy": "kcal/mol", "length": "Å"}, optionally "level_of_theory" and notes."""
    sidecar = path.with_name(path.name + ".units.json")
    if not sidecar.exists():
        return Sidecar()
    try:
        doc = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{sidecar}: not valid JSON ({exc}); expected {{\"energy\": \"eV\", \"length\": \"Å\"}}") from None
    if not isinstance(doc, dict) or not {"energy", "length"} & set(doc):
        raise DatasetError(f"{sidecar}: expected an object with keys 'energy' and/or 'length', got {doc!r}")
    source = f"sidecar {sidecar.name}"
    told = {kind: Told(canonical_unit(kind, str(doc.pop(kind)), f"{sidecar}: key '{kind}'"), source)
            for kind in ("energy", "length") if kind in doc}
    theory = doc.pop("level_of_theory", None)
    return Sidecar(energy=told.get("energy"), length=told.get("length"),
                   level_of_theory=Told(str(theory), source) if theory else None, notes=doc)


def check_length_scale(path: Path, raw: RawFile, R_angstrom: np.ndarray, length: Told) -> None:
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


def canonical_unit(kind: str, value: str, where: str) -> str:
    convert = canonical_energy_unit if kind == "energy" else canonical_length_unit
    try:
        return convert(value)
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from None


def units_in_text(text: str, strict: bool = True) -> tuple[str | None, str | None]:
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


def split_theory(theory: str) -> tuple[str | None, str | None, str | None]:
    """'MD17 DFT (PBE+vdW-TS); kcal/mol, kcal/mol/A' -> ('MD17 DFT (PBE+vdW-TS)', 'kcal/mol', 'Å')."""
    level, sep, rest = theory.partition(";")
    energy, length = units_in_text(rest if sep else theory)
    if not sep:
        level = theory
    level = level.strip()
    return (level if level.lower() not in UNSPECIFIED_UNIT_VALUES else None), energy, length


# --------------------------------------------------------------------------- provenance


_ORIGIN_KEYS = ("source_file", "format", "energy_unit_in_file", "energy_unit_source", "length_unit_in_file",
                "length_unit_source")


def provenance(path: Path, raw: RawFile, sidecar: Sidecar, energy: Told | None, length: Told) -> dict:
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


def _theory_from_file_name(path: Path) -> Told | None:
    stem = path.name.lower()
    for pattern, level in _THEORY_BY_FILE_NAME:
        if pattern.search(stem):
            return Told(level, "file name")
    return None
