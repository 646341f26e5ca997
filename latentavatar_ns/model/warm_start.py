"""Warm-starting the expression encoder: the encoder half of a face-crop autoencoder, fitted before training.

At the first step of training the encoder is random: every code is an arbitrary function of the
crop, and the generator has to learn what to draw while the encoder learns what to tell it.
Expressions that cover few pixels (blinks, a smile's corners) then never enter the code. Fitted
first as an autoencoder of the training crops, with the mouth and the eyes weighted as the region
losses weigh them, the encoder starts training with codes that already tell those frames apart. The
decoder is thrown away, unless the model trains one alongside (``code_reconstruction_weight``), which
the warm start then fits.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from latentavatar_ns.data.regions import REGIONS, square_region_masks


class CropDecoder(nn.Module):
    """Code -> face crop: a linear layer to a 4x4 map, then bilinear x2 upsampling and 3x3 convs (halving
    the width at each, down to 16 channels), sigmoid."""

    def __init__(self, code_dim: int, crop_size: int, width: int = 128):
        super().__init__()
        stages = max(round(math.log2(crop_size / 4)), 0)
        if 4 * 2**stages != crop_size:
            raise ValueError(f"crop size {crop_size} is not 4 times a power of two")
        self.fc = nn.Linear(code_dim, width * 16)
        widths = [max(width // 2**i, 16) for i in range(stages + 1)]
        self.ups = nn.ModuleList(nn.Conv2d(cin, cout, 3, padding=1) for cin, cout in zip(widths[:-1], widths[1:]))
        self.out = nn.Conv2d(widths[-1], 3, 3, padding=1)
        self.width = width

    def forward(self, code: Float[Tensor, "B D"]) -> Float[Tensor, "B 3 S S"]:
        x = F.leaky_relu(self.fc(code).reshape(-1, self.width, 4, 4), 0.2)
        for conv in self.ups:
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)), 0.2)
        return torch.sigmoid(self.out(x))


def pixel_weights(crop_size: int, region_weights: Dict[str, float]) -> Float[Tensor, "1 1 S S"]:
    """1 everywhere, plus each region's weight inside its box of the face square (the crop)."""
    masks = square_region_masks(crop_size)
    weights = torch.ones(crop_size, crop_size)
    for mask, name in zip(masks, REGIONS):
        weights += region_weights.get(name, 0.0) * mask
    return weights[None, None]


def fit_crop_autoencoder(encoder: nn.Module, code_dim: int, crops: Float[Tensor, "N 3 S S"], steps: int,
                         region_weights: Dict[str, float], batch_size: int = 32, lr: float = 1e-3,
                         noise_std: float = 0.0, progress: Optional[Callable[[int, float], None]] = None,
                         decoder: Optional[CropDecoder] = None) -> List[float]:
    """Fit ``encoder`` (crops -> codes) with ``decoder`` (a fresh one if None) to reconstruct ``crops``.

    The loss is L1 weighted per pixel by ``pixel_weights``; ``noise_std`` adds the training noise
    the encoder also sees in training. Returns the loss of every step; ``progress(step, loss)`` is
    called after each.
    """
    crop_size = crops.shape[-1]
    decoder = CropDecoder(code_dim, crop_size).to(crops.device) if decoder is None else decoder
    weights = pixel_weights(crop_size, region_weights).to(crops.device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    losses = []
    for step in range(steps):
        batch = crops[torch.randint(0, len(crops), (min(batch_size, len(crops)),), device=crops.device)]
        noisy = batch + noise_std * torch.randn_like(batch) if noise_std > 0 else batch
        loss = ((decoder(encoder(noisy)) - batch).abs() * weights).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    return losses
