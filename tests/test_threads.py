"""openmlff.core.threads: one thread for small work, CPUs from affinity and cgroup quota, no spinning OpenMP threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from openmlff.core.errors import InputError
from openmlff.core.threads import (
    MAX_DEFAULT_THREADS, PARALLEL_MIN_ATOMS, _read_v1, _read_v2, default_threads, set_threads, usable_cpus,
)


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(None) == 1  # no size given: small work
        assert set_threads(None, atoms_per_call=21) == 1 == torch.get_num_threads()
        with pytest.raises(ValueError):
            set_threads(0)
        with pytest.raises(InputError, match="positive integer"):
            set_threads(-2)
    finally:
        torch.set_num_threads(before)


def test_default_is_one_thread_for_every_molecule_of_the_study_and_a_training_batch():
    for atoms in (21, 42, 166, 16 * 21, 16 * 42):
        assert default_threads(atoms) == 1
    assert default_threads(PARALLEL_MIN_ATOMS) == min(usable_cpus(), MAX_DEFAULT_THREADS)


def test_usable_cpus_follow_the_affinity_mask():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from openmlff.core.threads import usable_cpus; print(usable_cpus())"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "1"


def test_cgroup_quota_files_are_read(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _read_v2(tmp_path) == pytest.approx(1.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _read_v2(tmp_path) is None
    (tmp_path / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert _read_v1(tmp_path) == pytest.approx(2.0)
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    assert _read_v1(tmp_path) is None
    assert _read_v2(tmp_path / "missing") is None


def test_importing_openmlff_makes_openmp_threads_passive_unless_the_user_chose():
    code = "import os, openmlff, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert out.stdout.strip() == "ACTIVE"


def test_model_calls_flush_denormals_to_zero_with_unchanged_forces(tmp_path):
    """set_threads and every model evaluation flush denormals (threads.flush_denormals); the forces of a real
    model are the same as unflushed (benchmarks/denormals.py measured them bit-identical)."""
    code = """
import numpy as np, torch, sys
sys.path.insert(0, 'tests')
from openmlff.structures import load_structure
from openmlff.models import build_model
from openmlff.model_file.writer import export_model
from openmlff.model_file.reader import energies_and_forces, load_exported
tiny = torch.tensor([1e-39], dtype=torch.float32)
assert (tiny * 1.0).item() != 0.0                       # denormals kept: torch's default
aspirin = load_structure('aspirin')
torch.manual_seed(0)
path = export_model(build_model('et').eval(), aspirin.atomic_numbers, sys.argv[1])
module = load_exported(path)[0]
x = aspirin.positions_angstrom[None] / 10 + 0.005 * np.random.default_rng(0).standard_normal((4, 21, 3))
torch.set_flush_denormal(False)
plain = module.energies(torch.tensor(x, requires_grad=True)).detach().numpy()
e, f = energies_and_forces(module, x)                   # flushes from here on
assert (tiny * 1.0).item() == 0.0
torch.set_flush_denormal(False)
e0 = module.energies(torch.tensor(x)).detach().numpy()
np.testing.assert_allclose(e, plain, rtol=1e-12)
np.testing.assert_allclose(e0, plain, rtol=1e-12)
from openmlff.core.threads import set_threads
set_threads(1)
assert (tiny * 1.0).item() == 0.0
print('ok')
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "et.pt")], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
