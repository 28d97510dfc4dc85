"""Potentials: classical force fields and reference methods behind the one interface of metrics and MD.

Real OpenMM Systems, real AmberTools parameterization (antechamber/sqm/parmchk2/tleap), real GFN2-xTB
calculations, checked against OpenMM's own force field code, the method called directly, and real
DFT labels (rMD17, MD22).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import openmm
import pytest
from openmm import app, unit

from openmlff.core import units
from openmlff.cli import main
from openmlff.data import load_dataset
from openmlff.core.errors import InputError
from openmlff.md import ResumeMismatchError, SimulationConfig, run_simulation
from openmlff.metrics.force_metrics import global_force_metrics
from openmlff.model_file.reader import ModelFileError
from openmlff.potentials import get_potential, potential_names
from openmlff.potentials import classical
from openmlff.potentials.classical import GAFF
from openmlff.reference import get_reference_method
from openmlff.structures import load_structure

KJ_PER_NM_PER_EV_PER_A = units.EV_IN_KJ_PER_MOL * units.NM_IN_ANGSTROM


@pytest.fixture(scope="module")
def md22(test_data):
    return load_dataset(test_data / "datasets" / "md22_Ac-Ala3-NHMe_5.extxyz", energy_unit="kcal/mol")


@pytest.fixture(scope="module")
def rmd17(test_data):
    return load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")


@pytest.fixture(scope="module")
def gaff(tmp_path_factory):
    return GAFF(cache_dir=tmp_path_factory.mktemp("gaff-cache"))


def _openmm_energies_forces(system, frames_angstrom):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    out = []
    for frame in frames_angstrom:
        context.setPositions(frame / units.NM_IN_ANGSTROM)
        state = context.getState(getEnergy=True, getForces=True)
        out.append((state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                    state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))
    return np.array([e for e, _ in out]), np.array([f for _, f in out])


def test_amber14_gives_openmm_s_own_ff14sb_energies_and_a_force_field_s_error_against_dft(md22):
    energies, forces = get_potential("amber14").energies_and_forces(md22.z, md22.R)
    topology = load_structure("ac-ala3-nhme").topology
    own = app.ForceField("amber14-all.xml").createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    e_kj, f_kj = _openmm_energies_forces(own, md22.R)
    np.testing.assert_allclose(energies * units.EV_IN_KJ_PER_MOL, e_kj, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(forces * KJ_PER_NM_PER_EV_PER_A, f_kj, rtol=1e-5, atol=1e-2)
    # ff14SB against PBE+MBD: several kcal/mol/Å (classical force RMSE on peptide sets is ~8-14)
    metrics = global_force_metrics(forces, md22.F, md22.z)
    assert 3.0 < metrics["force_mae"] < 15.0


def test_amber14_refuses_a_small_molecule_and_names_the_alternative(aspirin):
    with pytest.raises(InputError, match="gaff-2.11"):
        get_potential("amber14").build_system(aspirin.atomic_numbers, aspirin.positions_angstrom)


@pytest.mark.slow
def test_gaff_builds_am1bcc_parameters_once_and_reads_them_from_its_cache(gaff, aspirin, monkeypatch):
    system = gaff.build_system(aspirin.atomic_numbers, aspirin.positions_angstrom)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    charges = np.array([nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
                        for i in range(system.getNumParticles())])
    assert abs(charges.sum()) < 1e-3
    assert np.all(charges[aspirin.atomic_numbers == 8] < -0.3)  # every oxygen carries a negative AM1-BCC charge
    built = gaff.parameters(aspirin.atomic_numbers, aspirin.positions_angstrom)
    mol2 = (built["prmtop"].parent / "molecule.mol2").read_text()
    assert " ca " in mol2 and " ha " in mol2  # GAFF2 aromatic carbon and hydrogen types
    assert built["record"]["charge_conformation"] == "shipped structure 'aspirin'"
    assert not any(system.getForce(k).__class__ is openmm.CMMotionRemover for k in range(system.getNumForces()))

    def no_amber_tools(*args, **kwargs):
        raise AssertionError("the cached parameters should have been used")

    monkeypatch.setattr(classical, "_run_amber_tools", no_amber_tools)
    again = GAFF(cache_dir=gaff.cache_dir)
    assert again.identity_sha256(aspirin.atomic_numbers, aspirin.positions_angstrom) == \
        gaff.identity_sha256(aspirin.atomic_numbers, aspirin.positions_angstrom)


@pytest.mark.slow
def test_gaff_error_against_rmd17_dft_is_a_classical_force_field_s(gaff, rmd17):
    energies, forces = gaff.energies_and_forces(rmd17.z, rmd17.R[:20])
    metrics = global_force_metrics(forces, rmd17.F[:20], rmd17.z, E_pred=energies, E_ref=rmd17.E[:20])
    assert 5.0 < metrics["force_mae"] < 25.0
    assert metrics["energy_mae_offset_removed"] < 0.01 * metrics["energy_mae"]  # the zero of energy is arbitrary


def test_gaff_without_ambertools_names_the_extra_to_install(monkeypatch, tmp_path, aspirin):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(classical.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match=r"openmlff\[classical\]"):
        GAFF(cache_dir=tmp_path).build_system(aspirin.atomic_numbers, aspirin.positions_angstrom)


def test_xtb_in_openmm_gives_the_method_s_energy_and_forces_in_openmm_units(aspirin):
    z, pos = aspirin.atomic_numbers, aspirin.positions_angstrom
    potential = get_potential("gfn2-xtb")
    e_kj, f_kj = _openmm_energies_forces(potential.build_system(z, pos), pos[None])
    energy, forces = get_reference_method("gfn2-xtb").compute(z, pos)
    np.testing.assert_allclose(e_kj[0], energy * units.EV_IN_KJ_PER_MOL, rtol=1e-9)
    np.testing.assert_allclose(f_kj[0], forces * KJ_PER_NM_PER_EV_PER_A, rtol=1e-6, atol=1e-6)
    E, F = potential.energies_and_forces(z, pos[None])
    np.testing.assert_allclose(F[0], forces, rtol=1e-9)


def test_quantum_charge_is_the_shipped_structure_s_unless_given():
    chignolin = load_structure("chignolin")
    assert get_potential("gfn2-xtb").molecule_charge(chignolin.atomic_numbers) == -2
    assert get_potential("gfn2-xtb", charge=0).molecule_charge(chignolin.atomic_numbers) == 0
    assert get_potential("gfn2-xtb").molecule_charge(load_structure("aspirin").atomic_numbers) == 0


def test_a_classical_run_records_its_force_field_and_refuses_another_on_resume(tmp_path, md22):
    s = load_structure("ac-ala3-nhme")
    config = SimulationConfig(temperature_K=300, timestep_fs=0.5, steps=200, seed=0)
    summary = run_simulation("amber14", s.atomic_numbers, md22.R[0], tmp_path / "run", config, progress=False)
    assert summary.stable and summary.steps_completed == 200
    record = json.loads((tmp_path / "run" / "run.json").read_text())["model"]
    assert record["kind"] == "classical" and record["name"] == "amber14" and record["path"] is None
    assert record["sha256"] == get_potential("amber14").identity_sha256(s.atomic_numbers, md22.R[0], s.topology)
    pdb = (tmp_path / "run" / "topology.pdb").read_text()
    assert " ACE " in pdb and " NME " in pdb  # the residues amber14 needs, not one UNL residue
    with pytest.raises(ResumeMismatchError, match="model sha256"):
        run_simulation("gfn2-xtb", s.atomic_numbers, md22.R[0], tmp_path / "run", config, progress=False)


def test_metrics_and_analyze_take_a_potential_name(tmp_path, md22, test_data, capsys):
    data = test_data / "datasets" / "md22_Ac-Ala3-NHMe_5.extxyz"
    out = tmp_path / "xtb.json"
    assert main(["metrics", "--model", "gfn2-xtb", "--data", str(data), "--energy-unit-in-file", "kcal/mol",
                 "--out", str(out), "--n-clusters", "2"]) == 0
    report = json.loads(out.read_text())
    assert report["potential"]["kind"] == "quantum" and "GFN2-xTB" in report["potential"]["level_of_theory"]
    assert report["model"] == "gfn2-xtb"
    assert 1.0 < report["global"]["force_mae"] < 15.0  # GFN2-xTB against PBE+MBD
    assert report["global"]["energy_mae_offset_removed"] < report["global"]["energy_mae"]

    run = tmp_path / "run"
    assert main(["simulate", "--model", "amber14", "--data", str(data), "--energy-unit-in-file", "kcal/mol",
                 "--frame", "0", "--temperature", "300", "--timestep", "0.5", "--steps", "100", "--out", str(run),
                 "--quiet"]) == 0
    assert main(["analyze", str(run), "--data", str(data), "--energy-unit-in-file", "kcal/mol", "--quiet"]) == 0
    analysis = json.loads((run / "analysis" / "analysis.json").read_text())
    assert analysis["model"]["kind"] == "classical"
    assert analysis["diagnosis"]["evaluated"] and analysis["diagnosis"]["model"] == "amber14"


def test_an_unknown_model_names_the_potentials(tmp_path, test_data, capsys):
    data = test_data / "datasets" / "md22_Ac-Ala3-NHMe_5.npz"
    assert main(["metrics", "--model", "amber99", "--data", str(data), "--out", str(tmp_path / "m.json")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "amber99" in err[0] and "amber14" in err[0] and "gfn2-xtb" in err[0]
    with pytest.raises(ModelFileError):
        get_potential(tmp_path / "missing.pt")
    assert set(potential_names()) == {"amber14", "gaff-2.11", "gfn2-xtb", "gfn1-xtb", "dft"}
