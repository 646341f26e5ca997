"""What the model's outputs are compared with: ground truth at both resolutions, L1 in face regions, and
the face crop its code is read from; and the penalties on the shape itself: the tri-plane's total variation,
and the density's asymmetry across the face's middle.

With patch-wise training the outputs cover a window of the frame (``outputs["window"]``: top, left,
size in low-res pixels); the targets and the region masks are cut to the same window.
"""

from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from latentavatar_ns.data.regions import REGIONS, box_masks, masked_l1
from latentavatar_ns.model.warm_start import pixel_weights


def as_float_image(image: Tensor) -> Tensor:
    """uint8 (cached frames) or float images as floats in [0, 1]."""
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


def _window(outputs: Dict[str, Tensor]) -> Tuple[int, int, int]:
    top, left, size = (int(v) for v in outputs["window"])
    return top, left, size


def targets(outputs: Dict[str, Tensor], batch: Dict, low_hw: Tuple[int, int], sr_scale: int
            ) -> Tuple[Float[Tensor, "B H W 3"], Float[Tensor, "B h w 3"], Float[Tensor, "B h w 1"]]:
    """The image at the output's resolution, and the image and matte at the low resolution.

    ``low_hw`` is the whole frame's low-res size; the output's own is used unless it is a window.
    """
    device = outputs["rgb_low"].device
    image = as_float_image(batch["image"].to(device))
    image = image[None] if image.ndim == 3 else image
    mask = batch["mask"].to(device).float()
    mask = mask[None] if mask.ndim == 3 else mask
    size = low_hw if "window" in outputs else tuple(outputs["rgb_low"].shape[1:3])
    image_low = F.interpolate(image.permute(0, 3, 1, 2), size=size, mode="area").permute(0, 2, 3, 1)
    mask_low = F.interpolate(mask.permute(0, 3, 1, 2), size=size, mode="area").permute(0, 2, 3, 1)
    if "window" in outputs:
        top, left, n = _window(outputs)
        s = sr_scale
        image = image[:, top * s:(top + n) * s, left * s:(left + n) * s]
        image_low = image_low[:, top:top + n, left:left + n]
        mask_low = mask_low[:, top:top + n, left:left + n]
    return image, image_low, mask_low


def plane_total_variation(planes: Float[Tensor, "B P C R R"], norm: Literal["squared", "absolute"] = "squared",
                          spared: Optional[Float[Tensor, "P R R"]] = None) -> Float[Tensor, ""]:
    """Mean squared (or absolute) difference between neighbouring texels of the tri-plane, along both of each
    plane's axes. Pairs with a texel marked in ``spared`` count as no difference."""
    rows, cols = planes[..., 1:, :] - planes[..., :-1, :], planes[..., :, 1:] - planes[..., :, :-1]
    rows, cols = (rows.pow(2), cols.pow(2)) if norm == "squared" else (rows.abs(), cols.abs())
    if spared is not None:
        kept = 1 - spared[:, None]  # (P, 1, R, R), one per channel
        rows = rows * torch.minimum(kept[..., 1:, :], kept[..., :-1, :])
        cols = cols * torch.minimum(kept[..., :, 1:], kept[..., :, :-1])
    return rows.mean() + cols.mean()


def mirror_opacity_gap(density: Float[Tensor, "B N 1"], step: float) -> Float[Tensor, ""]:
    """Mean absolute difference of opacity ``1 - exp(-density * step)`` between the first half of the points
    and the second (their mirror images, in the same order)."""
    opacity = 1.0 - torch.exp(-density[..., 0] * step)
    half = opacity.shape[1] // 2
    return (opacity[:, :half] - opacity[:, half:]).abs().mean()


def region_losses(outputs: Dict[str, Tensor], batch: Dict, image: Tensor, image_low: Tensor,
                  weights: Dict[str, float], low_hw: Tuple[int, int], sr_scale: int) -> Dict[str, Tensor]:
    """L1 averaged inside each region's box (``batch["region_boxes"]``, fractions of the frame), at both
    resolutions, for the regions (of ``REGIONS``) whose weight is set."""
    if not any(w > 0 for w in weights.values()) or "region_boxes" not in batch:
        return {}
    boxes = batch["region_boxes"].to(image.device).float().reshape(-1, len(REGIONS), 4)
    full_hw, out_low_hw = outputs["rgb"].shape[1:3], outputs["rgb_low"].shape[1:3]
    if "window" in outputs:  # masks of the whole frame, cut like the targets
        top, left, n = _window(outputs)
        s = sr_scale
        full_hw, out_low_hw = (low_hw[0] * s, low_hw[1] * s), low_hw  # type: ignore[assignment]
    losses = {}
    for r, name in enumerate(REGIONS):
        weight = weights.get(name, 0.0)
        if weight <= 0:
            continue
        mask, mask_low = box_masks(boxes[:, r], *full_hw), box_masks(boxes[:, r], *out_low_hw)
        if "window" in outputs:
            mask = mask[:, top * s:(top + n) * s, left * s:(left + n) * s]
            mask_low = mask_low[:, top:top + n, left:left + n]
        losses[f"{name}_loss"] = weight * (masked_l1(outputs["rgb"], image, mask)
                                           + masked_l1(outputs["rgb_low"], image_low, mask_low))
    return losses


def crop_reconstruction_loss(reconstruction: Float[Tensor, "B 3 S S"], crops: Float[Tensor, "B 3 s s"],
                             region_weights: Dict[str, float]) -> Tensor:
    """L1 between the face crops (resized to the reconstruction's side) and their reconstruction from the
    code, weighted per pixel by ``pixel_weights``: 1, plus each region's weight inside its box."""
    size = reconstruction.shape[-1]
    crops = as_float_image(crops.to(reconstruction.device))
    if crops.shape[-1] != size:
        crops = F.interpolate(crops, size=size, mode="area")
    weights = pixel_weights(size, region_weights).to(reconstruction.device)
    return ((reconstruction - crops).abs() * weights).mean()


def region_crops(image: Float[Tensor, "B H W 3"], boxes: Float[Tensor, "B R 4"], region: int,
                 size: Tuple[int, int]) -> Float[Tensor, "B 3 h w"]:
    """Each image's box of one region (fractions of the frame) cut out and resized to ``size`` (h, w),
    bilinearly and differentiably (``roi_align``)."""
    from torchvision.ops import roi_align

    height, width = image.shape[1:3]
    scale = torch.tensor([width, height, width, height], device=image.device, dtype=image.dtype)
    pixels = boxes[:, region].to(image.dtype) * scale
    rois = torch.cat([torch.arange(len(pixels), device=image.device, dtype=image.dtype)[:, None], pixels], dim=1)
    return roi_align(image.permute(0, 3, 1, 2), rois, output_size=size, spatial_scale=1.0, sampling_ratio=2,
                     aligned=True)
