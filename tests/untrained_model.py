"""Untrained exported models for tests that need a real openmlff model file (batched `energies`, metadata)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from openmlff.model_file.writer import export_model
from openmlff.models import build_model, fit_element_energies

#: A very small ET: fast enough to evaluate hundreds of frames in a test.
TINY_ET = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}


def write_untrained_et(path, dataset, metadata: dict | None = None, seed: int = 0) -> Path:
    """Export a tiny untrained ET for the dataset's molecule (element energies fitted to its energies)."""
    torch.manual_seed(seed)
    potential = build_model("et", TINY_ET)
    potential.set_energy_statistics(fit_element_energies(dataset.z, dataset.E), float(np.sqrt(np.mean(dataset.F**2))))
    return export_model(potential.eval(), dataset.z, Path(path), metadata)
