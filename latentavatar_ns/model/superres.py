"""Super-resolution head: low-res feature map -> high-res RGB, a small U-Net, optionally steered by theta."""

from __future__ import annotations

import math
from typing import Optional, cast

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

    With ``style_dim`` > 0 (not in the paper; EG3D's super-resolution takes its latent the same way)
    every instance norm's scale and shift are also moved by a linear map of a style vector (theta),
    adaptive instance normalisation. The maps start at zero, so training starts from the plain head.

    With ``residual`` (not in the paper; EG3D's super-resolution adds its output to the upsampled image the
    same way) the head's output is added, in logit space, to the bilinear upsample of the feature map's first
    three channels, the low-res RGB. Its last layer starts at zero, so the head starts as that upsample and
    learns only the detail on top of it.
    """

    def __init__(self, in_channels: int = 32, width: int = 64, scale: int = 4, style_dim: int = 0,
                 residual: bool = False):
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"super-resolution scale must be a power of two, got {scale}")
        self.inc = DoubleConv(in_channels, width)
        self.down = DoubleConv(width, width * 2)
        self.up_skip = DoubleConv(width * 2 + width, width)
        ups, c, widths = [], width, [width, width * 2, width]
        for _ in range(int(math.log2(scale))):
            ups.append(DoubleConv(c, max(c // 2, 16)))
            c = max(c // 2, 16)
            widths.append(c)
        self.ups = nn.ModuleList(ups)
        self.out = nn.Conv2d(c, 3, 1)
        self.scale = scale
        self.residual = residual
        if residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(cast(Tensor, self.out.bias))
        self.style: Optional[nn.ModuleList] = None
        if style_dim > 0:  # per block: (scale, shift) of each of its two norms
            linears = [nn.Linear(style_dim, 4 * width) for width in widths]
            for linear in linears:
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)
            self.style = nn.ModuleList(linears)

    def forward(self, features: Float[Tensor, "B C h w"],
                style: Optional[Float[Tensor, "B S"]] = None) -> Float[Tensor, "B 3 H W"]:
        if (style is None) != (self.style is None):
            raise ValueError("this super-resolution head needs a style vector" if style is None
                             else "this super-resolution head takes no style vector")
        mods = iter(self.style) if self.style is not None else None
        x1 = self._block(self.inc, features, mods, style)
        x2 = self._block(self.down, F.avg_pool2d(x1, 2), mods, style)
        up2 = F.interpolate(x2, size=x1.shape[-2:], mode="bilinear", align_corners=False)
        x = self._block(self.up_skip, torch.cat([up2, x1], 1), mods, style)
        for up in self.ups:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = self._block(cast(nn.Sequential, up), x, mods, style)
        if not self.residual:
            return torch.sigmoid(self.out(x))
        base = F.interpolate(features[:, :3], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(torch.logit(base.clamp(1e-3, 1.0 - 1e-3)) + self.out(x))

    @staticmethod
    def _block(block: nn.Sequential, x: Tensor, mods, style: Optional[Tensor]) -> Tensor:
        if mods is None or style is None:
            return block(x)
        gains = next(mods)(style)[:, :, None, None].chunk(4, dim=1)  # scale, shift of norm 1, then of norm 2
        for i, layer in enumerate(block):
            x = layer(x)
            if isinstance(layer, nn.InstanceNorm2d):
                g, b = gains[0:2] if i == 1 else gains[2:4]
                x = x * (1.0 + g) + b
        return x
