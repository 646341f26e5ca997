"""A learning rate that holds, then falls along a half cosine over the run's last steps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Type

from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class LateCosineDecaySchedulerConfig(SchedulerConfig):
    """Constant until ``decay_start`` of ``max_steps``, then a half cosine down to ``final_factor`` of the rate."""

    _target: Type = field(default_factory=lambda: LateCosineDecayScheduler)
    final_factor: float = 0.1
    """The rate at ``max_steps`` as a fraction of the initial one (it stays there after)."""
    decay_start: float = 0.5
    """Fraction of ``max_steps`` at which the fall begins: the first part of a run keeps the full step size,
    which sets up the avatar's layout and codes; the fall then lets the last steps settle into fine detail."""
    max_steps: int = 3000
    """The step at which the rate reaches ``final_factor``."""


class LateCosineDecayScheduler(Scheduler):
    """See :class:`LateCosineDecaySchedulerConfig`. The multiplier is a Python float, so that checkpoints
    hold no NumPy scalars and load with ``weights_only=True``."""

    config: LateCosineDecaySchedulerConfig

    def multiplier(self, step: int) -> float:
        cfg = self.config
        start = cfg.decay_start * cfg.max_steps
        if step <= start:
            return 1.0
        t = min((step - start) / max(cfg.max_steps - start, 1.0), 1.0)
        return cfg.final_factor + (1.0 - cfg.final_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> LambdaLR:
        return LambdaLR(optimizer, lr_lambda=lambda step: self.multiplier(step))
