"""Held-out metrics on the full frame and on the face box: PSNR, SSIM, LPIPS-VGG and LPIPS-Alex."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional import structural_similarity_index_measure

from latentavatar_ns.model.lpips import Net, load_lpips
from latentavatar_ns.data.regions import square_corners


def face_box(affine: np.ndarray, width: int, height: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel bounds of the encoder's face square in the image, clipped to it."""
    pixels = square_corners(affine)
    x0, y0 = (int(v) for v in np.floor(pixels.min(0)))
    x1, y1 = (int(v) for v in np.ceil(pixels.max(0)))
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def psnr_db(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1], the prediction clamped to that range; one definition for the
    training metrics, the held-out evaluation and the benchmarks."""
    return -10.0 * torch.log10(F.mse_loss(pred.float().clamp(0, 1), gt.float()).clamp_min(1e-10))


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """:func:`psnr_db` as a number."""
    return float(psnr_db(pred, gt))


def mouth_box(box: Tuple[int, int, int, int]) -> Tuple[int, int, int, int]:
    """The lower half of a face box (mouth and jaw), where most expression lives."""
    x0, y0, x1, y1 = box
    return x0, (y0 + y1) // 2, x1, y1


class ImageMetrics:
    """PSNR, SSIM and LPIPS of (H, W, 3) images in [0, 1]; LPIPS nets load once from the asset cache."""

    def __init__(self, lpips_nets: Sequence[Net] = ("vgg", "alex"), required: bool = True,
                 device: Optional[torch.device] = None):
        self.lpips = {net: load_lpips(net, required=required, device=device) for net in lpips_nets}

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> Dict[str, float]:
        p = pred.permute(2, 0, 1)[None].float().clamp(0, 1)
        g = gt.permute(2, 0, 1)[None].float().to(p.device)
        out = {
            "psnr": psnr(p, g),
            "ssim": float(structural_similarity_index_measure(p, g, data_range=1.0)),  # type: ignore[arg-type]
        }
        for net, module in self.lpips.items():
            if module is not None and min(p.shape[-2:]) >= 32:
                out[f"lpips_{net}"] = float(module.to(p.device)(p, g).mean())
        return out


def mean_metrics(rows: List[Dict[str, float]]) -> Dict[str, float]:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


@torch.no_grad()
def evaluate_heldout(pipeline, metrics: Optional[ImageMetrics] = None) -> Dict[str, Any]:
    """Every held-out frame encoded from its own crop and rendered from its own camera."""
    metrics = metrics or ImageMetrics()
    dataset = pipeline.datamanager.eval_dataset
    model = pipeline.model
    model.eval()
    full_rows, face_rows = [], []
    for i in range(len(dataset)):
        item = dataset.get_data(i)
        rgb = model.get_outputs_for_camera(dataset.cameras[i : i + 1], batch=item)["rgb"]
        gt = item["image"].to(rgb.device)
        full_rows.append(metrics(rgb, gt))
        x0, y0, x1, y1 = face_box(dataset.crop_affines[i], gt.shape[1], gt.shape[0])
        face_rows.append(metrics(rgb[y0:y1, x0:x1], gt[y0:y1, x0:x1]))
    return {"full_frame": mean_metrics(full_rows), "face_box": mean_metrics(face_rows), "frames": len(dataset)}


@torch.no_grad()
def expression_gain(pipeline) -> Dict[str, float]:
    """How much of the held-out frames' expressions the avatar renders, in dB.

    Each held-out frame is rendered twice from its own camera: with the code encoded from its own
    crop, and with the mean code of the training frames (the avatar's "average face"). The gain is
    the PSNR difference on the face box and on its lower half (mouth and jaw). An avatar that ignores
    its code scores 0, whatever its image quality; pose and identity cancel out.
    """
    dataset = pipeline.datamanager.eval_dataset
    model = pipeline.model
    model.eval()
    mean_code = model.code_table.mean()
    rows = []
    for i in range(len(dataset)):
        item = dataset.get_data(i)
        camera = dataset.cameras[i : i + 1].to(model.device)
        own = model.get_outputs_for_camera(camera, batch=item)["rgb"]
        average = model.render_code(mean_code, camera)["rgb"][0].clamp(0.0, 1.0)
        gt = item["image"].to(own.device)
        face = face_box(dataset.crop_affines[i], gt.shape[1], gt.shape[0])
        row = {}
        for name, (x0, y0, x1, y1) in (("face_box_db", face), ("mouth_db", mouth_box(face))):
            row[name] = psnr(own[y0:y1, x0:x1], gt[y0:y1, x0:x1]) - psnr(average[y0:y1, x0:x1], gt[y0:y1, x0:x1])
        rows.append(row)
    return mean_metrics(rows)
