"""How rare each training frame's expression is, read from the face crops alone (before training).

The encoder's crops are aligned to the head, so what changes between two crops of one person is
mostly the expression. A frame whose crop is far from its nearest neighbours' shows an expression
that few other frames share: an open mouth among closed ones, a wink, a look aside. Drawing such
frames more often gives the code more chances to learn them than their share of the video would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Shaped
from torch import Tensor

FEATURE_SIDE = 32
"""Crops are compared as grey images of this side: enough for a mouth or an eye to count."""
MAX_REFERENCE_FRAMES = 4096
"""Neighbours are looked for among at most this many frames (evenly spaced), which bounds the cost."""


def crop_features(crops: Shaped[Tensor, "N 3 S S"]) -> Float[Tensor, "N F"]:
    """Grey, area-downsampled, zero-mean crops as flat vectors (uint8 or float in [0, 1])."""
    x = crops.float() / 255.0 if crops.dtype == torch.uint8 else crops.float()
    grey = F.interpolate(x.mean(dim=1, keepdim=True), size=FEATURE_SIDE, mode="area").flatten(1)
    return grey - grey.mean(dim=1, keepdim=True)


def frame_rarity(crops: Shaped[Tensor, "N 3 S S"], neighbours: int = 5) -> Float[Tensor, " N"]:
    """Mean distance of each crop to its ``neighbours`` nearest other crops, over the mean of that (1 = typical)."""
    feats = crop_features(crops)
    n = len(feats)
    if n < 2:
        return torch.ones(n)
    reference = torch.linspace(0, n - 1, min(n, MAX_REFERENCE_FRAMES)).round().long()
    rarity = torch.empty(n)
    for start in range(0, n, 1024):
        block = torch.arange(start, min(start + 1024, n))
        dist = torch.cdist(feats[block], feats[reference])
        dist[block[:, None] == reference[None]] = float("inf")  # a frame is not its own neighbour
        k = min(neighbours, len(reference) - 1)
        rarity[block] = dist.topk(k, dim=1, largest=False).values.mean(dim=1)
    mean = rarity.mean()
    return rarity / mean if mean > 0 else torch.ones(n)


def draw_weights(crops: Shaped[Tensor, "N 3 S S"], strength: float) -> Float[Tensor, " N"]:
    """Relative chance of drawing each frame: 1 + ``strength`` × its rarity (all equal for 0)."""
    if strength <= 0:
        return torch.ones(len(crops))
    return 1.0 + strength * frame_rarity(crops)
