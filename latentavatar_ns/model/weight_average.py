"""An exponential moving average of a module's trainable parameters, swapped in while it evaluates."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn


class WeightAverage(nn.Module):
    """Shadow copies of ``parameters``, each step moved a fraction ``1 - decay`` toward the trained values.

    The copies are buffers, so checkpoints carry them. :meth:`use` puts them in the parameters' place (the
    trained values kept aside) and back. Early steps average with a shorter memory,
    ``min(decay, (1 + step) / (10 + step))``, so the average does not drag the random initialisation along.
    """

    def __init__(self, parameters: List[nn.Parameter], decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must lie strictly between 0 and 1, got {decay}")
        self.decay = decay
        self.parameters_averaged = parameters
        for i, p in enumerate(parameters):
            self.register_buffer(f"shadow_{i}", p.detach().clone())
        self._trained: Optional[List[Tensor]] = None

    @property
    def shadows(self) -> List[Tensor]:
        return [getattr(self, f"shadow_{i}") for i in range(len(self.parameters_averaged))]

    @property
    def in_use(self) -> bool:
        """Whether the parameters hold the averages now."""
        return self._trained is not None

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move every shadow toward its parameter's trained value (no-op while the averages are in use)."""
        if self.in_use:
            return
        weight = 1.0 - min(self.decay, (1.0 + step) / (10.0 + step))
        torch._foreach_lerp_(self.shadows, [p.detach() for p in self.parameters_averaged], weight)

    @torch.no_grad()
    def use(self, averaged: bool) -> None:
        """Put the averages in the parameters' place (``True``) or the trained values back (``False``)."""
        if averaged and self._trained is None:
            self._trained = [p.detach().clone() for p in self.parameters_averaged]
            torch._foreach_copy_([p.data for p in self.parameters_averaged], self.shadows)
        elif not averaged and self._trained is not None:
            torch._foreach_copy_([p.data for p in self.parameters_averaged], self._trained)
            self._trained = None
