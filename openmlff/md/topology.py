"""OpenMM topologies for molecules given by atomic numbers, and loading structures from PDB or XYZ.

An MLFF needs no force-field atom types, so the topology only names atoms and bonds, for the
trajectory's PDB (what mdtraj and viewers read) and for analysis. Positions are in Å here, the
package's internal length unit; OpenMM gets nm.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import openmm.app as app
from openmm import unit

from .. import elements
from ..units import NM_IN_ANGSTROM

#: Residue name of a molecule built from atomic numbers alone.
MOLECULE_RESIDUE_NAME = "MOL"


class Structure(NamedTuple):
    """A molecule ready for MD: topology, atomic numbers (n_atoms,) and positions (n_atoms, 3) in Å."""

    topology: app.Topology
    atomic_numbers: np.ndarray
    positions_angstrom: np.ndarray


def topology_from_atomic_numbers(atomic_numbers, positions_angstrom) -> app.Topology:
    """One chain, one residue 'MOL'; atom i is named element + i (e.g. 'C0', 'H20'); bonds from covalent radii.

    Atom names carry the 0-based atom index, the index the stability monitor reports.
    """
    zs = np.asarray(atomic_numbers, dtype=np.int64)
    pos = _positions_array(positions_angstrom, len(zs), "positions_angstrom")
    elements.check_atomic_numbers(zs)
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue(MOLECULE_RESIDUE_NAME, chain)
    atoms = [
        topology.addAtom(f"{elements.symbol(z)}{i}", app.Element.getByAtomicNumber(int(z)), residue)
        for i, z in enumerate(zs)
    ]
    for i, j in elements.find_bonds(zs, pos):
        topology.addBond(atoms[int(i)], atoms[int(j)])
    return topology


def topology_atomic_numbers(topology: app.Topology) -> np.ndarray:
    """Atomic numbers of a topology's atoms; ValueError naming the atom if one has no element."""
    zs = []
    for atom in topology.atoms():
        if atom.element is None:
            raise ValueError(f"atom {atom.index} ({atom.name} in residue {atom.residue.name}) has no element")
        zs.append(atom.element.atomic_number)
    return np.asarray(zs, dtype=np.int64)


def load_structure(path) -> Structure:
    """Read a structure file: '.pdb' through openmm.app.PDBFile (residues and bonds kept, first model),
    any other format ASE reads (XYZ, extended XYZ, ...) through ase.io (first frame, topology built
    from atomic numbers)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such structure file")
    if path.suffix.lower() in (".pdb", ".ent"):
        pdb = app.PDBFile(str(path))
        try:
            zs = topology_atomic_numbers(pdb.topology)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom), dtype=np.float64)
        return Structure(pdb.topology, zs, pos)
    import ase.io

    try:
        atoms = ase.io.read(str(path), index=0)
    except Exception as exc:  # ase raises many types for unreadable files
        raise ValueError(f"{path}: cannot read a structure with ase.io ({exc})") from exc
    zs = np.asarray(atoms.get_atomic_numbers(), dtype=np.int64)
    pos = np.asarray(atoms.get_positions(), dtype=np.float64)
    return Structure(topology_from_atomic_numbers(zs, pos), zs, pos)


def write_topology_pdb(topology: app.Topology, positions_angstrom, path) -> Path:
    """Write the topology with positions (Å) as PDB, with CONECT records for bonds; returns the path."""
    path = Path(path)
    pos = _positions_array(positions_angstrom, topology.getNumAtoms(), "positions_angstrom")
    with open(path, "w") as fh:
        app.PDBFile.writeFile(topology, unit.Quantity(pos / NM_IN_ANGSTROM, unit.nanometer), fh, keepIds=False)
    return path


def _positions_array(positions, n_atoms: int, name: str) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (n_atoms, 3):
        raise ValueError(f"{name} has shape {pos.shape}, expected ({n_atoms}, 3)")
    return pos
