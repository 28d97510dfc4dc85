"""Choosing the OpenMM platform (CUDA, OpenCL, CPU, Reference); torch threads are openmlff.core.threads'.

Automatic choice takes the fastest platform this OpenMM build has: CUDA, then OpenCL, then CPU.
Reference (slow, double precision, useful for exact comparisons) is used only when named.
"""

from __future__ import annotations

import openmm

from ..core.errors import InputError

#: Platforms tried, in order, when none is named.
AUTOMATIC_PLATFORM_ORDER = ("CUDA", "OpenCL", "CPU")
#: Precision used on platforms that have a 'Precision' property when none is asked for.
DEFAULT_GPU_PRECISION = "mixed"
PRECISIONS = ("single", "mixed", "double")


class PlatformError(InputError):
    """A requested platform or platform property is not available; the message lists what is."""


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms this installation can use (plugins loaded)."""
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


#: OpenMM CPU-platform threads unless the caller names them (see select_platform).
DEFAULT_CPU_THREADS = "1"


def select_platform(name: str | None = None, precision: str | None = None,
                    properties: dict[str, str] | None = None) -> tuple[openmm.Platform, dict[str, str]]:
    """The OpenMM platform to run on and the properties to create the Context with.

    name: case-insensitive, or None for the first available of AUTOMATIC_PLATFORM_ORDER. precision: 'single',
    'mixed' or 'double', only on platforms with a 'Precision' property (CUDA, OpenCL; default 'mixed').
    properties: further platform properties (e.g. {'Threads': '4'} on CPU, {'DeviceIndex': '1'} on CUDA).
    """
    available = available_platforms()
    if name is None:
        chosen = next((p for p in AUTOMATIC_PLATFORM_ORDER if p in available), None)
        if chosen is None:
            raise PlatformError(
                f"none of the automatic platforms {list(AUTOMATIC_PLATFORM_ORDER)} is available; "
                f"available platforms: {available}")
    else:
        chosen = {p.lower(): p for p in available}.get(name.strip().lower())
        if chosen is None:
            raise PlatformError(f"OpenMM platform {name!r} is not available; available platforms: {available}")
    platform = openmm.Platform.getPlatformByName(chosen)
    supported = list(platform.getPropertyNames())

    props: dict[str, str] = {}
    if precision is None and "Precision" in supported:
        precision = DEFAULT_GPU_PRECISION
    if precision is not None:
        if precision not in PRECISIONS:
            raise PlatformError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
        if "Precision" not in supported:
            raise PlatformError(
                f"platform {chosen} has no precision setting (asked for {precision!r}); "
                "CPU computes in mixed precision and Reference in double; only CUDA and OpenCL take one")
        props["Precision"] = precision
    if chosen == "CPU":
        # The model runs in torch with its own threads; OpenMM's CPU platform only integrates. One
        # OpenMM thread costs nothing here and makes its Langevin noise independent of how threads
        # are scheduled, so a resumed run equals an uninterrupted one even on a loaded machine.
        props["Threads"] = DEFAULT_CPU_THREADS
    for key, value in (properties or {}).items():
        if key not in supported:
            raise PlatformError(f"platform {chosen} has no property {key!r}; its properties: {supported}")
        props[key] = str(value)
    return platform, props


def torchforce_properties_in_effect(system: openmm.System) -> dict[str, str] | None:
    """The TorchForce properties as the force in the System reports them (None without a TorchForce)."""
    from ..core._compat import import_openmmtorch

    torch_force_class = import_openmmtorch().TorchForce
    for force in system.getForces():
        if torch_force_class.isinstance(force):
            return dict(torch_force_class.cast(force).getProperties())
    return None
