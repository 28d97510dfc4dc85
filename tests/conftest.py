"""Fixtures shared by the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


#: Real data files the tests read, copied into the repository with their provenance (tests/data/PROVENANCE.md).
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The test data folder inside the repository (datasets/, structures/; see its PROVENANCE.md)."""
    return TEST_DATA


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests share a 2-core machine: one torch thread each (TorchForce uses torch's threads too)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def aspirin():
    """The built-in aspirin structure (MD17 atom order). Test modules that need the dataset override this."""
    from openmlff.structures import load_structure

    return load_structure("aspirin")


@pytest.fixture(scope="session")
def toy_model(aspirin, tmp_path_factory):
    """A stable harmonic TorchScript model of aspirin that obeys the export contract (tests/toy_models.py)."""
    from toy_models import write_toy_model

    return write_toy_model(tmp_path_factory.mktemp("models") / "toy64.pt", aspirin.atomic_numbers,
                           aspirin.positions_angstrom)
