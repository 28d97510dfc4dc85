"""Write a Dataset to disk: openmlff's own npz, the MD17 (sGDML) npz layout, or extended XYZ.

Every writer goes through `atomic_write` (temporary file in the same folder, then os.replace), so
a reader never sees a half-written file. Numbers keep full float64 precision in every format, so
that `load_dataset(write(ds))` gives back the same numbers (up to the unit conversion's rounding).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

import numpy as np

from ..core import elements
from ..core.atomic_io import atomic_write_stream
from ..core.units import INTERNAL_ENERGY_UNIT, INTERNAL_FORCE_UNIT, INTERNAL_LENGTH_UNIT, canonical_energy_unit, ev_to
from .dataset import Dataset, DatasetError, provenance_json

#: Key of the JSON document (units, name, provenance) inside openmlff's npz.
OPENMLFF_META_KEY = "openmlff_meta"
#: Value of meta["format"] that marks openmlff's own npz.
OPENMLFF_FORMAT = "openmlff-dataset"
#: Version of that layout; a reader refuses files with a higher version.
OPENMLFF_FORMAT_VERSION = 1
#: Length unit name written into files: ASCII, understood by openmlff.core.units and by sGDML ("Ang").
_ANGSTROM_ASCII = "Ang"


def save_dataset(ds: Dataset, path) -> Path:
    """Write `ds` as openmlff npz: z, R, E, F in Å/eV (float64) plus JSON `openmlff_meta`.

    The meta holds the format version, the units, the name, the provenance and the SHA-256
    fingerprint of the numbers (checked when the file is read back). E and F are left out of
    the file when the dataset has no labels.
    """
    ds.validate()
    meta = {
        "format": OPENMLFF_FORMAT,
        "format_version": OPENMLFF_FORMAT_VERSION,
        "units": {"energy": INTERNAL_ENERGY_UNIT, "length": INTERNAL_LENGTH_UNIT, "forces": INTERNAL_FORCE_UNIT},
        "name": ds.name,
        "n_frames": ds.n_frames,
        "fingerprint_sha256": ds.fingerprint(),
        "provenance": json.loads(provenance_json(ds.provenance)),
    }
    arrays = {"z": ds.z.astype(np.int64), "R": ds.R.astype(np.float64)}
    if ds.E is not None:
        arrays["E"] = ds.E.astype(np.float64)
    if ds.F is not None:
        arrays["F"] = ds.F.astype(np.float64)
    arrays[OPENMLFF_META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    return atomic_write_stream(path, lambda fh: np.savez(fh, **arrays))


def write_md17_npz(ds: Dataset, path, energy_unit: str = "kcal/mol") -> Path:
    """Write `ds` in the MD17/sGDML npz layout: z, R (Å), E (n, 1) and F in `energy_unit` (per Å).

    Adds the string keys sGDML writes (`e_unit`, `r_unit`, `name`, `theory`, `type`), so both
    sGDML and our reader know the units without relying on the kcal/mol convention.
    """
    _require_labels(ds, path, "MD17 npz")
    unit = canonical_energy_unit(energy_unit)
    factor = ev_to(unit)
    theory = str(ds.provenance.get("level_of_theory", "unknown"))
    arrays = {
        "type": np.array("d"),
        "name": np.array(ds.name),
        "theory": np.array(theory),
        "z": ds.z.astype(np.uint8),
        "R": ds.R.astype(np.float64),
        "E": (ds.E * factor).reshape(-1, 1),
        "F": ds.F * factor,
        "e_unit": np.array(unit),
        "r_unit": np.array(_ANGSTROM_ASCII),
    }
    return atomic_write_stream(path, lambda fh: np.savez(fh, **arrays))


def write_extxyz(ds: Dataset, path, energy_unit: str = "eV") -> Path:
    """Write `ds` as extended XYZ: positions in Å, energy and forces in `energy_unit` (per Å).

    The comment line carries `energy_unit=` and `length_unit=` so that the reader needs no
    guess; numbers are written with repr(), the shortest text that reads back to the same float64.
    """
    ds.validate()
    unit = canonical_energy_unit(energy_unit)
    factor = ev_to(unit)
    syms = elements.symbols(ds.z)
    has_e, has_f = ds.E is not None, ds.F is not None
    props = "species:S:1:pos:R:3" + (":forces:R:3" if has_f else "")
    energies = None if not has_e else ds.E * factor
    forces = None if not has_f else ds.F * factor

    def write(fh: IO) -> None:
        for i in range(ds.n_frames):
            comment = [f"Properties={props}"]
            if has_e:
                comment.append(f"energy={float(energies[i])!r}")
            comment += [f"energy_unit={unit}", f"length_unit={_ANGSTROM_ASCII}", 'pbc="F F F"']
            lines = [str(ds.n_atoms), " ".join(comment)]
            for a in range(ds.n_atoms):
                cols = [syms[a], *(repr(float(x)) for x in ds.R[i, a])]
                if has_f:
                    cols += [repr(float(x)) for x in forces[i, a]]
                lines.append(" ".join(cols))
            fh.write("\n".join(lines) + "\n")

    return atomic_write_stream(path, write, text=True)


def _require_labels(ds: Dataset, path, what: str) -> None:
    ds.validate()
    if not ds.has_labels:
        raise DatasetError(f"{path}: the {what} layout needs energies 'E' and forces 'F'; dataset {ds.name!r} has none")
