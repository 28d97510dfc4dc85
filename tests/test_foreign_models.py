"""Models of other codes (openmlff.potentials.model_ref): TorchScript files under openmm-torch's TorchForce contract,
ASE calculators (`ase:MODULE:CLASS`), openmm-ml names, consent, options, identity and resume; and the campaign
spec's model tables. The backends themselves (nequip, MACE, TorchMD-Net) are tests/test_backends.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from openmlff.core.errors import InputError
from openmlff.md import SimulationConfig, run_simulation
from openmlff.core.resume import ResumeMismatchError
from openmlff.model_file.reader import ModelFileError
from openmlff.potentials import ModelRef, get_potential
from openmlff.potentials.model_ref import CODE_CONSENT_ENV, parse_model_options
from toy_models import write_toy_model

EMT = "ase:ase.calculators.emt:EMT"
TOY_CALCULATOR = "ase:toy_calculators:ToySpringsCalculator"


class _WithForces(torch.nn.Module):
    """Another code's file that returns (energy, forces), as TorchForce's outputsForces contract allows."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, positions: torch.Tensor):
        x = positions.detach().requires_grad_(True)
        energy = self.inner(x)
        grad = torch.autograd.grad([energy], [x])[0]
        assert grad is not None
        return energy, -grad


@pytest.fixture(scope="module")
def files(aspirin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("foreign")
    toy = write_toy_model(folder / "toy.pt", aspirin.atomic_numbers, aspirin.positions_angstrom)
    plain = torch.jit.load(str(toy))
    plain.save(str(folder / "plain.pt"))  # the same module without openmlff.json: another code's file
    torch.jit.script(_WithForces(plain)).save(str(folder / "with_forces.pt"))
    return {"toy": toy, "plain": folder / "plain.pt", "with_forces": folder / "with_forces.pt"}


def config(**changes) -> SimulationConfig:
    base = SimulationConfig(temperature_K=400.0, timestep_fs=0.5, steps=200, seed=5, platform="Reference",
                            report_interval_steps=20, monitor_interval_steps=10, checkpoint_interval_steps=100,
                            torch_threads=1)
    return replace(base, **changes)


def frames(aspirin, n=4, seed=0):
    rng = np.random.default_rng(seed)
    return aspirin.positions_angstrom[None] + rng.normal(0.0, 0.03, (n,) + aspirin.positions_angstrom.shape)


def test_a_torchscript_file_of_another_code_gives_the_energies_and_forces_of_the_openmlff_file(aspirin, files):
    R = frames(aspirin)
    e_ref, f_ref = get_potential(files["toy"]).energies_and_forces(aspirin.atomic_numbers, R)
    for name in ("plain", "with_forces"):
        potential = get_potential(str(files[name]))
        assert type(potential).__name__ == "TorchScriptFile" and potential.kind == "mlff"
        e, f = potential.energies_and_forces(aspirin.atomic_numbers, R)
        np.testing.assert_allclose(e, e_ref, rtol=1e-12)
        np.testing.assert_allclose(f, f_ref, rtol=1e-10, atol=1e-12)
        assert potential.metadata(aspirin.atomic_numbers)["outputs_forces"] is (name == "with_forces")


def test_a_torchscript_file_that_cannot_take_the_atoms_is_refused_naming_it(files, tmp_path):
    class Fixed(torch.nn.Module):
        def forward(self, positions: torch.Tensor) -> torch.Tensor:
            return (positions.reshape(5, 3) ** 2).sum()

    path = tmp_path / "five_atoms.pt"
    torch.jit.script(Fixed()).save(str(path))
    with pytest.raises(ModelFileError, match=r"five_atoms\.pt: .*TorchForce contract.*21 atoms"):
        get_potential(path).check_atoms(np.ones(21, dtype=int))


def _run_and_extend(model, aspirin, folder: Path, cfg: SimulationConfig):
    """200 steps at once, and 100 steps then resumed to 200: the same trajectory and energies, bit for bit."""
    straight = run_simulation(model, aspirin.atomic_numbers, aspirin.positions_angstrom, folder / "straight", cfg,
                              progress=False)
    run_simulation(model, aspirin.atomic_numbers, aspirin.positions_angstrom, folder / "resumed",
                   replace(cfg, steps=100), progress=False)
    resumed = run_simulation(model, aspirin.atomic_numbers, aspirin.positions_angstrom, folder / "resumed", cfg,
                             progress=False)
    assert straight.stable and resumed.stable and resumed.resumed_from_step == 100
    a = mdtraj.load(str(folder / "straight" / "trajectory.dcd"), top=str(folder / "straight" / "topology.pdb"))
    b = mdtraj.load(str(folder / "resumed" / "trajectory.dcd"), top=str(folder / "resumed" / "topology.pdb"))
    assert a.n_frames == b.n_frames == 11
    np.testing.assert_array_equal(a.xyz, b.xyz)
    return json.loads((folder / "resumed" / "run.json").read_text())


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_a_torchscript_file_of_another_code_runs_200_steps_and_resumes_exactly(aspirin, files, tmp_path, backend):
    record = _run_and_extend(str(files["with_forces"]), aspirin, tmp_path, config(backend=backend))
    assert record["model"]["kind"] == "mlff"
    assert record["model"]["metadata"]["files"] == {str(files["with_forces"].resolve()): record["model"]["sha256"]}


def test_a_changed_model_file_refuses_the_resume_naming_the_file(aspirin, files, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(files["plain"].read_bytes())
    cfg = config(steps=40, checkpoint_interval_steps=20)
    run_simulation(str(path), aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "run", cfg, progress=False)
    other = write_toy_model(tmp_path / "other.pt", aspirin.atomic_numbers, aspirin.positions_angstrom * 1.01)
    torch.jit.load(str(other)).save(str(path))
    with pytest.raises(ResumeMismatchError, match=rf"model files.*{path.name}"):
        run_simulation(str(path), aspirin.atomic_numbers, aspirin.positions_angstrom, tmp_path / "run",
                       replace(cfg, steps=80), progress=False)


def test_code_importing_models_need_consent_and_name_the_flag(monkeypatch):
    monkeypatch.delenv(CODE_CONSENT_ENV, raising=False)
    for name in (EMT, "openmm-ml:nequip"):
        with pytest.raises(InputError, match="--allow-model-code"):
            get_potential(ModelRef(name, {"modelPath": "x"} if "nequip" in name else {}))
    assert get_potential(EMT, allow_code=True).kind == "mlff"
    monkeypatch.setenv(CODE_CONSENT_ENV, "1")
    assert get_potential(EMT).kind == "mlff"


@pytest.mark.parametrize("name", ["mace-off23-small", "ani2x", "aceff-1.1", "aimnet2"])
def test_pretrained_names_that_would_download_are_refused_in_one_line(name):
    with pytest.raises(InputError, match="never downloads") as info:
        get_potential(ModelRef(f"openmm-ml:{name}", allow_code=True))
    assert "\n" not in str(info.value)


def test_an_ase_calculator_is_a_model_with_its_options_files_and_versions_in_its_identity(aspirin, files, tmp_path):
    ref = ModelRef(TOY_CALCULATOR, {"model_file": str(files["plain"])}, allow_code=True)
    potential = get_potential(ref)
    R = frames(aspirin)
    e, f = potential.energies_and_forces(aspirin.atomic_numbers, R)
    e_ref, f_ref = get_potential(files["toy"]).energies_and_forces(aspirin.atomic_numbers, R)
    np.testing.assert_allclose(e, e_ref, rtol=1e-12)
    np.testing.assert_allclose(f, f_ref, rtol=1e-10, atol=1e-12)
    meta = potential.metadata(aspirin.atomic_numbers)
    from openmlff.model_file.reader import file_sha256

    assert meta["files"] == {str(files["plain"].resolve()): file_sha256(files["plain"])} and "ase" in meta["versions"]
    copy = tmp_path / "copy.pt"
    copy.write_bytes(files["plain"].read_bytes())
    other = get_potential(ModelRef(TOY_CALCULATOR, {"model_file": str(copy)}, allow_code=True))
    assert other.identity_sha256() != potential.identity_sha256()  # another path is another model's identity
    # openmm-ml's name for the same thing is the same model
    alias = get_potential(ModelRef("openmm-ml:ase", {"calculator": "toy_calculators:ToySpringsCalculator",
                                                     "model_file": str(files["plain"])}, allow_code=True))
    assert alias.identity_sha256() == potential.identity_sha256()


def test_an_ase_calculator_runs_200_steps_and_resumes_exactly(aspirin, files, tmp_path):
    ref = ModelRef(TOY_CALCULATOR, {"model_file": str(files["plain"])}, allow_code=True)
    record = _run_and_extend(ref, aspirin, tmp_path, config())
    assert record["model"]["name"] == TOY_CALCULATOR and record["model"]["metadata"]["options"] == {
        "model_file": str(files["plain"])}


def test_model_options_parse_json_values_and_refuse_malformed_pairs():
    assert parse_model_options(["modelPath=a.model", "lengthScale=0.1", "atomTypes=[0, 1]", "precision=double"]) == {
        "modelPath": "a.model", "lengthScale": 0.1, "atomTypes": [0, 1], "precision": "double"}
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_model_options(["modelPath"])
    with pytest.raises(InputError, match="twice"):
        parse_model_options(["a=1", "a=2"])


def test_a_campaign_spec_takes_model_tables_resolves_their_files_and_asks_consent(aspirin, files, tmp_path,
                                                                                   monkeypatch, test_data):
    from openmlff.campaign.spec import CampaignSpec
    from openmlff.campaign.spec_file import CampaignSpecError

    monkeypatch.delenv(CODE_CONSENT_ENV, raising=False)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "plain.pt").write_bytes(files["plain"].read_bytes())
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(f"""
[models]
plain = "models/plain.pt"
amber = "amber14"
[models.toy]
potential = "{TOY_CALCULATOR}"
model_file = "models/plain.pt"
[starts]
structures = ["aspirin"]
""")
    spec = CampaignSpec.from_file(spec_path)
    plain = str((tmp_path / "models" / "plain.pt").resolve())
    assert spec.models == {"plain": plain, "amber": "amber14",
                           "toy": {"potential": TOY_CALCULATOR, "model_file": plain}}
    assert {run.model: run.model_path for run in spec.expand()}["toy"] == spec.models["toy"]
    with pytest.raises(CampaignSpecError, match=r"models\.toy.*--allow-model-code"):
        spec.check_models()
    monkeypatch.setenv(CODE_CONSENT_ENV, "1")  # what --allow-model-code sets for the workers
    spec.check_models()
    assert json.loads(json.dumps(spec.to_dict()))["models"] == spec.models  # campaign.json keeps the tables as named


def test_a_committee_of_models_of_other_codes_reports_their_force_spread(aspirin, files, tmp_path, monkeypatch):
    from openmlff.md.trust import TrustReporter, TrustSettings
    from openmlff.core.units import ev_to

    other = write_toy_model(tmp_path / "other.pt", aspirin.atomic_numbers, aspirin.positions_angstrom * 1.02)
    torch.jit.load(str(other)).save(str(tmp_path / "other_plain.pt"))
    members = (str(files["plain"]), {"potential": TOY_CALCULATOR, "model_file": str(tmp_path / "other_plain.pt")})
    settings = TrustSettings(members, threshold_kcal_per_mol_per_A=1e-6)
    with pytest.raises(InputError, match="two or more"):
        TrustSettings((str(files["plain"]),))
    monkeypatch.setenv(CODE_CONSENT_ENV, "1")
    reporter = TrustReporter(settings, aspirin.atomic_numbers, 10, 0.5)
    positions = frames(aspirin, n=1, seed=3)[0]
    sigma = reporter.sigma(positions / 10.0)
    f1 = get_potential(files["toy"]).energies_and_forces(aspirin.atomic_numbers, positions[None])[1][0]
    f2 = get_potential(other).energies_and_forces(aspirin.atomic_numbers, positions[None])[1][0]
    expected = np.linalg.norm(f1 - f2, axis=-1) / 2 * ev_to("kcal/mol")  # two members: half their difference
    np.testing.assert_allclose(sigma, expected, rtol=1e-9)
    summary = run_simulation(str(files["plain"]), aspirin.atomic_numbers, aspirin.positions_angstrom,
                             tmp_path / "run", config(steps=40), progress=False, trust=settings)
    assert summary.max_force_uncertainty_kcal_per_mol_per_A > 0 and summary.first_untrusted_time_ps == 0.0
    record = json.loads((tmp_path / "run" / "run.json").read_text())["trust"]
    assert record["committee"] == [str(files["plain"]), members[1]]
