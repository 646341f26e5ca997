"""StyleGAN2-style tri-plane generator: the whole tri-plane is a function of the code theta."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


class ModulatedConv2d(nn.Module):
    """Convolution whose weights are scaled per sample by a style, then demodulated.

    Runs as one grouped convolution over the batch (each sample its own weights), which is how
    StyleGAN2 keeps per-sample modulation cheap.
    """

    def __init__(self, cin: int, cout: int, kernel: int, style_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.affine = nn.Linear(style_dim, cin)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)  # start as an unmodulated conv
        self.scale = 1.0 / math.sqrt(cin * kernel * kernel)
        self.demodulate = demodulate
        self.padding = kernel // 2

    def forward(self, x: Float[Tensor, "B Cin H W"], style: Float[Tensor, "B S"]) -> Float[Tensor, "B Cout H W"]:
        b, cin, h, w = x.shape
        s = self.affine(style)  # (B, Cin)
        weight = self.weight[None] * self.scale * s[:, None, :, None, None]  # (B, Cout, Cin, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        cout = weight.shape[1]
        out = F.conv2d(x.reshape(1, b * cin, h, w), weight.reshape(b * cout, cin, *weight.shape[3:]),
                       padding=self.padding, groups=b)
        return out.reshape(b, cout, h, w) + self.bias[None, :, None, None]


class GeneratorBlock(nn.Module):
    """Optional 2x upsampling, then two modulated 3x3 convs with LeakyReLU."""

    def __init__(self, cin: int, cout: int, style_dim: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.conv1 = ModulatedConv2d(cin, cout, 3, style_dim)
        self.conv2 = ModulatedConv2d(cout, cout, 3, style_dim)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.leaky_relu(self.conv1(x, style), 0.2)
        return F.leaky_relu(self.conv2(x, style), 0.2) * math.sqrt(2.0)


class TriplaneGenerator(nn.Module):
    """theta -> 4x4 transposed-conv start -> modulated conv blocks -> three feature planes.

    ``channels[i]`` is the width of the block at resolution ``4 * 2**i``; the last block's output is
    projected by an undemodulated 1x1 modulated conv to 3 x ``plane_channels`` channels.

    With ``static_planes`` a learned tri-plane, shared by every code, is added to that output: the
    person's fixed detail (brows, eyes, hair) is then fitted texel by texel, as in K-Planes, instead of
    waiting for the convolutions to learn to draw it, and the convolutions are left the part that moves.

    With ``code_to_field`` (not in the paper) a linear projection of theta is added to the first plane
    everywhere. Since the field sums the three planes' samples, this adds the projected code to every
    sample's feature: the code reaches the density and feature MLPs directly, as NeRFace conditions its
    MLP on the expression, beside the path through the convolutions.

    With ``expression_planes`` K > 0 (not in the paper) K learned tri-planes are added as well, each
    weighted by a linear function of theta: blend shapes of the tri-plane, as NeRFBlendShape blends
    expression bases of a voxel grid. Like the static planes they are fitted texel by texel, so a change
    confined to a few texels (an eyelid, the lips) is learned directly rather than through convolutions
    whose styles act on a whole channel at once. With ``expression_plane_resolution`` the bases are held at
    that coarser side and upsampled bilinearly to the planes', so each is smooth across neighbouring texels.
    """

    def __init__(
        self,
        style_dim: int = 128,
        channels: Sequence[int] = (256, 256, 256, 256, 256, 192, 96),
        plane_channels: int = 32,
        static_planes: bool = False,
        code_to_field: bool = False,
        expression_planes: int = 0,
        expression_plane_resolution: int = 0,
    ):
        super().__init__()
        self.start = nn.ConvTranspose2d(style_dim, channels[0], kernel_size=4)
        blocks: List[GeneratorBlock] = []
        cin = channels[0]
        for i, cout in enumerate(channels):
            blocks.append(GeneratorBlock(cin, cout, style_dim, upsample=i > 0))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.to_planes = ModulatedConv2d(cin, 3 * plane_channels, 1, style_dim, demodulate=False)
        self.plane_channels = plane_channels
        self.resolution = 4 * 2 ** (len(channels) - 1)
        r = self.resolution
        self.static_planes = nn.Parameter(torch.zeros(1, 3, plane_channels, r, r)) if static_planes else None
        # Cleared by the model early in training (``static_planes_start_step``); while off the planes get no gradient.
        self.use_static_planes = True
        rb = expression_plane_resolution or r
        if not 0 < rb <= r:
            raise ValueError(f"expression_plane_resolution must be 0 (the planes' side) or 1 to the planes' side {r}, "
                             f"got {expression_plane_resolution}")
        # Zero bases: the generator starts as it is without them; the weights' map starts random, so every basis
        # receives a gradient from the first step.
        self.expression_planes = nn.Parameter(torch.zeros(expression_planes, 3, plane_channels, rb, rb)) \
            if expression_planes > 0 else None
        self.to_expression_weights = nn.Linear(style_dim, expression_planes) if expression_planes > 0 else None
        self.code_to_field = nn.Linear(style_dim, plane_channels) if code_to_field else None
        if self.code_to_field is not None:  # start as the paper's generator
            nn.init.zeros_(self.code_to_field.weight)
            nn.init.zeros_(self.code_to_field.bias)

    def forward(self, theta: Float[Tensor, "B S"]) -> Float[Tensor, "B 3 C R R"]:
        return self.planes_and_offset(theta)[0]

    def planes_and_offset(self, theta: Float[Tensor, "B S"]) \
            -> Tuple[Float[Tensor, "B 3 C R R"], Optional[Float[Tensor, "B 3 C R R"]]]:
        """The tri-plane, and the expression planes' offset it includes (None without them)."""
        x = F.leaky_relu(self.start(theta[:, :, None, None]), 0.2)
        for block in self.blocks:
            x = block(x, theta)
        planes = self.to_planes(x, theta)
        b, _, r, _ = planes.shape
        planes = planes.reshape(b, 3, self.plane_channels, r, r)
        if self.code_to_field is not None:
            shift = self.code_to_field(theta)[:, None, :, None, None]  # (B, 1, C, 1, 1): the same at every texel
            planes = torch.cat([planes[:, :1] + shift, planes[:, 1:]], dim=1)
        offset = self.expression_offset(theta, r)
        if offset is not None:
            planes = planes + offset
        if self.static_planes is not None and self.use_static_planes:
            planes = planes + self.static_planes
        return planes, offset

    def expression_offset(self, theta: Float[Tensor, "B S"], resolution: int) -> Optional[Float[Tensor, "B 3 C R R"]]:
        """The expression planes weighted by theta, at the tri-plane's resolution (None without them)."""
        if self.expression_planes is None or self.to_expression_weights is None:
            return None
        weights = self.to_expression_weights(theta)  # (B, K)
        bases = self.expression_planes
        k, _, c, rb, _ = bases.shape
        # One matmul over the flattened bases (cheaper on a CPU than the equivalent einsum).
        offset = (weights @ bases.reshape(k, -1)).reshape(-1, c, rb, rb)
        if rb != resolution:
            offset = F.interpolate(offset, size=(resolution, resolution), mode="bilinear", align_corners=False)
        return offset.reshape(len(theta), 3, c, resolution, resolution)
