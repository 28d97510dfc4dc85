"""openmlff.md.platforms and openmlff.md.topology: platform choice and errors, topologies, structure files."""

from __future__ import annotations

import mdtraj
import numpy as np
import pytest
import torch

from openmlff import elements
from openmlff.md import (
    PlatformError, available_platforms, load_structure, select_platform, set_torch_threads,
    topology_from_atomic_numbers, write_topology_pdb,
)
from openmlff.md.platforms import AUTOMATIC_PLATFORM_ORDER


# --- platforms ----------------------------------------------------------------------------------

def test_unknown_platform_error_lists_available_platforms():
    with pytest.raises(PlatformError) as err:
        select_platform("Quantum")
    message = str(err.value)
    assert "'Quantum'" in message
    for name in available_platforms():
        assert name in message


def test_automatic_choice_is_first_available_of_cuda_opencl_cpu_never_reference():
    platform, _ = select_platform(None)
    expected = next(p for p in AUTOMATIC_PLATFORM_ORDER if p in available_platforms())
    assert platform.getName() == expected != "Reference"


def test_reference_only_when_named_and_names_are_case_insensitive():
    platform, properties = select_platform("reference")
    assert platform.getName() == "Reference"
    assert properties == {}


def test_precision_is_refused_on_platforms_without_one_and_checked_for_spelling():
    with pytest.raises(PlatformError, match="no precision setting"):
        select_platform("Reference", precision="double")
    with pytest.raises(PlatformError, match="unknown precision 'quad'"):
        select_platform("CPU", precision="quad")


def test_gpu_platforms_default_to_mixed_precision():
    gpu = [p for p in ("CUDA", "OpenCL") if p in available_platforms()]
    if not gpu:
        pytest.skip("no CUDA or OpenCL platform in this OpenMM installation")
    _, properties = select_platform(gpu[0])
    assert properties["Precision"] == "mixed"
    _, properties = select_platform(gpu[0], precision="double")
    assert properties["Precision"] == "double"


def test_extra_platform_properties_are_checked_against_the_platform():
    _, properties = select_platform("CPU", properties={"Threads": 1})
    assert properties == {"Threads": "1"}
    with pytest.raises(PlatformError, match="no property 'DeviceIndex'"):
        select_platform("CPU", properties={"DeviceIndex": "0"})


def test_set_torch_threads():
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1 == torch.get_num_threads()
        assert set_torch_threads(None) == 1
        with pytest.raises(ValueError):
            set_torch_threads(0)
    finally:
        torch.set_num_threads(before)


# --- topology -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def aspirin(shared_data):
    return load_structure(shared_data / "structures" / "aspirin.xyz")


def test_xyz_structure_gives_one_residue_named_atoms_and_covalent_bonds(aspirin):
    topology, zs, positions = aspirin
    assert zs.tolist() == [6] * 7 + [8] * 3 + [6, 6, 8] + [1] * 8
    assert positions.shape == (21, 3)
    assert positions[0].tolist() == [1.799771, -1.365083, -0.630185]  # first line of aspirin.xyz, Å
    residues = list(topology.residues())
    assert [r.name for r in residues] == ["MOL"]
    names = [a.name for a in topology.atoms()]
    assert names[0] == "C0" and names[7] == "O7" and names[20] == "H20"
    assert [a.element.atomic_number for a in topology.atoms()] == zs.tolist()
    bonds = sorted(sorted((b.atom1.index, b.atom2.index)) for b in topology.bonds())
    assert bonds == elements.find_bonds(zs, positions).tolist()
    assert len(bonds) == 21  # C9H8O4, one ring: 13 heavy-atom bonds + 8 X-H bonds


def test_topology_pdb_is_read_back_by_mdtraj_with_bonds_and_positions(aspirin, tmp_path):
    topology, zs, positions = aspirin
    path = write_topology_pdb(topology, positions, tmp_path / "topology.pdb")
    traj = mdtraj.load(str(path))
    assert traj.n_atoms == 21 and traj.n_frames == 1
    assert [a.element.atomic_number for a in traj.topology.atoms] == zs.tolist()
    assert traj.topology.n_bonds == 21
    np.testing.assert_allclose(traj.xyz[0] * 10.0, positions, atol=1.1e-3)  # PDB keeps 3 decimals of Å


def test_pdb_structure_keeps_residues_and_bonds(shared_data):
    path = shared_data / "structures" / "chignolin_1uao.pdb"
    topology, zs, positions = load_structure(path)
    assert topology.getNumAtoms() == len(zs) == 138
    assert [r.name for r in topology.residues()] == ["GLY", "TYR", "ASP", "PRO", "GLU", "THR", "GLY", "THR", "TRP", "GLY"]
    assert topology.getNumBonds() > 130
    first_atom = next(line for line in path.read_text().splitlines() if line.startswith("ATOM"))
    expected = [float(first_atom[30:38]), float(first_atom[38:46]), float(first_atom[46:54])]
    np.testing.assert_allclose(positions[0], expected, atol=1e-6)


def test_topology_refuses_positions_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
        topology_from_atomic_numbers([8, 1, 1], np.zeros((2, 3)))


def test_missing_structure_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.xyz"):
        load_structure(tmp_path / "nothing.xyz")
