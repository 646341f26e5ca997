"""Super-resolution head: low-res feature map -> high-res RGB, a small U-Net."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2, inplace=True),
        )


class SuperResolution(nn.Module):
    """One down level with a skip, then ``log2(scale) + 1`` bilinear x2 up stages, sigmoid RGB.

    For the paper's x4 (128 -> 512) that is: double conv @128, down to 64, up to 128 (+ skip),
    up to 256, up to 512.
    """

    def __init__(self, in_channels: int = 32, width: int = 64, scale: int = 4):
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"super-resolution scale must be a power of two, got {scale}")
        self.inc = DoubleConv(in_channels, width)
        self.down = DoubleConv(width, width * 2)
        self.up_skip = DoubleConv(width * 2 + width, width)
        ups, c = [], width
        for _ in range(int(math.log2(scale))):
            ups.append(DoubleConv(c, max(c // 2, 16)))
            c = max(c // 2, 16)
        self.ups = nn.ModuleList(ups)
        self.out = nn.Conv2d(c, 3, 1)
        self.scale = scale

    def forward(self, features: Float[Tensor, "B C h w"]) -> Float[Tensor, "B 3 H W"]:
        x1 = self.inc(features)
        x2 = self.down(F.avg_pool2d(x1, 2))
        up2 = F.interpolate(x2, size=x1.shape[-2:], mode="bilinear", align_corners=False)
        x = self.up_skip(torch.cat([up2, x1], 1))
        for up in self.ups:
            x = up(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        return torch.sigmoid(self.out(x))
