"""The compiled backend (openmlff/potentials/compiled.py): the model file rebuilt from openmlff's own code and compiled
by Inductor on this machine gives the TorchScript path's forces to float32 rounding for the three architectures, with
and without a box; MD on it resumes bit for bit after a kill; replica batches use it; committee files and a cache
folder others may write to are refused in one line."""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch

from openmlff.core.errors import InputError
from openmlff.model_file.reader import ModelFileError
from openmlff.model_file.writer import export_model
from openmlff.potentials.compiled import CACHE_ENV, CompiledModelComputation, cache_dir, rebuild
from openmlff.potentials.exported import TorchModelComputation, build_replica_system, build_system

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_helpers import trained_like_potential  # noqa: E402
from test_md_runner import assert_same_run, config, start_child  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory):
    """A cache of this test session's own (children inherit it), never the user's ~/.cache."""
    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.getbasetemp() / "compiled_cache")
    yield
    if saved is None:
        os.environ.pop(CACHE_ENV)
    else:
        os.environ[CACHE_ENV] = saved


@pytest.fixture(scope="module")
def dataset(test_data):
    from openmlff.data import load_dataset

    return load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")


def _model_file(path: Path, variant: str, z, periodic: bool = False) -> Path:
    """A small float32 model with trained-like weights for the dataset's molecule, exported as users export."""
    potential = trained_like_potential(variant, dtype=torch.float32)
    return export_model(potential, z, path, periodic=periodic)


@pytest.mark.slow  # each compiles for 30-50 s: CI runs them, the everyday tier does not
@pytest.mark.parametrize("variant", ["et", "visnet-l1", "nequip"])
def test_compiled_forces_equal_torchscript_with_and_without_a_box(variant, dataset, tmp_path):
    model = _model_file(tmp_path / "model.pt", variant, dataset.z, periodic=True)
    for box in (None, np.eye(3) * 1.1):  # 1.1 nm: images of the 0.9 nm aspirin within the 5 Å cutoff
        periodic = box is not None
        scripted = TorchModelComputation(model, periodic=periodic)
        compiled = CompiledModelComputation(model, periodic=periodic)
        for frame in dataset.R[:6]:
            e0, f0 = scripted.energy_and_forces(frame / 10.0, box)
            e1, f1 = compiled.energy_and_forces(frame / 10.0, box)
            scale = np.abs(f0).max()
            assert scale > 1.0  # trained-like weights: forces worth comparing
            np.testing.assert_allclose(f1, f0, rtol=0, atol=1e-5 * scale)  # float32 rounding of the model
            assert e1 == pytest.approx(e0, abs=1e-6 * abs(e0))
        assert compiled.compile_s is not None


@pytest.mark.slow
def test_a_compiled_system_gives_openmm_the_same_forces(dataset, tmp_path):
    model = _model_file(tmp_path / "model.pt", "et", dataset.z)
    forces = {}
    for backend in ("torchforce", "compiled"):
        system = build_system(dataset.z, model, backend=backend)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(dataset.R[3] / 10.0)
        forces[backend] = context.getState(getForces=True).getForces(asNumpy=True)._value
    np.testing.assert_allclose(forces["compiled"], forces["torchforce"], rtol=0,
                               atol=1e-5 * np.abs(forces["torchforce"]).max())


@pytest.mark.slow
def test_compiled_replicas_give_each_copy_its_own_forces(dataset, tmp_path):
    from openmlff.potentials.exported import write_replica_module

    model = _model_file(tmp_path / "model.pt", "et", dataset.z)
    starts = dataset.R[:3] + np.arange(3)[:, None, None] * np.array([3.0, 0.0, 0.0])  # 3 Å apart: inside the cutoff
    wrapper = write_replica_module(model, dataset.n_atoms, tmp_path / "replicas.pt")

    def forces(system, positions_nm):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(positions_nm)
        return context.getState(getForces=True).getForces(asNumpy=True)._value

    batch = forces(build_replica_system(dataset.z, wrapper, 3, backend="compiled", model_path=model),
                   starts.reshape(-1, 3) / 10.0).reshape(3, -1, 3)
    alone = np.stack([forces(build_system(dataset.z, model), s / 10.0) for s in starts])
    np.testing.assert_allclose(batch, alone, rtol=0, atol=1e-5 * np.abs(alone).max())


def test_a_committee_file_is_refused_in_one_line(dataset, tmp_path):
    from openmlff.model_file.writer import CommitteePotential, ExportedPotential, _save_module

    members = [trained_like_potential("et", dtype=torch.float32, seed=s) for s in (0, 1)]
    module = torch.jit.script(CommitteePotential([ExportedPotential(m, dataset.z) for m in members]))
    path = _save_module(module, members[0], dataset.z, tmp_path / "committee.pt", {"committee": {"members": 2}}, False)
    with pytest.raises(ModelFileError, match="committee.pt: the compiled backend takes one openmlff model"):
        rebuild(path)


def test_a_cache_others_may_write_to_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(CACHE_ENV, str(shared))
    with pytest.raises(InputError, match="must be owned by you and writable by no one else"):
        cache_dir()
    shared.chmod(0o700)
    folder = cache_dir()
    assert folder.parent.parent == shared and f"torch-{torch.__version__}" in folder.name
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


@pytest.mark.slow
def test_a_compiled_run_killed_after_a_checkpoint_resumes_bit_for_bit(aspirin, dataset, tmp_path):
    """The kill/resume harness of test_md_runner on the compiled backend: a new process compiles again (from the
    cache) and must continue the same trajectory. An untrained ET whose forces are scaled down holds together for
    300 cold steps."""
    from untrained_model import write_untrained_et

    model = write_untrained_et(tmp_path / "et.pt", dataset)
    weak = rebuild(model)
    weak.potential.scale_ev.fill_(1e-3)
    export_model(weak.potential.float(), dataset.z, tmp_path / "weak.pt")
    models = {"stable": tmp_path / "weak.pt"}
    cfg = replace(config(steps=300, report_interval_steps=10, checkpoint_interval_steps=100, platform="CPU",
                         temperature_K=20.0), backend="compiled", bond_deviation_limit_angstrom=3.0)
    interrupted = tmp_path / "interrupted"
    child = start_child(models, aspirin, interrupted, cfg, kill_at_step=150)
    _, stderr = child.communicate(timeout=400)
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert "compiled" in stderr.decode()  # the compile was announced and timed
    assert json.loads((interrupted / "checkpoint.json").read_text())["step"] == 100
    resumed = assert_same_run(models, aspirin, interrupted, tmp_path / "uninterrupted", cfg)
    assert resumed["resumed_from_step"] == 100 and resumed["backend"] == "compiled"
    # the resumed run compiled in this process (from the cache); the next one, as a campaign worker's next run,
    # finds the model compiled
    uninterrupted = json.loads((tmp_path / "uninterrupted" / "summary.json").read_text())
    assert uninterrupted["setup_time_s"] < 0.5 * resumed["setup_time_s"]


def test_the_gpu_check_script_runs_here_and_writes_its_json(tmp_path):
    """benchmarks/gpu_check.py with --device cpu: the script itself works where CI runs (its CUDA rows skipped)."""
    import subprocess

    out = tmp_path / "gpu_check.json"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--out", str(out), "--device",
                           "cpu", "--sections", "environment", "replicas", "dft", "--budget-s", "120"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    sections = json.loads(out.read_text())["sections"]
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(("environment", "replicas", "dft"),
                                                                                 "done")
    assert sections["environment"]["openmm"] == openmm.__version__
    assert sections["replicas"]["4"]["ms_per_step"] > 0


@pytest.mark.slow
def test_a_solvated_system_holds_the_compiled_model_on_the_peptide(tmp_path):
    """Solvated ML/MM: the compiled model on the peptide's atoms of a water box (the box handed over) gives the
    TorchForce system's forces on every particle (zero on the water from the model's force)."""
    pytest.importorskip("openmmml")
    from openmlff.md import SimulationConfig
    from openmlff.md.environment import build_environment_system, prepare_environment
    from openmlff.potentials import get_potential
    from openmlff.structures import load_structure

    peptide = load_structure("ac-ala3-nhme")
    model = _model_file(tmp_path / "ala3.pt", "et", peptide.atomic_numbers, periodic=True)
    config = SimulationConfig(temperature_K=300, steps=10, timestep_fs=0.5, solvate_padding_nm=0.6,
                              nonbonded_cutoff_nm=0.65)
    environment = prepare_environment(peptide, config)
    forces = {}
    for backend in ("torchforce", "compiled"):
        system = build_environment_system(get_potential(model), environment, replace(config, backend=backend))
        for force in system.getForces():
            force.setForceGroup(31 if force.getName().startswith("openmlff model") else 0)
        context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(environment.positions_angstrom / 10.0)
        forces[backend] = context.getState(getForces=True, groups={31}).getForces(asNumpy=True)._value
    scale = np.abs(forces["torchforce"]).max()
    np.testing.assert_allclose(forces["compiled"], forces["torchforce"], rtol=0, atol=1e-5 * scale)
    assert np.abs(forces["compiled"][peptide.n_atoms:]).max() == 0


@pytest.mark.slow
def test_metrics_of_the_compiled_model_equal_the_torchscript_ones(dataset, tmp_path):
    """`metrics --backend compiled`: batched frames through the compiled model, the same metrics to float32 rounding
    (the last batch smaller than the others: shapes stay dynamic)."""
    from openmlff.metrics.evaluation import evaluate_model
    from openmlff.report.metrics_outputs import MetricsConfig, write_model_metrics

    model = _model_file(tmp_path / "model.pt", "visnet-l1", dataset.z)
    small = dataset.subset(np.arange(20))
    plain = evaluate_model(model, small, batch_size=8, include_frames=False)
    report, _, _ = write_model_metrics(model, small, tmp_path / "metrics.json", MetricsConfig(batch_size=8,
                                                                                              backend="compiled"))
    for key in ("force_mae", "force_rmse", "force_max", "fnm_mae", "fnm_max", "energy_mae"):
        assert report["global"][key] == pytest.approx(plain[key], rel=1e-4), key


@pytest.mark.slow
def test_compiled_forces_hold_when_another_package_changed_dynamos_settings(dataset, tmp_path):
    """nequip's set_global_state turns dynamo's capture_dynamic_output_shape_ops and capture_scalar_outputs on for the
    whole process; under them Inductor compiled ViSNet to forces off by a fifth of the largest one (torch 2.12.1).
    The compiled backend pins the settings it was validated with. (dynamo's own patch, not pytest's monkeypatch:
    undoing a monkeypatch hid the settings from later tests.)"""
    import torch._dynamo

    torch._dynamo.reset()
    before = torch._dynamo.config.capture_dynamic_output_shape_ops  # True here once a nequip model has loaded
    model = _model_file(tmp_path / "model.pt", "visnet-l1", dataset.z)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True, capture_scalar_outputs=True):
        for frame in dataset.R[:3]:
            _, expected = TorchModelComputation(model).energy_and_forces(frame / 10.0)
            _, got = CompiledModelComputation(model, device="cpu").energy_and_forces(frame / 10.0)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert torch._dynamo.config.capture_dynamic_output_shape_ops is before  # readable and restored for later tests
