"""How much of each frame's expression an avatar renders: region scores, expression gain, silhouettes.

Every scored frame is rendered twice from its own camera: with the code encoded from its own face
crop, and with the mean code of the training frames (the avatar's "average face"). Scores are taken
on the full frame and inside boxes around the face, the mouth and the eyes. The *expression gain*
of a region is the PSNR of the own-code render minus that of the mean-code render: an avatar that
ignores its code scores 0 whatever its image quality, since pose and identity cancel out. The linear
probe asks the step before: which ground-truth expression parameters the codes hold at all.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torchmetrics.functional import structural_similarity_index_measure

from latentavatar_ns.evaluation.metrics import mean_metrics, psnr
from latentavatar_ns.model.pose_refinement import fit_head_pose

Box = Tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, end exclusive."""
BoxesOf = Callable[[str, int, int, int], Dict[str, Box]]
"""(split, frame index, width, height) -> region name -> box; ``full`` is added by the scorer."""

REGION_COLOURS = {"face": (0.1, 0.8, 0.2), "mouth": (0.9, 0.1, 0.1), "eyes": (0.1, 0.4, 1.0)}
"""Box colours of the contact sheet."""


class RegionScorer:
    """PSNR, SSIM and LPIPS of a render against its ground truth inside each region box.

    SSIM is the mean of the whole image's SSIM map inside the box (a small box has no room for the
    11-pixel window of its own); LPIPS sees the box's crop resized to ``lpips_side`` pixels on its
    short side, the scale its network was trained at.
    """

    def __init__(self, lpips: Optional[torch.nn.Module] = None, lpips_side: int = 64):
        self.lpips = lpips
        self.lpips_side = lpips_side

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor, boxes: Dict[str, Box]) -> Dict[str, Dict[str, float]]:
        p = pred.permute(2, 0, 1)[None].float().clamp(0, 1)
        g = gt.permute(2, 0, 1)[None].float().to(p.device)
        _, ssim_map = structural_similarity_index_measure(p, g, data_range=1.0, return_full_image=True)
        out = {}
        for name, (x0, y0, x1, y1) in boxes.items():
            crop_p, crop_g = p[..., y0:y1, x0:x1], g[..., y0:y1, x0:x1]
            row = {"psnr": psnr(crop_p, crop_g), "ssim": float(ssim_map[..., y0:y1, x0:x1].mean())}
            if self.lpips is not None:
                scale = self.lpips_side / max(min(y1 - y0, x1 - x0), 1)
                size = (max(round((y1 - y0) * scale), 16), max(round((x1 - x0) * scale), 16))
                row["lpips"] = float(self.lpips.to(p.device)(
                    F.interpolate(crop_p, size=size, mode="bilinear", align_corners=False),
                    F.interpolate(crop_g, size=size, mode="bilinear", align_corners=False)).mean())
            out[name] = row
        return out


def silhouette_iou(accumulation: torch.Tensor, matte: torch.Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of the rendered matte (any resolution, resized) and the ground-truth matte."""
    acc = accumulation.float().reshape(1, 1, *accumulation.shape[-3:-1])
    acc = F.interpolate(acc, size=matte.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    a, b = acc > threshold, matte[..., 0].to(acc.device) > threshold
    union = (a | b).sum()
    return float((a & b).sum() / union) if union > 0 else 1.0


@torch.no_grad()
def render_pair(model, camera, item: Dict, average_code: torch.Tensor) -> Tuple[Dict, Dict]:
    """Outputs of the frame's own code (encoded from its crop) and of the average code, same camera."""
    model.eval()
    own = model.get_outputs(camera, item)
    average = model.render_code(average_code, camera.to(model.device))
    return own, average


def fitted_frame_camera(model, camera, item: Dict, steps: int):
    """``camera`` moved to the head pose under which the frame's own code (encoded once from its crop) best
    explains its image; only the pose moves (``fit_head_pose``)."""
    code = model.encode(item["encoder_crop"][None].to(model.device))
    return fit_head_pose(lambda cam: model.render_code(code, cam), camera, item["image"].to(model.device),
                         steps=steps)


@torch.no_grad()
def score_split(pipeline, split: str, indices: Sequence[int], boxes_of: BoxesOf, scorer: RegionScorer,
                test_pose_steps: int = 0) -> Dict:
    """Own-code and mean-code scores per region, expression gain and silhouette IoU over the given frames.

    Training frames are seen from their refined head pose when the avatar learned one
    (``--pipeline.model.pose-refinement``), held-out frames from their stored pose, or, with
    ``test_pose_steps`` > 0, from the pose fitted to their image with their own code (``fit_head_pose``).
    Returns ``own`` and ``mean_code`` (region -> metric -> mean), ``gain_db`` (region -> dB),
    ``silhouette_iou`` (own and mean code) and ``frames`` (per-frame PSNR and gain, for sorting).
    """
    model = pipeline.model
    dataset = pipeline.datamanager.train_dataset if split == "train" else pipeline.datamanager.eval_dataset
    model.eval()
    average_code = model.code_table.mean()
    stored = model.frame_codes.clone()  # encoding a frame in eval writes its code; leave the avatar as it was
    own_rows, mean_rows, frames = [], [], []
    for i in indices:
        item = dataset.get_data(int(i))
        item = {k: v for k, v in item.items() if k != "code_idx"}
        camera = dataset.cameras[int(i) : int(i) + 1].to(model.device)
        if split == "train" and model.pose_refinement is not None:  # the pose the avatar was fitted to
            camera = model.pose_refinement(camera, torch.tensor([int(i)]))
        elif test_pose_steps > 0:
            camera = fitted_frame_camera(model, camera, item, test_pose_steps)
        own, average = render_pair(model, camera, item, average_code)
        gt = item["image"]
        height, width = gt.shape[:2]
        boxes = {"full": (0, 0, width, height), **boxes_of(split, int(i), width, height)}
        own_scores = scorer(own["rgb"][0], gt, boxes)
        mean_scores = scorer(average["rgb"][0], gt, boxes)
        own_scores["silhouette"] = {"iou": silhouette_iou(own["accumulation_low"][0], item["mask"])}
        mean_scores["silhouette"] = {"iou": silhouette_iou(average["accumulation_low"][0], item["mask"])}
        own_rows.append(own_scores)
        mean_rows.append(mean_scores)
        frames.append({"index": int(i), "boxes": boxes,
                       "gain_db": {r: own_scores[r]["psnr"] - mean_scores[r]["psnr"] for r in boxes}})
    model.frame_codes.copy_(stored)
    regions = list(own_rows[0])
    own_mean = {r: mean_metrics([row[r] for row in own_rows]) for r in regions}
    avg_mean = {r: mean_metrics([row[r] for row in mean_rows]) for r in regions}
    return {
        "own": {r: v for r, v in own_mean.items() if r != "silhouette"},
        "mean_code": {r: v for r, v in avg_mean.items() if r != "silhouette"},
        "gain_db": {r: own_mean[r]["psnr"] - avg_mean[r]["psnr"] for r in regions if r != "silhouette"},
        "silhouette_iou": {"own": own_mean["silhouette"]["iou"], "mean_code": avg_mean["silhouette"]["iou"]},
        "frames": frames,
        "num_frames": len(frames),
    }


@torch.no_grad()
def code_spread(pipeline, indices: Sequence[int]) -> Dict[str, float]:
    """How much a render changes when only the code changes, against when only the pose changes.

    For consecutive pairs (i, j) of the given held-out frames: RMS difference between frame i rendered
    with its own code and with j's code (same camera), and between frame i's code seen from i's and
    from j's camera. An avatar that ignores its code has a code spread near 0.
    """
    model = pipeline.model
    dataset = pipeline.datamanager.eval_dataset
    model.eval()
    stored = model.frame_codes.clone()
    codes = {int(i): model.encode(dataset.get_data(int(i))["encoder_crop"][None].to(model.device)) for i in indices}
    model.frame_codes.copy_(stored)
    code_rms, pose_rms = [], []
    for i, j in zip(indices[:-1], indices[1:]):
        cam_i, cam_j = (dataset.cameras[k : k + 1].to(model.device) for k in (int(i), int(j)))
        theta_i, theta_j = model.mapping(codes[int(i)]), model.mapping(codes[int(j)])
        planes_i, planes_j = model.planes_from_theta(theta_i), model.planes_from_theta(theta_j)
        base = model.render(planes_i, cam_i, theta=theta_i)["rgb"]
        code_rms.append(float((base - model.render(planes_j, cam_i, theta=theta_j)["rgb"]).pow(2).mean().sqrt()))
        pose_rms.append(float((base - model.render(planes_i, cam_j, theta=theta_i)["rgb"]).pow(2).mean().sqrt()))
    return {"code_change_rms": float(np.mean(code_rms)), "pose_change_rms": float(np.mean(pose_rms)),
            "code_over_pose": float(np.mean(code_rms) / max(float(np.mean(pose_rms)), 1e-8)), "pairs": len(code_rms)}


@torch.no_grad()
def encoded_codes(pipeline, split: str, indices: Sequence[int]) -> Float[np.ndarray, "N D"]:
    """The codes the avatar's encoder gives the frames' own crops (the stored code table left as it was)."""
    model = pipeline.model
    dataset = pipeline.datamanager.train_dataset if split == "train" else pipeline.datamanager.eval_dataset
    model.eval()
    stored = model.frame_codes.clone()
    codes = [model.encode(dataset.get_data(int(i))["encoder_crop"][None].to(model.device))[0].cpu().numpy()
             for i in indices]
    model.frame_codes.copy_(stored)
    return np.stack(codes)


def linear_probe(features: Float[np.ndarray, "N D"], targets: Float[np.ndarray, "N K"], folds: int = 8,
                 ridge: float = 10.0, seed: int = 0) -> Float[np.ndarray, " K"]:
    """How much of each target (a column: one ground-truth expression parameter) a linear map reads from
    the features (a frame's code, its head pose, or both side by side): the cross-validated R^2 of a
    ridge regression on standardised features.

    Frames are dealt to the folds at random, so the frames of one blink land in several folds: this
    asks whether the features carry the parameter, not whether the encoder generalises. 1 is a
    parameter held linearly, 0 or less one that is not; a constant target scores 0. A synthetic
    performance moves its expression with its head, so the head pose alone reads some of it: what the
    code adds is the probe of pose and code together minus that of the pose.
    """
    n = len(features)
    order = np.random.default_rng(seed).permutation(n)
    predicted = np.zeros_like(targets, dtype=np.float64)
    for held in np.array_split(order, min(folds, n)):
        fit = np.setdiff1d(order, held)
        mean, std = features[fit].mean(0), features[fit].std(0) + 1e-6
        a = np.c_[(features[fit] - mean) / std, np.ones(len(fit))]
        b = np.c_[(features[held] - mean) / std, np.ones(len(held))]
        weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ targets[fit])
        predicted[held] = b @ weights
    spread = ((targets - targets.mean(0)) ** 2).sum(0)
    residual = ((predicted - targets) ** 2).sum(0)
    return np.where(spread > 1e-12, 1.0 - residual / np.maximum(spread, 1e-12), 0.0)


def expression_gain_ceiling(signal_mse: Float[np.ndarray, " N"], own_psnr: float) -> float:
    """The expression gain (dB) an avatar can show in a region, given how well it draws it.

    ``signal_mse`` holds, per frame, the MSE between the region's ground truth and the best image an
    avatar that ignores the expression can draw there (the least-squares average over the training
    frames' expressions, same pose). An avatar whose own-code render misses every frame by the MSE of
    ``own_psnr``, and whose mean-code render is that best average drawn with the same, independent
    error, scores PSNR(own) - PSNR(mean) = 10 log10(1 + s / e) on a frame of signal s and error e:
    this is the mean over frames. A mean-code render worse than the best average scores higher
    without the own code drawing any more expression, so a measured gain above it is not more
    expressive.
    """
    error = 10.0 ** (-own_psnr / 10.0)
    return float(np.mean(10.0 * np.log10(1.0 + np.asarray(signal_mse, dtype=np.float64) / error)))


def psnr_for_gain_ceiling(signal_mse: Float[np.ndarray, " N"], gain_db: float) -> float:
    """The own-code PSNR (dB) at which :func:`expression_gain_ceiling` reaches ``gain_db``: how well an
    avatar must draw the region before that expression gain is possible there (inf if the region's
    expression never changes it)."""
    if float(np.max(signal_mse)) <= 0.0:
        return float("inf")
    low, high = -50.0, 200.0  # the ceiling rises from ~0 to far above any target over this range
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if expression_gain_ceiling(signal_mse, mid) < gain_db else (low, mid)
    return 0.5 * (low + high)


def draw_boxes(image: np.ndarray, boxes: Dict[str, Box], width: int = 1) -> np.ndarray:
    """A copy of an (H, W, 3) float image with each named region's box outlined in its colour."""
    out = image.copy()
    for name, (x0, y0, x1, y1) in boxes.items():
        colour = REGION_COLOURS.get(name)
        if colour is None:
            continue
        x1, y1 = max(x1 - 1, x0), max(y1 - 1, y0)
        out[y0:y0 + width, x0:x1 + 1] = colour
        out[y1 - width + 1:y1 + 1, x0:x1 + 1] = colour
        out[y0:y1 + 1, x0:x0 + width] = colour
        out[y0:y1 + 1, x1 - width + 1:x1 + 1] = colour
    return out


@torch.no_grad()
def contact_sheet(pipeline, indices: Sequence[int], boxes_of: BoxesOf, split: str = "eval",
                  zoom: int = 1) -> np.ndarray:
    """Rows of ground truth | own-code render | mean-code render for the given frames, regions boxed.

    ``zoom`` repeats every pixel (no smoothing), so that small frames can be judged by eye.
    """
    model = pipeline.model
    dataset = pipeline.datamanager.train_dataset if split == "train" else pipeline.datamanager.eval_dataset
    average_code = model.code_table.mean()
    stored = model.frame_codes.clone()
    rows: List[np.ndarray] = []
    for i in indices:
        item = {k: v for k, v in dataset.get_data(int(i)).items() if k != "code_idx"}
        own, average = render_pair(model, dataset.cameras[int(i) : int(i) + 1], item, average_code)
        gt = item["image"].numpy()
        boxes: Dict[str, Box] = {name: (box[0] * zoom, box[1] * zoom, box[2] * zoom, box[3] * zoom)
                                 for name, box in boxes_of(split, int(i), gt.shape[1], gt.shape[0]).items()}
        panels = [gt, own["rgb"][0].clamp(0, 1).cpu().numpy(), average["rgb"][0].clamp(0, 1).cpu().numpy()]
        panels = [p.repeat(zoom, axis=0).repeat(zoom, axis=1) for p in panels]
        rows.append(np.concatenate([draw_boxes(p, boxes) for p in panels], axis=1))
    model.frame_codes.copy_(stored)
    return np.concatenate(rows, axis=0)
