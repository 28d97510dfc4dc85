"""Built-in molecules and structure files: atoms, positions and an OpenMM topology, by name or by path.

Shipped structures (openmlff/resources/structures/, listed in structures.json):

* ``aspirin`` (21 atoms, neutral): the sGDML aspirin geometry in MD17 atom order, one residue
  ``AIN`` (the PDB ligand code of aspirin), atoms named element + count (C1, ..., O4, H1, ...),
  bonds from covalent radii (openmlff.core.elements.find_bonds) written as CONECT records.
* ``ac-ala3-nhme`` (42 atoms, neutral): frame 0 of the MD22 Ac-Ala3-NHMe data in MD22 atom
  order. The residues ACE ALA ALA ALA NME and standard PDB/Amber atom names are assigned by
  walking the bond graph from the acetyl cap along the amide bonds
  (`assign_capped_peptide`), so mdtraj finds 3 phi and 3 psi dihedrals and OpenMM's amber14
  templates match it.
* ``chignolin`` (166 atoms, charge -2): CLN025 (YYDPETGTWY), built by `build_chignolin` from the
  5AWL crystal structure (wwPDB 5AWL, CC0; heavy atoms only) with OpenMM's own tools:
  ``PDBFile`` reads it, ``Modeller.deleteWater()`` drops the 12 crystal waters, and
  ``Modeller.addHydrogens(ForceField("amber14-all.xml"), pH=7.0)`` protonates it: zwitterionic
  termini (NH3+ on Tyr1, the crystal's OXT on Tyr10 as COO-), Asp3 and Glu5 deprotonated, the
  rest neutral (the random start of the hydrogens is seeded, so the build repeats exactly).
  The net charge, -2 e, is the sum of amber14's nonbonded charges (`amber14_net_charge`).

`write_builtin_structures()` regenerates every shipped file from the source files kept beside
them (resources/structures/sources/: aspirin.xyz, Ac-Ala3-NHMe.xyz, cln025_5awl_noH.pdb, copies
of the project's shared data), so the package reads nothing outside itself.

Positions are stored in PDB files with 0.001 Å precision, atom order is kept exactly.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core import elements
from ..core.errors import InputError
from ..core.units import NM_IN_ANGSTROM

if TYPE_CHECKING:
    import openmm.app

#: Folder of the shipped structure files (inside the package: nothing is read from outside it).
STRUCTURES_DIR = Path(__file__).resolve().parent.parent / "resources" / "structures"
INDEX_NAME = "structures.json"


@dataclass
class Structure:
    """One molecule: atomic numbers, positions in Å, an OpenMM Topology, total charge and spin.

    `source` says where the numbers came from (file, database entry, how it was built).
    """

    name: str
    atomic_numbers: np.ndarray
    positions_angstrom: np.ndarray
    topology: openmm.app.Topology  # OpenMM is imported where a topology is built
    charge: int = 0
    multiplicity: int = 1
    source: str = ""
    description: str = ""
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64)
        self.positions_angstrom = np.asarray(self.positions_angstrom, dtype=np.float64)
        if self.positions_angstrom.shape != (self.atomic_numbers.size, 3):
            raise InputError(f"structure {self.name!r}: positions have shape {self.positions_angstrom.shape}, "
                             f"expected ({self.atomic_numbers.size}, 3)")
        if self.topology.getNumAtoms() != self.atomic_numbers.size:
            raise InputError(f"structure {self.name!r}: topology has {self.topology.getNumAtoms()} atoms, "
                             f"positions {self.atomic_numbers.size}")

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.size)

    def openmm_positions(self):
        """Positions as an OpenMM Quantity in nm, for Simulation.context.setPositions."""
        from openmm import unit

        return unit.Quantity(self.positions_angstrom / NM_IN_ANGSTROM, unit.nanometer)

    def bonds(self) -> np.ndarray:
        """(n_bonds, 2) atom indices of the topology's bonds, i < j, sorted."""
        pairs = sorted(tuple(sorted((b[0].index, b[1].index))) for b in self.topology.bonds())
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def to_mdtraj(self):
        """A one-frame mdtraj.Trajectory of this structure."""
        import mdtraj

        top = mdtraj.Topology.from_openmm(self.topology)
        return mdtraj.Trajectory(self.positions_angstrom[None] / NM_IN_ANGSTROM, top)


def list_structures() -> list[str]:
    """Names of the shipped structures, for `load_structure(name)`."""
    return sorted(_index())


def load_structure(name_or_path, charge: int | None = None, multiplicity: int | None = None) -> Structure:
    """A shipped structure by name ('aspirin', 'ac-ala3-nhme', 'chignolin') or a PDB/mmCIF/XYZ file.

    Files have no reliable charge: it is 0 unless `charge` says otherwise (a shipped structure
    knows its own; passing `charge` overrides it). XYZ files get one residue with bonds from
    covalent radii.
    """
    index = _index()
    key = str(name_or_path).strip().lower()
    if key in index:
        entry = index[key]
        structure = read_structure_file(_resource_path(entry["file"]), name=key)
        structure.charge = int(entry["charge"])
        structure.multiplicity = int(entry.get("multiplicity", 1))
        structure.source = entry["source"]
        structure.description = entry["description"]
        structure.provenance = {"structure": key, "file": entry["file"], "source": entry["source"]}
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise FileNotFoundError(
                f"{name_or_path!r} is neither a built-in structure ({', '.join(list_structures())}) nor an existing file")
        structure = read_structure_file(path)
    if charge is not None:
        structure.charge = int(charge)
    if multiplicity is not None:
        structure.multiplicity = int(multiplicity)
    return structure


def read_structure_file(path, name: str | None = None) -> Structure:
    """Read a .pdb, .cif/.pdbx or .xyz file (first model/frame) into a Structure with charge 0."""
    from openmm import app, unit

    path = Path(path)
    suffix = path.suffix.lower()
    name = name or path.stem
    if suffix not in (".xyz", ".extxyz", ".pdb", ".ent", ".cif", ".pdbx", ".mmcif"):
        raise InputError(f"{path}: unknown structure format {suffix!r}; expected .pdb, .cif or .xyz")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a structure file (.pdb, .cif or .xyz)")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: is empty (0 bytes); expected a structure file")
    from ase.io.extxyz import XYZError
    from ase.io.formats import UnknownFileTypeError

    try:  # the parsers' own errors on a file that is not what its name says: one line naming the file
        if suffix in (".xyz", ".extxyz"):
            import ase.io

            atoms = ase.io.read(path, index=0)
            structure = structure_from_atoms(name, atoms.numbers, atoms.positions, source=str(path))
        else:
            reader = app.PDBFile(str(path)) if suffix in (".pdb", ".ent") else app.PDBxFile(str(path))
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, StopIteration, UnknownFileTypeError, XYZError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"{type(exc).__name__}: {exc}"
        raise InputError(f"{path}: not a readable {suffix[1:].upper()} structure ({reason})") from None
    if suffix in (".xyz", ".extxyz"):
        return _checked_structure(structure, path)
    topology = reader.topology
    missing = [a.name for a in topology.atoms() if a.element is None]
    if missing:
        raise InputError(f"{path}: atoms {missing[:5]} have no element; the file's element column is needed")
    z = np.array([a.element.atomic_number for a in topology.atoms()], dtype=np.int64)
    positions = np.asarray(reader.getPositions(asNumpy=True).value_in_unit(unit.angstrom), dtype=np.float64)
    return _checked_structure(Structure(name=name, atomic_numbers=z, positions_angstrom=positions, topology=topology,
                                        source=str(path)), path)


def _checked_structure(structure: Structure, path: Path) -> Structure:
    """The structure read from `path`, or InputError when it has no atoms or non-finite coordinates."""
    if structure.atomic_numbers.size == 0:
        raise InputError(f"{path}: holds no atoms; expected a molecule")
    if not np.isfinite(structure.positions_angstrom).all():
        raise InputError(f"{path}: coordinates are not all finite numbers")
    return structure


def structure_to_pdb(structure: Structure, path) -> Path:
    """Write a Structure as PDB (atom order kept; CONECT records for bonds of non-standard residues)."""
    from openmm import app

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        app.PDBFile.writeFile(structure.topology, structure.openmm_positions(), fh, keepIds=True)
    return path


def structure_from_atoms(name: str, atomic_numbers, positions_angstrom, residue_name: str = "UNL",
                         source: str = "") -> Structure:
    """A one-residue Structure with atoms named element + count and bonds from covalent radii."""
    from openmm import app

    z = np.asarray(atomic_numbers, dtype=np.int64)
    pos = np.asarray(positions_angstrom, dtype=np.float64)
    topology = app.Topology()
    residue = topology.addResidue(residue_name, topology.addChain("A"))
    counts: Counter = Counter()
    atoms = []
    for zi in z:
        symbol = elements.symbol(int(zi))
        counts[symbol] += 1
        atoms.append(topology.addAtom(f"{symbol}{counts[symbol]}", app.Element.getByAtomicNumber(int(zi)), residue))
    for i, j in elements.find_bonds(z, pos):
        topology.addBond(atoms[i], atoms[j])
    return Structure(name=name, atomic_numbers=z, positions_angstrom=pos, topology=topology, source=source)


# --- building the shipped structures ------------------------------------------------------------

def assign_capped_peptide(atomic_numbers, bonds) -> list[tuple[str, dict[int, str]]]:
    """Residues of an ACE-(ALA|GLY)n-NME peptide from its bond graph: [(name, {atom index: atom name})].

    Walks from the acetyl cap along the amide bonds C(=O)-N; names follow the PDB/Amber
    convention (ACE: CH3 C O H1-3; ALA: N H CA HA CB HB1-3 C O; GLY: HA2 HA3; NME: N H C H1-3),
    hydrogens numbered in atom order. ValueError if the graph is not such a peptide.
    """
    z = np.asarray(atomic_numbers, dtype=np.int64)
    neighbours: dict[int, list[int]] = {i: [] for i in range(z.size)}
    for i, j in np.asarray(bonds, dtype=np.int64).reshape(-1, 2):
        neighbours[int(i)].append(int(j))
        neighbours[int(j)].append(int(i))

    def of(atom: int, element: int) -> list[int]:
        return sorted(k for k in neighbours[atom] if z[k] == element)

    def is_methyl(atom: int) -> bool:
        return z[atom] == 6 and len(of(atom, 1)) == 3 and len(neighbours[atom]) == 4

    amide_carbons = [i for i in range(z.size)
                     if z[i] == 6 and len(of(i, 8)) == 1 and len(of(i, 7)) == 1 and len(neighbours[i]) == 3]
    acetyl = [c for c in amide_carbons if any(is_methyl(k) for k in of(c, 6))]
    if len(acetyl) != 1:
        raise InputError(f"expected one acetyl cap (CH3-C(=O)-N), found {len(acetyl)}")

    def hydrogens(atom: int, names: list[str]) -> dict[int, str]:
        found = of(atom, 1)
        if len(found) != len(names):
            raise InputError(f"atom {atom} has {len(found)} hydrogens, expected {len(names)}")
        return dict(zip(found, names))

    carbonyl = acetyl[0]
    methyl = next(k for k in of(carbonyl, 6) if is_methyl(k))
    residues = [("ACE", {methyl: "CH3", carbonyl: "C", of(carbonyl, 8)[0]: "O",
                         **hydrogens(methyl, ["H1", "H2", "H3"])})]
    while True:
        nitrogen = of(carbonyl, 7)[0]
        next_carbons = [k for k in of(nitrogen, 6) if k != carbonyl]
        if len(next_carbons) != 1:
            raise InputError(f"amide nitrogen {nitrogen} should bond one carbon besides the carbonyl")
        alpha = next_carbons[0]
        if is_methyl(alpha):
            residues.append(("NME", {nitrogen: "N", **hydrogens(nitrogen, ["H"]), alpha: "C",
                                     **hydrogens(alpha, ["H1", "H2", "H3"])}))
            break
        next_carbonyls = [k for k in of(alpha, 6) if k in amide_carbons]
        side = [k for k in neighbours[alpha] if z[k] != 1 and k != nitrogen and k not in next_carbonyls]
        if len(next_carbonyls) != 1:
            raise InputError(f"alpha carbon {alpha} is not bonded to exactly one amide carbon")
        atoms = {nitrogen: "N", **hydrogens(nitrogen, ["H"]), alpha: "CA"}
        if not side:
            name = "GLY"
            atoms.update(hydrogens(alpha, ["HA2", "HA3"]))
        elif len(side) == 1 and is_methyl(side[0]):
            name = "ALA"
            atoms.update({**hydrogens(alpha, ["HA"]), side[0]: "CB", **hydrogens(side[0], ["HB1", "HB2", "HB3"])})
        else:
            raise InputError(f"residue at alpha carbon {alpha} is neither alanine nor glycine")
        carbonyl = next_carbonyls[0]
        atoms.update({carbonyl: "C", of(carbonyl, 8)[0]: "O"})
        residues.append((name, atoms))
    assigned = sorted(i for _, atoms in residues for i in atoms)
    if assigned != list(range(z.size)):
        raise InputError(f"{z.size - len(set(assigned))} atoms are not part of the capped peptide")
    return residues


def capped_peptide_structure(name: str, atomic_numbers, positions_angstrom, source: str = "") -> Structure:
    """A Structure with residues and PDB names for an ACE-(ALA|GLY)n-NME peptide, in the given atom order.

    The atom order is kept, so each residue's atoms must be contiguous (true of MD22's order).
    """
    from openmm import app

    z = np.asarray(atomic_numbers, dtype=np.int64)
    pos = np.asarray(positions_angstrom, dtype=np.float64)
    residues = assign_capped_peptide(z, elements.find_bonds(z, pos))
    residue_of = np.empty(z.size, dtype=np.int64)
    names = [""] * z.size
    for r, (_, atoms) in enumerate(residues):
        for i, atom_name in atoms.items():
            residue_of[i], names[i] = r, atom_name
    if np.any(np.diff(residue_of) < 0) or np.any(np.diff(residue_of) > 1):
        raise InputError(f"{name}: residues are not contiguous in the atom order; cannot keep the order")
    topology = app.Topology()
    chain = topology.addChain("A")
    omm_residues = [topology.addResidue(res_name, chain, id=str(r + 1)) for r, (res_name, _) in enumerate(residues)]
    atoms = [topology.addAtom(names[i], app.Element.getByAtomicNumber(int(z[i])), omm_residues[residue_of[i]])
             for i in range(z.size)]
    for i, j in elements.find_bonds(z, pos):
        topology.addBond(atoms[i], atoms[j])
    return Structure(name=name, atomic_numbers=z, positions_angstrom=pos, topology=topology, source=source)


def build_chignolin(source_pdb=None, ph: float = 7.0, seed: int = 5) -> Structure:
    """CLN025 with hydrogens from the 5AWL heavy-atom structure: delete waters, amber14 addHydrogens at `ph`.

    addHydrogens starts each hydrogen from a random offset (Python's `random`) and minimises;
    seeding it (state restored afterwards) and using the Reference platform makes the build
    repeatable. The charge is the sum of amber14's nonbonded charges (-2 at pH 7).
    """
    import random

    import openmm
    from openmm import app, unit

    source_pdb = Path(source_pdb) if source_pdb is not None else _resource_path("sources/cln025_5awl_noH.pdb")
    pdb = app.PDBFile(str(source_pdb))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    forcefield = app.ForceField("amber14-all.xml")
    saved_state = random.getstate()
    random.seed(seed)
    try:
        modeller.addHydrogens(forcefield, pH=ph, platform=openmm.Platform.getPlatformByName("Reference"))
    finally:
        random.setstate(saved_state)
    z = np.array([a.element.atomic_number for a in modeller.topology.atoms()], dtype=np.int64)
    positions = np.asarray(modeller.getPositions().value_in_unit(unit.angstrom), dtype=np.float64)
    return Structure(name="chignolin", atomic_numbers=z, positions_angstrom=positions, topology=modeller.topology,
                     charge=amber14_net_charge(modeller.topology, forcefield), source=str(source_pdb))


def amber14_net_charge(topology, forcefield=None) -> int:
    """Net charge (e) of a topology: the sum of OpenMM amber14-all nonbonded charges, rounded."""
    import openmm
    from openmm import app, unit

    forcefield = forcefield or app.ForceField("amber14-all.xml")
    system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    total = sum(nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
                for i in range(nonbonded.getNumParticles()))
    if abs(total - round(total)) > 1e-3:
        raise InputError(f"amber14 charges sum to {total:.4f} e, not an integer")
    return int(round(total))


def one_letter_sequence(topology) -> str:
    """Protein sequence of a topology in one-letter codes ('YYDPETGTWY'); caps and waters skipped."""
    codes = {"ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G",
             "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S",
             "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V"}
    return "".join(codes[r.name] for r in topology.residues() if r.name in codes)


_SHIPPED = {
    "aspirin": {"file": "aspirin.pdb", "charge": 0, "multiplicity": 1,
                "description": "aspirin, MD17 atom order, one residue AIN, bonds from covalent radii",
                "source": "sGDML aspirin geometry (stefanch/sGDML examples/geometries/aspirin.xyz, MIT)"},
    "ac-ala3-nhme": {"file": "ac-ala3-nhme.pdb", "charge": 0, "multiplicity": 1,
                     "description": "Ac-Ala3-NHMe, MD22 atom order, residues ACE ALA ALA ALA NME",
                     "source": "MD22 Ac-Ala3-NHMe frame 0 (PBE+MBD data set, via flt17/trajcast_dev test fixture)"},
    "chignolin": {"file": "chignolin.pdb", "charge": -2, "multiplicity": 1,
                  "description": "CLN025 (YYDPETGTWY), 166 atoms, zwitterionic termini, Asp3-/Glu5-",
                  "source": "wwPDB 5AWL (CC0), waters removed, hydrogens by OpenMM Modeller.addHydrogens("
                            "amber14-all.xml, pH 7.0)"},
}


def write_builtin_structures(source_dir=None, out_dir=None) -> dict:
    """Regenerate the shipped structure files and structures.json from the source files.

    source_dir holds aspirin.xyz, Ac-Ala3-NHMe.xyz and cln025_5awl_noH.pdb (default: the copies
    shipped in resources/structures/sources); out_dir defaults to resources/structures.
    """
    import ase.io

    source_dir = Path(source_dir) if source_dir is not None else _resource_path("sources")
    out_dir = Path(out_dir) if out_dir is not None else _resource_path("")
    aspirin = ase.io.read(source_dir / "aspirin.xyz")
    peptide = ase.io.read(source_dir / "Ac-Ala3-NHMe.xyz")
    built = {
        "aspirin": structure_from_atoms("aspirin", aspirin.numbers, aspirin.positions, residue_name="AIN"),
        "ac-ala3-nhme": capped_peptide_structure("ac-ala3-nhme", peptide.numbers, peptide.positions),
        "chignolin": build_chignolin(source_dir / "cln025_5awl_noH.pdb"),
    }
    if built["chignolin"].charge != _SHIPPED["chignolin"]["charge"]:
        raise InputError(f"chignolin built with charge {built['chignolin'].charge}, expected "
                         f"{_SHIPPED['chignolin']['charge']}")
    for name, structure in built.items():
        structure_to_pdb(structure, out_dir / _SHIPPED[name]["file"])
    (out_dir / INDEX_NAME).write_text(json.dumps(_SHIPPED, indent=2, sort_keys=True) + "\n")
    return built


def _index() -> dict:
    return json.loads(_resource_path(INDEX_NAME).read_text())


def _resource_path(relative: str) -> Path:
    return STRUCTURES_DIR / relative if relative else STRUCTURES_DIR


def find_builtin(atomic_numbers, positions_angstrom=None) -> Structure | None:
    """The shipped structure with exactly these atomic numbers in this order, or None.

    With positions, its bonds must also hold in them (every bond shorter than 1.5 x the covalent
    radii sum), so a molecule with the same formula in another atom order is not taken for it. Used
    where a potential needs more than atoms: amber14's residues, the net charge of chignolin.
    """
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    for name in list_structures():
        structure = load_structure(name)
        if not np.array_equal(structure.atomic_numbers, z):
            continue
        if positions_angstrom is not None:
            pos = np.asarray(positions_angstrom, dtype=np.float64)
            bonds = structure.bonds()
            radii = elements.covalent_radii(z)
            lengths = np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=-1)
            if np.any(lengths > 1.5 * (radii[bonds[:, 0]] + radii[bonds[:, 1]])):
                continue
        return structure
    return None
