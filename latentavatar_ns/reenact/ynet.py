"""The Y-shaped network for cross-identity reenactment, and the mapping to the avatar's theta.

One shared expression encoder ``E_shared`` (the avatar's :class:`ExpressionEncoder` architecture)
sees face crops of two people: the avatar's and an actor's. Two decoders turn the shared code
back into face crops, ``D_ava`` for the avatar and ``D_act`` for the actor. Because both people
pass through one encoder while each decoder only ever draws its own person, the code carries
what the two have in common (the expression) and the decoders hold what differs (the face).
A mapping MLP, trained on avatar frames only, regresses the avatar's own person-specific code
theta from the shared code; at reenactment time an actor crop goes ``E_shared -> mapping`` to a
theta the avatar's generator understands.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from latentavatar_ns.model.encoder import ExpressionEncoder, MappingMLP


@dataclass(frozen=True)
class YNetSpec:
    """Sizes that define a Y-network; stored in its checkpoints to rebuild it."""

    crop_size: int = 128
    """Side of the face crops the encoder reads and the decoders draw (the avatar's encoder crop size)."""
    encoder_channels: Tuple[int, ...] = (32, 64, 128, 256)
    """Widths of the shared encoder's stride-2 convs (the avatar encoder's)."""
    code_dim: int = 256
    """Shared code size (the avatar's expression code size)."""
    theta_dim: int = 128
    """The avatar's person-specific code size (the mapping's output)."""

    def to_dict(self) -> Dict:
        return {**asdict(self), "encoder_channels": list(self.encoder_channels)}

    @classmethod
    def from_dict(cls, data: Dict) -> "YNetSpec":
        return cls(int(data["crop_size"]), tuple(int(c) for c in data["encoder_channels"]), int(data["code_dim"]),
                   int(data["theta_dim"]))


def _up_block(cin: int, cout: int) -> nn.Sequential:
    # Nearest upsampling then a 3x3 conv: no checkerboard artefacts of transposed convs.
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.InstanceNorm2d(cout, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
    )


class CropDecoder(nn.Module):
    """Shared code -> face crop: the encoder mirrored (linear to C x S/16 x S/16, four x2 up stages)."""

    def __init__(self, crop_size: int = 128, channels: Sequence[int] = (32, 64, 128, 256), code_dim: int = 256):
        super().__init__()
        channels = list(channels)
        self.feat = crop_size // (2 ** len(channels))
        if self.feat < 1 or crop_size % (2 ** len(channels)):
            raise ValueError(f"crop_size {crop_size} must be divisible by {2 ** len(channels)}")
        self.start_channels = channels[-1]
        self.fc = nn.Linear(code_dim, self.start_channels * self.feat * self.feat)
        widths = channels[::-1][1:] + [channels[0]]  # 256 -> 128 -> 64 -> 32 -> 32
        blocks, cin = [], self.start_channels
        for cout in widths:
            blocks.append(_up_block(cin, cout))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, code: Float[Tensor, "B D"]) -> Float[Tensor, "B 3 S S"]:
        x = F.leaky_relu(self.fc(code), 0.2).view(-1, self.start_channels, self.feat, self.feat)
        return torch.sigmoid(self.to_rgb(self.blocks(x)))


class YNetwork(nn.Module):
    """``encoder`` (E_shared), ``decoder_avatar`` (D_ava), ``decoder_actor`` (D_act) and ``mapping``."""

    def __init__(self, spec: YNetSpec):
        super().__init__()
        self.spec = spec
        self.encoder = ExpressionEncoder(spec.crop_size, spec.encoder_channels, spec.code_dim)
        self.decoder_avatar = CropDecoder(spec.crop_size, spec.encoder_channels, spec.code_dim)
        self.decoder_actor = CropDecoder(spec.crop_size, spec.encoder_channels, spec.code_dim)
        self.mapping = MappingMLP(spec.code_dim, spec.code_dim, spec.theta_dim)

    def decoder(self, domain: str) -> CropDecoder:
        return self.decoder_avatar if domain == "avatar" else self.decoder_actor

    def encode(self, crops: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B D"]:
        """Face crops in [0, 1] (any size; resampled to the crop size) -> shared codes."""
        crops = crops.float()
        if crops.shape[-1] != self.spec.crop_size:
            crops = F.interpolate(crops, size=self.spec.crop_size, mode="area")
        return self.encoder(crops)

    def theta(self, crops: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B T"]:
        """Crops of either person -> the avatar's person-specific code theta."""
        return self.mapping(self.encode(crops))


def ssim(pred: Float[Tensor, "B C H W"], target: Float[Tensor, "B C H W"], window: int = 11,
         sigma: float = 1.5) -> Tensor:
    """Mean SSIM of images in [0, 1] (Gaussian window, valid region only).

    The Gaussian is applied as two 1-D convolutions, several times cheaper than the 2-D window of
    the usual implementations: on a CPU the full-window SSIM costs more than the decoder it trains.
    """
    c = pred.shape[1]
    x = torch.arange(window, dtype=pred.dtype, device=pred.device) - (window - 1) / 2.0
    g = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    g = g / g.sum()
    maps = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    maps = F.conv2d(maps, g.view(1, 1, 1, -1).expand(5 * c, 1, 1, window), groups=5 * c)
    maps = F.conv2d(maps, g.view(1, 1, -1, 1).expand(5 * c, 1, window, 1), groups=5 * c)
    mu_x, mu_y, xx, yy, xy = maps.split(c, dim=1)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return value.mean()


def ssim_l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """The Y-network's image loss: (1 - SSIM) + L1."""
    return (1.0 - ssim(pred, target)) + (pred - target).abs().mean()


def state_fingerprint(modules: Dict[str, nn.Module]) -> str:
    """SHA-256 of module weights (names, shapes and values, in a fixed order)."""
    digest = hashlib.sha256()
    for prefix in sorted(modules):
        state = modules[prefix].state_dict()
        for key in sorted(state):
            value = state[key].detach().cpu().contiguous()
            digest.update(f"{prefix}.{key}:{tuple(value.shape)}:{value.dtype}".encode())
            digest.update(value.numpy().tobytes())
    return digest.hexdigest()
