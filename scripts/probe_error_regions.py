"""Where in the face box does a trained avatar's error lie: on the head's outline, the eyes, the mouth, or the rest?

    python scripts/probe_error_regions.py --data DATASET --runs RUN_DIR [RUN_DIR ...] --output OUT.json

The face-box PSNR of ``scripts/bench_expression.py`` is one number for a square that holds the outline of the
head as well as its features. This probe splits each frame's squared error inside the face box into disjoint
parts, taken in this order: the **outline** (pixels within ``--band`` of the matte's edge), the **eyes** and
the **mouth** boxes, and the **rest** of the face. Per run and split (held-out frames, and as many evenly
spaced training frames) it reports each part's share of the error and of the area, the face-box PSNR, and the
face-box PSNR the frames would have if the outline's pixels erred no more than the rest of the face on
average. Across the parts it also reports the share of the error on the **silhouette**: the pixels where
the render's silhouette (pixels farther than ``--silhouette-threshold`` from the background colour) and the
matte disagree. A head drawn too wide or too narrow errs there; one whose edge is only soft or off in colour
errs on the rest of the outline. The whole frame is split the same way, into the **face box** and, outside
it, the head's **outline** band above and beside the box (hair, ears), the outline **below** it (neck), the
rest of the **head** (inside the matte) and the **background**: each part's share of the frame's squared
error and area, and its contribution to the frame's mean squared error (the contributions add up to it, so
two runs' difference can be read part by part). With ``--fit-pose-steps`` the held-out frames are scored
once more from the head pose fitted to each image (``fitted_frame_camera``, the frame's own code held): an
outline error that a rigid move of the head removes is one of where the head is drawn, not of its shape. A
picture per run (``OUT_<run>.png``) shows ground truth | render | signed error (red: render brighter, blue:
darker, ×4) for the first, middle and last held-out frame and one training frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import tyro
from jaxtyping import Bool, Float
from nerfstudio.utils.eval_utils import eval_setup
from PIL import Image
from scipy.ndimage import binary_dilation, binary_erosion

from bench_expression import _boxes_of
from latentavatar_ns.evaluation.expressiveness import fitted_frame_camera
from latentavatar_ns.utils.image import to_uint8

Box = Tuple[int, int, int, int]
PARTS = ("outline", "eyes", "mouth", "rest")
FRAME_PARTS = ("face_box", "outline", "outline_below", "head", "background")


@dataclass
class ProbeErrorRegions:
    """Split trained avatars' face-box error into the head's outline, the eyes, the mouth and the rest."""

    data: Path
    """Dataset the runs were trained on (synthetic heads or a processed video: region boxes come from it)."""
    runs: List[Path] = field(default_factory=list)
    """``ns-train`` run directories (holding ``config.yml``) trained on ``data``."""
    output: Path = Path("bench/error_regions.json")
    """Where the numbers go; the pictures are written beside it."""
    band: int = 2
    """Half-width of the outline band, in output pixels on each side of the matte's edge."""
    zoom: int = 2
    """Pixel repeat of the pictures, so that a one-pixel misplaced outline can be seen."""
    silhouette_threshold: float = 0.08
    """How far (largest channel) a rendered pixel must be from the background colour to count as the head."""
    fit_pose_steps: int = 0
    """Also score the held-out frames from head poses fitted to their images in this many steps (0: not)."""


def _box_mask(shape: Tuple[int, int], box: Box) -> Bool[np.ndarray, "H W"]:
    x0, y0, x1, y1 = box
    out = np.zeros(shape, bool)
    out[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return out


def outline_band(matte: Bool[np.ndarray, "H W"], band: int) -> Bool[np.ndarray, "H W"]:
    """Pixels within ``band`` of the matte's edge, on either side. The frame's edge is not an outline: where
    the head or neck leaves the frame, the pixels beside the edge are the head's inside."""
    return binary_dilation(matte, iterations=band) & ~binary_erosion(matte, iterations=band, border_value=1)


def region_masks(matte: Bool[np.ndarray, "H W"], boxes: Dict[str, Box], band: int) -> Dict[str, np.ndarray]:
    """Disjoint masks inside ``boxes['face']``: the outline band first, then the eyes, the mouth, the rest."""
    shape = (matte.shape[0], matte.shape[1])
    face = _box_mask(shape, boxes["face"])
    outline = outline_band(matte, band) & face
    masks, taken = {"outline": outline}, outline.copy()
    for name in ("eyes", "mouth"):
        masks[name] = _box_mask(shape, boxes[name]) & face & ~taken
        taken |= masks[name]
    masks["rest"] = face & ~taken
    return masks


def frame_masks(matte: Bool[np.ndarray, "H W"], face_box: Box, band: int) -> Dict[str, np.ndarray]:
    """Disjoint masks covering the frame: the face box, then outside it the outline band above and beside the
    box, the outline band below it (the neck's and, on video, the shoulders'), the rest of the matte (the head
    beyond the face box) and the background."""
    face = _box_mask((matte.shape[0], matte.shape[1]), face_box)
    outline = outline_band(matte, band) & ~face
    below = outline & (np.arange(matte.shape[0])[:, None] >= face_box[3])
    head = matte & ~face & ~outline
    return {"face_box": face, "outline": outline & ~below, "outline_below": below, "head": head,
            "background": ~(face | outline | head)}


def split_frame_error(error: Float[np.ndarray, "H W"], masks: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Each part's share of the frame's squared error and area, its contribution to the frame's mean squared
    error, and the frame's PSNR; keys prefixed ``frame_``."""
    total, pixels = max(float(error.sum()), 1e-20), float(error.size)
    out = {"frame_psnr": float(-10.0 * np.log10(max(float(error.mean()), 1e-20)))}
    for name, mask in masks.items():
        part = float(error[mask].sum())
        out[f"frame_{name}_error_share"] = part / total
        out[f"frame_{name}_area_share"] = float(mask.sum()) / pixels
        out[f"frame_{name}_mse"] = part / pixels
    return out


def split_error(error: Float[np.ndarray, "H W"], masks: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Each part's share of the face box's squared error and area, the face-box PSNR, and that PSNR with the
    outline's pixels at the rest of the face's mean error."""
    face = np.zeros_like(masks["rest"])
    for mask in masks.values():
        face |= mask
    total = max(float(error[face].sum()), 1e-20)
    out = {f"{name}_error_share": float(error[mask].sum()) / total for name, mask in masks.items()}
    out.update({f"{name}_area_share": float(mask.sum()) / float(face.sum()) for name, mask in masks.items()})
    out["face_psnr"] = float(-10.0 * np.log10(max(float(error[face].mean()), 1e-20)))
    levelled = error.copy()
    levelled[masks["outline"]] = float(error[masks["rest"]].mean()) if masks["rest"].any() else 0.0
    out["face_psnr_outline_as_rest"] = float(-10.0 * np.log10(max(float(levelled[face].mean()), 1e-20)))
    return out


def silhouette_share(error: Float[np.ndarray, "H W"], matte: Bool[np.ndarray, "H W"],
                     rendered: Bool[np.ndarray, "H W"], face: Bool[np.ndarray, "H W"]) -> Dict[str, float]:
    """The share of the face box's squared error and area on pixels where the rendered silhouette and the
    matte disagree."""
    wrong = (rendered != matte) & face
    total = max(float(error[face].sum()), 1e-20)
    return {"silhouette_error_share": float(error[wrong].sum()) / total,
            "silhouette_area_share": float(wrong.sum()) / max(float(face.sum()), 1.0)}


def signed_error_picture(gt: Float[np.ndarray, "H W 3"], render: Float[np.ndarray, "H W 3"]) -> np.ndarray:
    """Ground truth | render | signed error (red where the render is brighter, blue where darker, ×4)."""
    diff = (render - gt).mean(-1, keepdims=True)
    signed = np.clip(np.concatenate([diff.clip(0), np.zeros_like(diff), (-diff).clip(0)], -1) * 4.0, 0.0, 1.0)
    return np.concatenate([gt, render, signed], axis=1)


@torch.no_grad()
def probe_run(run: Path, cfg: ProbeErrorRegions, picture: Path) -> Dict:
    """Mean error split of one run's held-out frames and as many evenly spaced training frames."""
    if not (run / "config.yml").is_file():
        raise SystemExit(f"error: {run / 'config.yml'}: not found; --runs takes ns-train run directories")
    _, pipeline, _, _ = eval_setup(run / "config.yml", test_mode="test")
    model, boxes_of = pipeline.model, _boxes_of(cfg.data)
    model.eval()
    datasets: Dict[str, Any] = {"eval": pipeline.datamanager.eval_dataset, "train": pipeline.datamanager.train_dataset}
    n_eval = len(datasets["eval"])
    chosen = {"eval": list(range(n_eval)),
              "train": np.linspace(0, len(datasets["train"]) - 1, n_eval).round().astype(int).tolist()}
    passes = [("heldout", "eval"), ("train", "train")]
    if cfg.fit_pose_steps > 0:
        passes.append(("heldout_fitted_pose", "eval"))
    shown = {("heldout", 0), ("heldout", n_eval // 2), ("heldout", n_eval - 1), ("train", chosen["train"][n_eval // 2])}
    result, rows = {}, []
    for key, split in passes:
        stats = []
        for i in chosen[split]:
            item = {k: v for k, v in datasets[split].get_data(i).items() if k != "code_idx"}
            camera = datasets[split].cameras[i : i + 1].to(model.device)
            if key == "heldout_fitted_pose":
                camera = fitted_frame_camera(model, camera, item, cfg.fit_pose_steps)
            render = model.get_outputs(camera, item)["rgb"][0]
            gt, render = item["image"].numpy(), render.clamp(0.0, 1.0).cpu().numpy()
            height, width = gt.shape[:2]
            matte = item["mask"].numpy().reshape(height, width) > 0.5
            boxes = boxes_of(split, i, width, height)
            masks = region_masks(matte, boxes, cfg.band)
            error = ((render - gt) ** 2).mean(-1)
            rendered = np.abs(render - model.background.cpu().numpy()).max(-1) > cfg.silhouette_threshold
            face = _box_mask((height, width), boxes["face"])
            stats.append({**split_error(error, masks), **silhouette_share(error, matte, rendered, face),
                          **split_frame_error(error, frame_masks(matte, boxes["face"], cfg.band))})
            if (key, i) in shown:
                rows.append(signed_error_picture(gt, render))
        result[key] = {name: float(np.mean([s[name] for s in stats])) for name in stats[0]}
    picture_rows = np.concatenate(rows, axis=0).repeat(cfg.zoom, axis=0).repeat(cfg.zoom, axis=1)
    Image.fromarray(to_uint8(picture_rows)).save(picture)
    return result


def main() -> None:
    cfg = tyro.cli(ProbeErrorRegions)
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    result: Dict = {"data": str(cfg.data), "band": cfg.band, "runs": {}}
    for run in cfg.runs:
        name = run.parents[1].name if run.name == "run" else run.name
        result["runs"][name] = probe_run(run, cfg, cfg.output.with_name(f"{cfg.output.stem}_{name}.png"))
        print(name, json.dumps(result["runs"][name]), flush=True)
    cfg.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
