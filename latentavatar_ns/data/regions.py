"""Face, mouth and eye regions of a frame, located through the encoder's face square.

Every dataset has a face square per frame (``crop_affine``: the encoder's crop, projected from the
head pose or fitted to landmarks), upright and running from the brows to the chin. The mouth and
the eyes sit at fixed fractions of it, so the losses that weigh them need no landmarks at training
time. Boxes are (x0, y0, x1, y1) in fractions of the image, so they apply at any resolution.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from latentavatar_ns.data.face_crop import DEFAULT_FACE_CENTER, DEFAULT_FACE_HALF_SIZE

REGIONS = ("face", "mouth", "eyes")
"""The order of a frame's boxes in ``face_square_regions`` and in the ``region_boxes`` batch key."""

_FRACTIONS: Dict[str, Tuple[float, float, float, float]] = {
    "face": (0.0, 0.0, 1.0, 1.0),
    # Lips, teeth and the opening jaw: below the nose, between the mouth corners' widest smile.
    "mouth": (0.22, 0.52, 0.78, 0.92),
    # Both eyes with their lids, below the brows.
    "eyes": (0.15, 0.12, 0.85, 0.42),
}


def canonical_region_box(name: str, center: Sequence[float] = DEFAULT_FACE_CENTER,
                         half_size: float = DEFAULT_FACE_HALF_SIZE,
                         depth: float = 0.6) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
    """(lo, hi) corners, in canonical head space, of a region's part of the canonical face square (the square
    the encoder's crop is projected from, facing +z), from ``depth`` behind the square to as far in front:
    room for an open mouth's inside and the lips in front of the square."""
    u0, v0, u1, v1 = _FRACTIONS[name]
    cx, cy, cz = center
    left, top = cx - half_size, cy + half_size  # the square's first row is its top (+y)
    lo = (left + 2 * half_size * u0, top - 2 * half_size * v1, cz - depth)
    hi = (left + 2 * half_size * u1, top - 2 * half_size * v0, cz + depth)
    return lo, hi


def square_corners(affine: np.ndarray) -> np.ndarray:
    """(4, 2) pixel positions of the face square's corners (top-left, top-right, bottom-left, bottom-right)."""
    full = np.vstack([affine, [0.0, 0.0, 1.0]])
    unit = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float64)
    return (np.linalg.inv(full) @ unit.T).T[:, :2]


def face_square_regions(affine: np.ndarray, width: int, height: int) -> Float[np.ndarray, "3 4"]:
    """Boxes of ``REGIONS`` as fractions (x0, y0, x1, y1) of the image, clipped to it.

    A region is the bounding box of its part of the face square, which stays close to the
    region itself while the square is near upright (head roll of a few tens of degrees).
    """
    full = np.vstack([affine, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)
    boxes = []
    for name in REGIONS:
        u0, v0, u1, v1 = _FRACTIONS[name]
        corners = np.array([[u0, v0, 1], [u1, v0, 1], [u0, v1, 1], [u1, v1, 1]], dtype=np.float64)
        pixels = (inverse @ corners.T).T[:, :2]
        lo, hi = pixels.min(0) / (width, height), pixels.max(0) / (width, height)
        boxes.append(np.concatenate([lo, hi]).clip(0.0, 1.0))
    return np.stack(boxes).astype(np.float32)


def pixel_box(box: Float[np.ndarray, "4"], width: int, height: int) -> Tuple[int, int, int, int]:
    """A fractional box as whole pixels (x0, y0, x1, y1), at least one pixel wide and high."""
    x0, y0 = int(np.floor(box[0] * width)), int(np.floor(box[1] * height))
    x1, y1 = max(int(np.ceil(box[2] * width)), x0 + 1), max(int(np.ceil(box[3] * height)), y0 + 1)
    return x0, y0, min(x1, width), min(y1, height)


def box_masks(boxes: Float[Tensor, "B 4"], height: int, width: int) -> Float[Tensor, "B H W 1"]:
    """1 inside each image's fractional box, 0 outside (pixel centres), at the given resolution."""
    ys = (torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5) / width
    inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])  # (B, H)
    inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])  # (B, W)
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()[..., None]


EXPRESSION_MARGIN = 0.1
"""How far past the face square an expression reaches, in fractions of the square's side: raised brows
above it, the chin of an open jaw below it."""


def expression_boxes(boxes: Float[Tensor, "B 3 4"], parts: str) -> Float[Tensor, "B K 4"]:
    """Boxes (fractions of the frame) of what an expression moves, from a frame's ``REGIONS`` boxes.

    ``face``: the face square grown by ``EXPRESSION_MARGIN`` above and below. ``parts``: the eye band grown
    up to the brows and the mouth box grown down to the chin, leaving the nose, cheeks and forehead out.
    """
    face, mouth, eyes = (boxes[:, REGIONS.index(name)] for name in ("face", "mouth", "eyes"))
    reach = EXPRESSION_MARGIN * (face[:, 3] - face[:, 1])
    top, bottom = face[:, 1] - reach, face[:, 3] + reach
    if parts == "face":
        return torch.stack([face[:, 0], top, face[:, 2], bottom], dim=-1)[:, None]
    if parts == "parts":
        brows = torch.stack([eyes[:, 0], top, eyes[:, 2], eyes[:, 3]], dim=-1)
        jaw = torch.stack([mouth[:, 0], mouth[:, 1], mouth[:, 2], bottom], dim=-1)
        return torch.stack([brows, jaw], dim=1)
    raise ValueError(f"expression_boxes: parts must be 'face' or 'parts', not {parts!r}")


def union_mask(boxes: Float[Tensor, "B K 4"], height: int, width: int) -> Bool[Tensor, "B H W"]:
    """True inside any of each image's boxes (pixel centres), at the given resolution."""
    return torch.stack([box_masks(boxes[:, k], height, width)[..., 0] for k in range(boxes.shape[1])]).amax(0) > 0


def square_region_masks(size: int) -> Float[Tensor, "R S S"]:
    """Masks of ``REGIONS`` on the face square itself (the encoder's crop), ``size`` pixels a side."""
    boxes = torch.tensor([_FRACTIONS[name] for name in REGIONS], dtype=torch.float32)
    return box_masks(boxes, size, size)[..., 0]


def masked_l1(pred: Float[Tensor, "B H W C"], target: Float[Tensor, "B H W C"],
              mask: Float[Tensor, "B H W 1"]) -> Tensor:
    """Mean absolute error over the masked pixels of the whole batch (0 when the mask is empty)."""
    weight = mask.sum() * pred.shape[-1]
    return ((pred - target).abs() * mask).sum() / weight.clamp_min(1.0)
