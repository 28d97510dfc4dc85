"""Units and conversions shared by every layer.

Inside openmlff, datasets and models use Å and eV (forces in eV/Å). Exported models speak
OpenMM's units: nm and kJ/mol. Reports print forces in kcal/mol/Å, the unit of the MD17
literature. Conversion factors follow CODATA 2018.
"""

from __future__ import annotations

from .errors import InputError

EV_IN_KJ_PER_MOL = 96.48533212331002  # 1 eV = 96.485 kJ/mol (e * N_A / 1000)
KCAL_IN_KJ = 4.184  # thermochemical calorie
EV_IN_KCAL_PER_MOL = EV_IN_KJ_PER_MOL / KCAL_IN_KJ  # 23.0605...
HARTREE_IN_EV = 27.211386245988
BOHR_IN_ANGSTROM = 0.529177210903
NM_IN_ANGSTROM = 10.0
FS_IN_PS = 1.0e-3
FS_IN_NS = 1.0e-6
SECONDS_PER_MINUTE = 60.0
SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
#: Boltzmann constant in Hartree/K with the digits tblite and xtb use (mctc_constants; CODATA 2018 gives
#: 3.1668116e-6), so that an electronic temperature in K means what it means in tblite.
BOLTZMANN_HARTREE_PER_K = 3.166808578545117e-6

#: Internal units of every Dataset and model in openmlff.
INTERNAL_ENERGY_UNIT = "eV"
INTERNAL_LENGTH_UNIT = "Å"
INTERNAL_FORCE_UNIT = "eV/Å"
#: Units in which reports print force metrics by default.
REPORT_FORCE_UNIT = "kcal/mol/Å"
REPORT_ENERGY_UNIT = "kcal/mol"

# Size of one unit in the internal unit (eV or Å), keyed by canonical name.
_ENERGY_IN_EV = {
    "eV": 1.0,
    "meV": 1.0e-3,
    "kcal/mol": 1.0 / EV_IN_KCAL_PER_MOL,
    "kJ/mol": 1.0 / EV_IN_KJ_PER_MOL,
    "Hartree": HARTREE_IN_EV,
}
_LENGTH_IN_ANGSTROM = {"Å": 1.0, "nm": NM_IN_ANGSTROM, "Bohr": BOHR_IN_ANGSTROM}

_ENERGY_ALIASES = {
    "ev": "eV", "electronvolt": "eV", "mev": "meV",
    "kcal/mol": "kcal/mol", "kcal_mol": "kcal/mol", "kcal mol-1": "kcal/mol", "kcalmol": "kcal/mol",
    "kj/mol": "kJ/mol", "kj_mol": "kJ/mol", "kj mol-1": "kJ/mol",
    "hartree": "Hartree", "ha": "Hartree", "eh": "Hartree", "au": "Hartree",
}
_LENGTH_ALIASES = {
    "å": "Å", "a": "Å", "ang": "Å", "angstrom": "Å", "ångström": "Å",
    "nm": "nm", "nanometer": "nm", "nanometre": "nm",
    "bohr": "Bohr", "a0": "Bohr", "au": "Bohr",
}


def canonical_energy_unit(name: str) -> str:
    """Canonical spelling of an energy unit ('kcal_mol' -> 'kcal/mol'); ValueError if unknown."""
    key = name.strip().lower()
    if key not in _ENERGY_ALIASES:
        raise InputError(f"unknown energy unit {name!r}; expected one of {sorted(_ENERGY_IN_EV)}")
    return _ENERGY_ALIASES[key]


def canonical_length_unit(name: str) -> str:
    """Canonical spelling of a length unit ('angstrom' -> 'Å'); ValueError if unknown."""
    key = name.strip().lower()
    if key not in _LENGTH_ALIASES:
        raise InputError(f"unknown length unit {name!r}; expected one of {sorted(_LENGTH_IN_ANGSTROM)}")
    return _LENGTH_ALIASES[key]


def energy_to_ev(unit: str) -> float:
    """Factor that converts energies given in `unit` to eV."""
    return _ENERGY_IN_EV[canonical_energy_unit(unit)]


def length_to_angstrom(unit: str) -> float:
    """Factor that converts lengths given in `unit` to Å."""
    return _LENGTH_IN_ANGSTROM[canonical_length_unit(unit)]


def force_to_ev_per_angstrom(energy_unit: str, length_unit: str) -> float:
    """Factor that converts forces in energy_unit/length_unit to eV/Å."""
    return energy_to_ev(energy_unit) / length_to_angstrom(length_unit)


def ev_to(unit: str) -> float:
    """Factor that converts eV to `unit` (e.g. ev_to('kcal/mol') = 23.06)."""
    return 1.0 / energy_to_ev(unit)


def force_from_ev_per_angstrom(unit: str) -> float:
    """Factor that converts eV/Å to a force unit written 'ENERGY/LENGTH' (e.g. 'kcal/mol/Å')."""
    energy, _, length = unit.rpartition("/")
    return ev_to(energy) * length_to_angstrom(length)
