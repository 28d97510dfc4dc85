"""Fixtures shared by the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder (/work/shared/data beside the repository); see its PROVENANCE.md."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not found (tests that read real datasets need it)")
    return path
