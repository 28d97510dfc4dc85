"""Thread counts that survive a busy machine (docs/architecture.md "Errors, threads and locks").

torch's default (one OpenMP thread per core, threads that spin while they wait) is fast on an
empty machine and collapses on a shared one: with one of two cores busy with another program, an
ET aspirin forward+backward took 67 ms at two threads against 21 ms at one, and MD fell from 61 to
about 1 step/s, because a spinning thread waits for a partner that the kernel has descheduled.
Two threads bought 5 % on a quiet machine for aspirin. So openmlff chooses, in one place:

- OMP_WAIT_POLICY=PASSIVE (unless the user set it): idle OpenMP threads sleep instead of spinning.
  OpenMP reads it once, when torch is imported, so `configure_process` runs when openmlff is
  imported (import openmlff before torch for it to take effect; the CLI always does).
- one thread for model calls on fewer than PARALLEL_MIN_ATOMS atoms (every molecule of the
  study, and a training batch of 16 aspirins), otherwise as many as the process may use (its CPU
  affinity and cgroup CPU quota, which batch systems and containers set), at most
  MAX_DEFAULT_THREADS. `benchmarks/threads.py` measures these choices, quiet and under load.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import InputError

#: Atoms per model call (molecule atoms x batch) below which one thread is the default.
PARALLEL_MIN_ATOMS = 2000
#: The most threads chosen by default for large calls.
MAX_DEFAULT_THREADS = 8
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def configure_process() -> None:
    """Make idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the environment says otherwise."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v1 or v2) when one is set."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(root: Path = _CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup of this process may use (cpu.max, or cpu.cfs_quota_us / period), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            quota = _read_v2(root / path.lstrip("/")) or _read_v2(root)
            if quota is not None:
                return quota
        elif "cpu" in controllers.split(","):
            for folder in (root / controllers / path.lstrip("/"), root / "cpu" / path.lstrip("/"), root / "cpu"):
                quota = _read_v1(folder)
                if quota is not None:
                    return quota
    return None


def _read_v2(folder: Path) -> float | None:
    try:
        limit, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def _read_v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def default_threads(atoms_per_call: int | None) -> int:
    """The thread count for model calls on `atoms_per_call` atoms (None: unknown, taken as small)."""
    if atoms_per_call is None or atoms_per_call < PARALLEL_MIN_ATOMS:
        return 1
    return min(usable_cpus(), MAX_DEFAULT_THREADS)


#: openmlff flushes denormals wherever a model runs; benchmarks/denormals.py turns it off to time the difference.
FLUSH_DENORMALS = True


def flush_denormals() -> bool:
    """Flush denormal floats to zero in this thread (torch.set_flush_denormal(True)); True where the CPU can.

    Model evaluations make denormals (below 1.2e-38 in float32), which x86 units treat on a slow path:
    benchmarks/denormals.py measured, for the untrained default ET on aspirin, one thread, the training step
    1.9x, a batched evaluation 2.5x, PythonForce and ASE MD steps 1.7x and TorchForce steps 1.2x faster flushed,
    with forces bit-identical. Threads started later by this thread (OpenMP's) inherit the setting.
    """
    import torch

    return bool(torch.set_flush_denormal(True)) if FLUSH_DENORMALS else False


def set_threads(threads: int | None, atoms_per_call: int | None = None) -> int:
    """Set torch's intra-op threads (TorchForce uses them too) to `threads`, or to the default for the work, and
    flush denormals to zero (flush_denormals), before any model runs.

    Returns the count in force.
    """
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    configure_process()
    import torch

    flush_denormals()
    count = default_threads(atoms_per_call) if threads is None else int(threads)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
