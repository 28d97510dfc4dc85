"""A training checkpoint's own force errors on a set of frames, through the exported model MD would run.

The checkpoint is exported to a temporary TorchScript file and evaluated with openmlff.metrics.evaluation, so
reweighting and recruiting judge exactly the model that `openmlff export` would write (same weights, same float32
path), with the per-frame metrics of openmlff.metrics.force_metrics (kcal/mol/Å).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..data.dataset import Dataset
from ..model_file.writer import export_checkpoint
from ..metrics.evaluation import evaluate_model
from ..training.checkpoint import TrainingCheckpoint


def checkpoint_errors(parent: TrainingCheckpoint, dataset: Dataset, weights: str = "best",
                      batch_size: int = 32, progress: bool = False) -> dict:
    """evaluate_model's result (global, "frames", "atoms", "elements", "units") for the checkpoint on `dataset`."""
    with tempfile.TemporaryDirectory(prefix="openmlff-errors-") as tmp:
        model = export_checkpoint(parent.path, Path(tmp) / "model.pt", weights=weights)
        return evaluate_model(model, dataset, batch_size=batch_size, include_frames=True, progress=progress)
