"""The optimizer configuration every parameter group of the avatar uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from nerfstudio.engine.optimizers import AdamOptimizerConfig


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam with PyTorch's fused implementation selectable."""

    fused: Optional[bool] = True
    """Update all of a group's tensors in one kernel instead of a loop of small ops per tensor: the same
    Adam step, several times faster on a CPU, where the tri-plane's texels make the update a visible part
    of each step. None or False is PyTorch's default loop."""
