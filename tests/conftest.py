"""Fixtures shared by the test suite; plain helpers are in modules beside it (toy_models.py, campaign_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


#: Real data files the tests read, copied into the repository with their provenance (tests/data/PROVENANCE.md).
TEST_DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(TEST_DATA.parent))  # the helper modules beside this file


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


@pytest.fixture(scope="session")
def aspirin_data(test_data) -> Path:
    """100 rMD17 aspirin frames with labels (tests/data/datasets)."""
    return test_data / "datasets" / "rmd17_aspirin_100.npz"


@pytest.fixture(scope="session")
def models(aspirin_data, tmp_path_factory) -> dict[str, Path]:
    """A stable toy model and one that collapses at once, both for the aspirin of the data set."""
    from campaign_helpers import STRETCHED_BOND
    from openmlff.data import load_dataset
    from toy_models import write_toy_model

    folder = tmp_path_factory.mktemp("models")
    data = load_dataset(aspirin_data)
    return {"stable": write_toy_model(folder / "stable.pt", data.z, data.R[0]),
            "blowup": write_toy_model(folder / "blowup.pt", data.z, data.R[0], stretch_bond=STRETCHED_BOND)}
