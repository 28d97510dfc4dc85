"""Models made by the backends themselves, through openmlff: each backend's own prediction equals openmlff's
metrics to 1e-5 relative on shipped frames, and 200 steps of `openmlff simulate` run and resume exactly.

nequip (co-installed, the [nequip] extra): a tiny model trained for a second by `nequip-train` on 10 shipped
rMD17 frames (tests/backends/nequip_tiny.yaml), read by openmm-ml's `nequip` potential and by nequip's own ASE
calculator.

MACE (served from .venv-mace, protocols/backend_envs.sh): a tiny model trained for 60 epochs by `mace_run_train`,
read through its ASE calculator and through openmm-ml's `mace` potential, both in .venv-mace and answering over
ASE's socket (openmlff.reference.served); its own prediction is MACECalculator's there (tests/backends/mace_predict.py).

TorchMD-Net (served from .venv-torchmdnet): a tiny ET trained by `torchmd-train` (tests/backends/torchmdnet_tiny.yaml),
read through its ASE calculator (TMDNETCalculator) and through openmm-ml's `torchmdnet` potential in that environment;
its own prediction is the model call of load_model (tests/backends/torchmdnet_predict.py).

tests/run.sh makes the environments and sets OPENMLFF_REQUIRE_BACKENDS=1: a missing environment fails the suite
instead of skipping it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from openmlff.cli import main
from openmlff.data import load_dataset
from openmlff.potentials import ModelRef, get_potential
from openmlff.core.units import EV_IN_KJ_PER_MOL

BACKENDS = Path(__file__).resolve().parent / "backends"
RMD17 = Path(__file__).resolve().parents[1] / "openmlff" / "resources" / "datasets" / "rmd17_aspirin_1200.extxyz"
LINES_PER_FRAME = 23  # extended XYZ: count, comment, 21 atoms
ROOT = Path(__file__).resolve().parents[1]
#: Minutes of trainings in the backends' environments: CI runs them, `tests/run.sh --fast` does not.
pytestmark = pytest.mark.slow


def backend_python(name: str) -> Path:
    """The interpreter of .venv-NAME (protocols/backend_envs.sh); a skip, or a failure under tests/run.sh."""
    python = ROOT / f".venv-{name}" / "bin" / "python"
    if not python.is_file():
        message = f"{python.parent.parent} is missing: bash protocols/backend_envs.sh {name}"
        if os.environ.get("OPENMLFF_REQUIRE_BACKENDS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def assert_equals_own_prediction(ref, dataset, energies_ev, forces_ev_per_angstrom) -> dict:
    """openmlff's energies and forces of the model on the frames equal the backend's own to 1e-5 relative (forces:
    1e-5 of the largest); the model's metadata."""
    potential = get_potential(ref)
    energies, forces = potential.energies_and_forces(dataset.z, dataset.R)
    np.testing.assert_allclose(energies, energies_ev, rtol=1e-5)
    np.testing.assert_allclose(forces, forces_ev_per_angstrom, rtol=1e-5,
                               atol=1e-5 * np.abs(forces_ev_per_angstrom).max())
    return potential.metadata(dataset.z)


def assert_200_steps_resume_exactly(ref, dataset, folder: Path) -> None:
    """200 steps at 300 K made at once, and 50 steps resumed to 200 from the checkpoint: both stable, the same
    trajectory bit for bit."""
    from dataclasses import replace

    import mdtraj

    from openmlff.md import SimulationConfig, run_simulation

    cfg = SimulationConfig(temperature_K=300.0, timestep_fs=0.5, steps=200, seed=3, platform="Reference",
                           report_interval_steps=10, checkpoint_interval_steps=50, torch_threads=1)
    straight = run_simulation(ref, dataset.z, dataset.R[0], folder / "straight", cfg, progress=False)
    run_simulation(ref, dataset.z, dataset.R[0], folder / "resumed", replace(cfg, steps=50), progress=False)
    resumed = run_simulation(ref, dataset.z, dataset.R[0], folder / "resumed", cfg, progress=False)
    assert straight.stable and resumed.stable and resumed.resumed_from_step == 50
    a, b = (mdtraj.load(str(folder / d / "trajectory.dcd"), top=str(folder / d / "topology.pdb"))
            for d in ("straight", "resumed"))
    assert a.n_frames == b.n_frames == 21
    np.testing.assert_array_equal(a.xyz, b.xyz)


def _one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """The first 15 frames of the shipped rMD17 aspirin file (eV, Å), as a file nequip reads and as a Dataset."""
    folder = tmp_path_factory.mktemp("frames")
    lines = RMD17.read_text().splitlines(keepends=True)[:15 * LINES_PER_FRAME]
    path = folder / "aspirin15.extxyz"
    path.write_text("".join(lines))
    (folder / "aspirin15.extxyz.units.json").write_text(
        (RMD17.parent / (RMD17.name + ".units.json")).read_text())
    return path, load_dataset(path)


@pytest.fixture(scope="module")
def nequip_model(frames, tmp_path_factory):
    """tiny.ckpt trained by nequip-train itself (about 7 s)."""
    pytest.importorskip("nequip", reason="the [nequip] extra (tests/run.sh installs it)")
    out = tmp_path_factory.mktemp("nequip")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    done = subprocess.run([str(Path(sys.executable).parent / "nequip-train"), "-cp", str(BACKENDS), "-cn",
                           "nequip_tiny", f"data_file={frames[0]}", f"hydra.run.dir={out}"],
                          cwd=out, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "tiny.ckpt"


def nequip_ref(model: Path) -> ModelRef:
    return ModelRef("openmm-ml:nequip", {"modelPath": str(model), "lengthScale": 0.1,
                                         "energyScale": EV_IN_KJ_PER_MOL}, allow_code=True)


def test_nequip_through_openmm_ml_equals_nequips_own_ase_calculator(nequip_model, frames):
    from nequip.integrations.ase import NequIPCalculator

    dataset = frames[1]
    calculator = NequIPCalculator._from_saved_model(str(nequip_model), device="cpu",
                                                    chemical_species_to_atom_type_map=True)
    import ase

    own_e, own_f = [], []
    for positions in dataset.R:
        atoms = ase.Atoms(numbers=dataset.z, positions=positions, calculator=calculator)
        own_e.append(atoms.get_potential_energy())
        own_f.append(atoms.get_forces())
    assert_equals_own_prediction(nequip_ref(nequip_model), dataset, np.array(own_e), np.array(own_f))


def test_openmlffs_nequip_builds_plain_after_a_nequip_model_was_loaded(nequip_model):
    """Loading a nequip model sets e3nn to TorchScript mode for the process; openmlff's NequIP keeps plain modules
    (its EMA deep-copies the model, which a ScriptFunction refuses)."""
    import copy

    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.global_state import set_global_state

    from openmlff.models import build_model

    set_global_state()
    load_saved_model(str(nequip_model))
    copy.deepcopy(build_model("nequip", {"num_features": 8, "num_layers": 1}))


def test_nequip_metrics_simulate_and_resume_from_the_command_line(nequip_model, frames, tmp_path, capsys):
    data = str(frames[0])
    options = ["--model", "openmm-ml:nequip", "--model-option", f"modelPath={nequip_model}",
               "--model-option", "lengthScale=0.1", "--model-option", f"energyScale={EV_IN_KJ_PER_MOL}"]
    assert main(["metrics", *options, "--data", data, "--out", str(tmp_path / "m.json")]) == 1  # no consent
    assert "--allow-model-code" in capsys.readouterr().err
    assert main(["metrics", *options, "--allow-model-code", "--data", data, "--out", str(tmp_path / "m.json")]) == 0
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["potential"]["kind"] == "mlff" and report["global"]["force_mae"] > 0
    # A model trained for a second is rough: its runs may collapse after ~100 steps. Exact resume is the point: the
    # run resumed from its checkpoint at step 50 ends as the run made at once, frame for frame, collapse included.
    md = ["--temperature", "300", "--timestep", "0.5", "--report-interval-steps", "10", "--checkpoint-interval-steps",
          "50", "--seed", "3"]
    for out, steps in (("straight", 200), ("resumed", 50), ("resumed", 200)):
        assert main(["simulate", *options, "--allow-model-code", "--data", data, "--frame", "0", *md,
                     "--steps", str(steps), "--out", str(tmp_path / out), "--quiet"]) == 0
    import mdtraj

    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("straight", "resumed")]
    assert summaries[1]["resumed_from_step"] == 50
    for key in ("stable", "steps_completed", "collapse_step", "collapse_reason", "first_broken_bond"):
        assert summaries[0][key] == summaries[1][key], key
    for name in ("trajectory.dcd", "collapse_frames.dcd"):
        if (tmp_path / "straight" / name).is_file():
            a, b = (mdtraj.load(str(tmp_path / d / name), top=str(tmp_path / d / "topology.pdb"))
                    for d in ("straight", "resumed"))
            # the collapse frames are the monitor's recent frames in memory: a resumed session keeps those it saw
            assert a.n_frames == b.n_frames if name == "trajectory.dcd" else 1 <= b.n_frames <= a.n_frames
            np.testing.assert_array_equal(a.xyz[a.n_frames - b.n_frames:], b.xyz)
    record = json.loads((tmp_path / "resumed" / "run.json").read_text())["model"]
    assert record["metadata"]["files"] == {str(nequip_model.resolve()): record["metadata"]["files"][
        str(nequip_model.resolve())]}
    assert record["metadata"]["versions"]["nequip"] == "0.19.1"


@pytest.fixture(scope="module")
def mace_model(frames, tmp_path_factory):
    """tiny.model trained by mace_run_train in .venv-mace (60 epochs of 12 frames, about 14 s)."""
    python = backend_python("mace")
    out = tmp_path_factory.mktemp("mace")
    done = subprocess.run([str(python.parent / "mace_run_train"), "--name=tiny", "--seed=1", f"--train_file={frames[0]}",
                           "--valid_fraction=0.2", "--energy_key=energy", "--forces_key=forces", "--E0s=average",
                           "--model=MACE", "--num_channels=8", "--max_L=0", "--r_max=4.0", "--num_interactions=2",
                           "--correlation=2", "--batch_size=4", "--valid_batch_size=4", "--max_num_epochs=60", "--lr=0.02",
                           "--default_dtype=float64", "--device=cpu", "--num_workers=0", "--save_cpu"],
                          cwd=out, env=_one_thread_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    own = out / "own.npz"
    done = subprocess.run([str(python), str(BACKENDS / "mace_predict.py"), str(out / "tiny.model"), str(frames[0]),
                           str(own)], env=_one_thread_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "tiny.model", np.load(own)


def mace_refs(model: Path) -> dict:
    python = str(backend_python("mace"))
    return {"ase": ModelRef("ase:mace.calculators:MACECalculator", {
                "python": python, "model_paths": str(model), "device": "cpu", "default_dtype": "float64"},
                allow_code=True),
            # openmm-ml's mace gives the interaction energy (E0s taken off) unless asked for the total one
            "openmm-ml": ModelRef("openmm-ml:mace", {"python": python, "modelPath": str(model),
                                                     "returnEnergyType": "energy"}, allow_code=True)}


@pytest.mark.parametrize("way", ["ase", "openmm-ml"])
def test_mace_served_from_its_environment_equals_maces_own_calculator(mace_model, frames, way):
    model, own = mace_model
    dataset = frames[1]
    meta = assert_equals_own_prediction(mace_refs(model)[way], dataset, own["energies"], own["forces"])
    assert meta["versions"]["mace-torch"] == "0.3.16" and meta["files"] == {
        str(model.resolve()): meta["files"][str(model.resolve())]}


def test_mace_served_runs_200_steps_and_resumes_exactly(mace_model, frames, tmp_path):
    assert_200_steps_resume_exactly(mace_refs(mace_model[0])["ase"], frames[1], tmp_path)


@pytest.fixture(scope="module")
def torchmdnet_model(frames, tmp_path_factory):
    """An ET checkpoint trained by torchmd-train in .venv-torchmdnet (20 epochs of 40 frames), and its own
    prediction on the 15 frames."""
    python = backend_python("torchmdnet")
    out = tmp_path_factory.mktemp("torchmdnet")
    data = load_dataset(RMD17)
    np.save(out / "coords.npy", data.R[:50])
    np.save(out / "embed.npy", data.z)
    np.save(out / "energy.npy", (data.E[:50] - data.E[:50].mean()).reshape(-1, 1))
    np.save(out / "forces.npy", data.F[:50])
    done = subprocess.run([str(python.parent / "torchmd-train"), "--conf", str(BACKENDS / "torchmdnet_tiny.yaml"),
                           "--coord-files", str(out / "coords.npy"), "--embed-files", str(out / "embed.npy"),
                           "--energy-files", str(out / "energy.npy"), "--force-files", str(out / "forces.npy"),
                           "--log-dir", str(out / "run")], cwd=out, env=_one_thread_env(), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checkpoint = sorted((out / "run").glob("epoch=*.ckpt"), key=lambda p: p.stat().st_mtime)[-1]
    dataset = frames[1]
    np.savez(out / "frames.npz", z=dataset.z, R=dataset.R)
    done = subprocess.run([str(python), str(BACKENDS / "torchmdnet_predict.py"), str(checkpoint),
                           str(out / "frames.npz"), str(out / "own.npz")], env=_one_thread_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return checkpoint, np.load(out / "own.npz")


def torchmdnet_refs(checkpoint: Path) -> dict:
    python = str(backend_python("torchmdnet"))
    return {"ase": ModelRef("ase:torchmdnet.calculators:TMDNETCalculator", {
                "python": python, "model_file": str(checkpoint), "device": "cpu"}, allow_code=True),  # float32 inside
            "openmm-ml": ModelRef("openmm-ml:torchmdnet", {"python": python, "modelPath": str(checkpoint),
                                                          "lengthScale": 0.1, "energyScale": EV_IN_KJ_PER_MOL},
                                  allow_code=True)}


@pytest.mark.parametrize("way", ["ase", "openmm-ml"])
def test_torchmdnet_served_from_its_environment_equals_its_own_model_call(torchmdnet_model, frames, way):
    checkpoint, own = torchmdnet_model
    dataset = frames[1]
    meta = assert_equals_own_prediction(torchmdnet_refs(checkpoint)[way], dataset, own["energies"], own["forces"])
    assert meta["versions"]["torchmd-net"] == "3.1.0"


def test_torchmdnet_served_runs_200_steps_and_resumes_exactly(torchmdnet_model, frames, tmp_path):
    assert_200_steps_resume_exactly(torchmdnet_refs(torchmdnet_model[0])["openmm-ml"], frames[1], tmp_path)
