"""Expression encoder and mapping MLP: face crop -> 256-d code -> person-specific code theta."""

from __future__ import annotations

from typing import List, Sequence

from jaxtyping import Float
from torch import Tensor, nn


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1),
        nn.InstanceNorm2d(cout, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
    )


class ExpressionEncoder(nn.Module):
    """Stride-2 conv stack on the face crop, then a linear layer to the expression code.

    The code is normalised per sample (zero mean, unit variance over its channels): the generator
    sees codes of one scale whatever the crop's brightness, as in the official release.
    """

    def __init__(self, crop_size: int = 128, channels: Sequence[int] = (32, 64, 128, 256), code_dim: int = 256):
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
        self.crop_size = crop_size
        self.code_dim = code_dim

    def forward(self, crops: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B D"]:
        z = self.fc(self.convs(crops * 2.0 - 1.0).flatten(1))
        return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + 1e-6)


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
