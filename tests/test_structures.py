"""Built-in structures: MD17/MD22 atom order, residues and names mdtraj understands, chignolin as built."""

from __future__ import annotations

from pathlib import Path

import mdtraj
import numpy as np
import pytest

from openmlff.core import elements
from openmlff.structures import (amber14_net_charge, build_chignolin, list_structures, load_structure,
                                 one_letter_sequence, structure_to_pdb)
from openmlff.structures.builtin import STRUCTURES_DIR, assign_capped_peptide

SHARED = Path(__file__).resolve().parent / "data"  # copies of the shared data files (see data/PROVENANCE.md)


def test_builtin_names():
    assert {"aspirin", "ac-ala3-nhme", "chignolin"} <= set(list_structures())
    with pytest.raises(FileNotFoundError, match="neither a built-in structure.*aspirin"):
        load_structure("no-such-molecule")


def test_aspirin_has_md17_atom_order():
    s = load_structure("aspirin")
    md17 = np.load(SHARED / "datasets" / "md17_aspirin_15.npz")
    np.testing.assert_array_equal(s.atomic_numbers, md17["z"])
    source = load_structure(SHARED / "structures" / "aspirin.xyz")
    np.testing.assert_allclose(s.positions_angstrom, source.positions_angstrom, atol=6e-4)  # PDB precision
    assert s.charge == 0 and [r.name for r in s.topology.residues()] == ["AIN"]
    np.testing.assert_array_equal(s.bonds(), elements.find_bonds(s.atomic_numbers, s.positions_angstrom))
    traj = mdtraj.load_pdb(str(STRUCTURES_DIR / "aspirin.pdb"))  # bonds from the CONECT records
    assert traj.n_atoms == 21 and traj.topology.n_bonds == 21


def test_ac_ala3_nhme_has_md22_order_and_backbone_dihedrals():
    s = load_structure("ac-ala3-nhme")
    md22 = np.load(SHARED / "datasets" / "md22_Ac-Ala3-NHMe_5.npz")
    np.testing.assert_array_equal(s.atomic_numbers, md22["z"])
    np.testing.assert_allclose(s.positions_angstrom, md22["R"][0], atol=6e-4)
    assert [r.name for r in s.topology.residues()] == ["ACE", "ALA", "ALA", "ALA", "NME"]
    assert len(s.bonds()) == 41  # acyclic, 42 atoms
    traj = mdtraj.load_pdb(str(STRUCTURES_DIR / "ac-ala3-nhme.pdb"))
    phi_atoms, phi = mdtraj.compute_phi(traj)
    psi_atoms, psi = mdtraj.compute_psi(traj)
    assert phi.shape == (1, 3) and psi.shape == (1, 3)
    names = [a.name for a in traj.topology.atoms]
    assert all([names[i] for i in quad] == ["C", "N", "CA", "C"] for quad in phi_atoms)
    assert all([names[i] for i in quad] == ["N", "CA", "C", "N"] for quad in psi_atoms)
    assert np.all(np.abs(phi) <= np.pi) and np.all(np.isfinite(psi))
    assert amber14_net_charge(s.topology) == 0  # amber14's ACE/ALA/NME templates match every atom


def test_capped_peptide_assignment_refuses_other_molecules():
    aspirin = load_structure("aspirin")
    with pytest.raises(ValueError, match="acetyl cap"):
        assign_capped_peptide(aspirin.atomic_numbers, aspirin.bonds())


def test_shipped_chignolin():
    s = load_structure("chignolin")
    assert s.n_atoms == 166 and s.charge == -2
    assert one_letter_sequence(s.topology) == "YYDPETGTWY"
    np.testing.assert_array_equal(s.bonds(), elements.find_bonds(s.atomic_numbers, s.positions_angstrom))


def test_chignolin_rebuilt_from_5awl_matches_the_shipped_file():
    built = build_chignolin(SHARED / "structures" / "cln025_5awl_noH.pdb")
    assert built.n_atoms == 166
    assert one_letter_sequence(built.topology) == "YYDPETGTWY"
    assert built.charge == -2  # zwitterion: NH3+ and COO- termini, Asp3- and Glu5-
    first = list(built.topology.residues())[0]
    assert {"H", "H2", "H3"} <= {a.name for a in first.atoms()}  # protonated N terminus
    shipped = load_structure("chignolin")
    np.testing.assert_array_equal(built.atomic_numbers, shipped.atomic_numbers)
    np.testing.assert_allclose(built.positions_angstrom, shipped.positions_angstrom, atol=6e-4)
    assert [a.name for a in built.topology.atoms()] == [a.name for a in shipped.topology.atoms()]


def test_structures_load_from_files(tmp_path):
    xyz = load_structure(SHARED / "structures" / "Ac-Ala3-NHMe.xyz")
    assert xyz.n_atoms == 42 and xyz.charge == 0 and len(xyz.bonds()) == 41
    pdb = load_structure(SHARED / "structures" / "chignolin_1uao.pdb", charge=-2)
    assert pdb.n_atoms == 138 and pdb.charge == -2 and len(pdb.bonds()) > 130


def test_pdb_round_trip_keeps_atoms_order_and_bonds(tmp_path):
    original = load_structure("aspirin")
    path = structure_to_pdb(original, tmp_path / "copy.pdb")
    again = load_structure(path)
    np.testing.assert_array_equal(again.atomic_numbers, original.atomic_numbers)
    np.testing.assert_allclose(again.positions_angstrom, original.positions_angstrom, atol=1e-3)
    np.testing.assert_array_equal(again.bonds(), original.bonds())
    traj = original.to_mdtraj()
    np.testing.assert_allclose(traj.xyz[0] * 10.0, original.positions_angstrom, atol=1e-5)
