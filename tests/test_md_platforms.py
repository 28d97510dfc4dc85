"""openmlff.md.platforms: platform choice, precision and property errors."""

from __future__ import annotations

import pytest

from openmlff.md import PlatformError, available_platforms, select_platform
from openmlff.md.platforms import AUTOMATIC_PLATFORM_ORDER


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
