"""Expression encoder and mapping MLP: face crop -> 256-d code -> person-specific code theta."""

from __future__ import annotations

from typing import List, Literal, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1),
        nn.InstanceNorm2d(cout, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
    )


class FrameCodeNorm(nn.Module):
    """Standardise each code channel by its mean and spread over the training frames (running estimates).

    A per-sample normalisation leaves in every code the part all frames share; when that part grows,
    the codes of different expressions point almost the same way and the mapping sees nearly one
    input. Taking out the frames' mean and scaling each channel to unit spread across frames keeps
    what tells frames apart at the scale of the input, however small it has become. Estimates are a
    cumulative average over the first ``1 / momentum`` training batches, then an exponential one;
    outside training they are fixed.
    """

    mean: Tensor
    var: Tensor
    num_batches: Tensor

    def __init__(self, dim: int, momentum: float = 0.02, eps: float = 1e-4):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))
        self.momentum, self.eps = momentum, eps

    def forward(self, z: Float[Tensor, "B D"]) -> Float[Tensor, "B D"]:
        if self.training:
            with torch.no_grad():
                self.num_batches += 1
                rate = max(self.momentum, 1.0 / float(self.num_batches))
                self.mean.lerp_(z.mean(dim=0), rate)
                self.var.lerp_((z - self.mean).pow(2).mean(dim=0), rate)
        return (z - self.mean) * torch.rsqrt(self.var + self.eps)


class ExpressionEncoder(nn.Module):
    """Stride-2 conv stack on the face crop, then a linear layer to the expression code.

    The code is normalised per sample (zero mean, unit variance over its channels): the generator
    sees codes of one scale whatever the crop's brightness, as in the official release. With
    ``normalisation="frames"`` each channel is then standardised over the training frames as well
    (``FrameCodeNorm``).
    """

    def __init__(self, crop_size: int = 128, channels: Sequence[int] = (32, 64, 128, 256), code_dim: int = 256,
                 normalisation: Literal["sample", "frames"] = "sample"):
        super().__init__()
        layers, cin = [], 3
        for cout in channels:
            layers.append(_conv_block(cin, cout))
            cin = cout
        self.convs = nn.Sequential(*layers)
        feat = crop_size // (2 ** len(channels))
        if feat < 1 or crop_size % (2 ** len(channels)):
            raise ValueError(f"crop_size {crop_size} must be divisible by {2 ** len(channels)}")
        self.fc = nn.Linear(cin * feat * feat, code_dim)
        self.frame_norm = FrameCodeNorm(code_dim) if normalisation == "frames" else None
        self.crop_size = crop_size
        self.code_dim = code_dim

    def forward(self, crops: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B D"]:
        z = self.fc(self.convs(crops * 2.0 - 1.0).flatten(1))
        z = (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + 1e-6)
        return z if self.frame_norm is None else self.frame_norm(z)


class MappingMLP(nn.Module):
    """256 -> 256 -> 256 -> 128 with LeakyReLU: the person-specific code theta."""

    def __init__(self, in_dim: int = 256, hidden_dim: int = 256, out_dim: int = 128, num_hidden: int = 2):
        super().__init__()
        layers: List[nn.Module] = []
        dim = in_dim
        for _ in range(num_hidden):
            layers += [nn.Linear(dim, hidden_dim), nn.LeakyReLU(0.2, inplace=True)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, code: Float[Tensor, "B Din"]) -> Float[Tensor, "B Dout"]:
        return self.net(code)
