"""Exponential moving average of model weights, the usual way to get a smoother, better model from noisy SGD."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.errors import InputError


class ExponentialMovingAverage:
    """Keeps shadow = d * shadow + (1 - d) * weights after every optimiser step.

    The shadow model is what is validated, kept as "best" and exported. With `warmup`, the decay of
    update number t (counting from 0) is d = min(decay, (1 + t) / (10 + t)) (the number-of-updates
    rule of TensorFlow's ExponentialMovingAverage): without it, decay 0.99 keeps 0.99^t of the random
    initial weights in the average, 37 % after 100 steps, which made openmlff's validated and
    exported model far worse than its raw weights in the first few hundred steps (benchmarks/peers.py).
    """

    def __init__(self, model: nn.Module, decay: float = 0.99, warmup: bool = False):
        if not 0.0 <= decay < 1.0:
            raise InputError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.shadow = copy.deepcopy(model)
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    def decay_at(self, update: int) -> float:
        """The decay used by update number `update` (0 for the first)."""
        return min(self.decay, (1.0 + update) / (10.0 + update)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, update: int) -> None:
        """Fold in the weights after optimiser step number `update` (0 for the first)."""
        weight = 1.0 - self.decay_at(update)
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p, weight)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
