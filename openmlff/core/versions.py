"""Versions of the packages that decide what a model computes and how it runs, for provenance records."""

from __future__ import annotations

import datetime
import platform
from importlib.metadata import PackageNotFoundError, version

#: Distributions that provide the `openmmtorch` module, in the order they are looked for.
OPENMMTORCH_DISTRIBUTIONS = ("acellera-openmmtorch-cpu", "acellera-openmmtorch-cu12", "acellera-openmmtorch-cu13",
                             "openmmtorch", "openmm-torch")


def package_versions(names=("openmlff", "numpy", "ase", "tblite")) -> dict[str, str]:
    """Installed versions of the distributions `names` ('not installed' for missing ones)."""
    out = {}
    for package in names:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def runtime_versions() -> dict[str, str]:
    """openmlff, torch, OpenMM, openmm-torch (with the distribution that provides it), numpy and Python."""
    import numpy
    import openmm
    import torch

    from .. import __version__

    out = {"openmlff": __version__, "torch": torch.__version__, "openmm": openmm.__version__,
           "numpy": numpy.__version__, "python": platform.python_version()}
    for dist in OPENMMTORCH_DISTRIBUTIONS:
        try:
            out["openmmtorch"] = f"{version(dist)} ({dist})"
            break
        except PackageNotFoundError:
            continue
    return out


def processor_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() elsewhere), for benchmark tables."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second: when a run, a campaign session or a lock began or ended."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
