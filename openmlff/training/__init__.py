"""Training: losses, the trainer with checkpoints and resume, and (later) metric-guided improvement."""

from .losses import LossWeights, energy_force_mse
from .trainer import TrainingConfig, TrainingError, TrainingResult, load_checkpoint, train

__all__ = ["LossWeights", "TrainingConfig", "TrainingError", "TrainingResult", "energy_force_mse",
           "load_checkpoint", "train"]
