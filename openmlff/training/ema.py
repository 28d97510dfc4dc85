"""Exponential moving average of model weights, the usual way to get a smoother, better model from noisy SGD."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InputError


class ExponentialMovingAverage:
    """Keeps shadow = decay * shadow + (1 - decay) * weights after every optimiser step.

    The shadow model is what is validated, kept as "best" and exported.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99):
        if not 0.0 <= decay < 1.0:
            raise InputError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model)
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p, 1.0 - self.decay)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
