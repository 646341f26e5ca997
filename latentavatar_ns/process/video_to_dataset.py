"""``ns-latentavatar-process``: a video (or image folder) of one person to a latentavatar dataset.

Two passes over the frames. The first finds the face in every frame and fits its pose, so that
poses, crops and encoder squares can be smoothed over time before anything is written; the second
decodes again (a long video never sits in memory) and writes the crops, mattes and params.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import numpy as np

from latentavatar_ns.assets.cache import asset_path
from latentavatar_ns.data.format import CameraSpec, FrameParams, frame_paths, save_params, write_camera
from latentavatar_ns.process import geometry as geo
from latentavatar_ns.process.decode import FrameSource, InputError
from latentavatar_ns.process.face import (
    LEFT_EYE_OUTER,
    RIGHT_EYE_OUTER,
    FaceLandmarker,
    load_template,
)
from latentavatar_ns.utils.errors import LatentAvatarError, OutputExistsError
from latentavatar_ns.utils.image import to_uint8

SUMMARY_FILE = "process_summary.json"
SHEET_FILE = "contact_sheet.png"


class ProcessError(LatentAvatarError, ValueError):
    """The input cannot become a dataset (e.g. no face anywhere); one line naming the file."""


@dataclass
class ProcessConfig:
    """Turn a video (any container/codec ffmpeg reads) or a folder of images of one person into a
    latentavatar dataset: square head crops, mattes, per-frame head pose + intrinsics, encoder face
    crops, a train/eval split at the end, camera.json, a summary and a contact sheet."""

    input: Path
    """Video file or folder of images (sorted by name) of one person."""
    output_dir: Path
    """Dataset folder to write (refused if it exists and is not empty, unless --overwrite)."""
    resolution: int = 512
    """Side of the square output frames in pixels (the paper uses 512; latentavatar-tiny trains at 128)."""
    eval_fraction: float = 0.1
    """Share of the kept frames, at the end of the video, held out as the eval split."""
    stride: int = 1
    """Use every N-th frame of the input."""
    max_frames: Optional[int] = None
    """Stop after this many frames (after the stride)."""
    fov_degrees: float = 60.0
    """Assumed field of view of the source camera across its longer side (phone cameras: about 55-75)."""
    smooth_sigma: float = 1.5
    """Temporal smoothing of head pose and face crops: Gaussian sigma in processed frames (0: none)."""
    crop_scale: float = 1.0
    """Crop side as a multiple of the larger side of the canonical head box's projection (the box,
    24 x 29 x 24 cm, is all the avatar can model; below 1 the crop cuts into it)."""
    face_margin: float = 1.1
    """Encoder face crop: side of the eye-aligned square as a multiple of the landmarks' extent."""
    min_person_score: float = 0.5
    """A detected face counts only if the person segmenter's mean confidence over the middle of the
    face is at least this (rejects "faces" found in text, drawings and patterns)."""
    matting: Literal["selfie", "rvm"] = "selfie"
    """Matte model: MediaPipe's selfie segmentation (fast, Apache-2.0), or Robust Video Matting (soft
    hair edges, GPL-3.0 weights; needs onnxruntime and `ns-latentavatar-assets fetch rvm_mobilenetv3_fp32.onnx`)."""
    clip_mask_to_box: bool = True
    """Keep only the part of the person matte whose rays pass through the canonical head box
    (drops shoulders and torso, which the avatar cannot model)."""
    image_format: Literal["jpg", "png"] = "jpg"
    """Frame file type (masks are always png)."""
    sheet_tiles: int = 16
    """Frames shown on the contact sheet."""
    overwrite: bool = False
    """Replace an existing, non-empty output folder."""


@dataclass
class FrameRecord:
    """What the first pass detects in one frame with a face (poses and squares, smoothed over all
    kept frames, live in arrays beside the list of records)."""

    source_index: int
    landmarks: np.ndarray
    blendshapes: np.ndarray
    num_faces: int


def _progress(iterable, total: Optional[int], description: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total or None, desc=description, unit="frame", dynamic_ncols=True,
                disable=None)


def _check_output(cfg: ProcessConfig) -> None:
    resolved, source = Path(cfg.output_dir).resolve(), Path(cfg.input).resolve()
    if source.is_dir() and source in (resolved, *resolved.parents):
        raise ProcessError(f"{cfg.output_dir}: output folder is inside the input folder {cfg.input}; "
                           "choose one outside it")
    if resolved in source.parents:  # --overwrite would delete the input with the folder
        raise ProcessError(f"{cfg.output_dir}: output folder holds the input {cfg.input}; choose another folder")
    out = cfg.output_dir
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not cfg.overwrite:
            raise OutputExistsError(f"{out}: output folder exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out) if out.is_dir() else out.unlink()


def _validate(cfg: ProcessConfig) -> None:
    if cfg.resolution < 16:
        raise ProcessError(f"{cfg.input}: --resolution must be at least 16, got {cfg.resolution}")
    if not 0.0 < cfg.eval_fraction < 1.0:
        raise ProcessError(f"{cfg.input}: --eval-fraction must be in (0, 1), got {cfg.eval_fraction} "
                           "(the dataset format needs a non-empty eval split)")
    if not 10.0 <= cfg.fov_degrees <= 150.0:
        raise ProcessError(f"{cfg.input}: --fov-degrees must be between 10 and 150, got {cfg.fov_degrees}")
    if not 0.0 <= cfg.min_person_score <= 1.0:
        raise ProcessError(f"{cfg.input}: --min-person-score must be in [0, 1], got {cfg.min_person_score}")
    if cfg.crop_scale <= 0 or cfg.face_margin <= 0:
        raise ProcessError(f"{cfg.input}: --crop-scale and --face-margin must be positive")
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise ProcessError(f"{cfg.input}: --max-frames must be at least 1, got {cfg.max_frames}")


def process(cfg: ProcessConfig) -> Dict:
    """Run both passes and write the dataset; returns the summary (also written as JSON)."""
    from latentavatar_ns.process.matte import RobustVideoMatting, SelfieSegmenter
    from latentavatar_ns.process.sheet import SheetTile, write_contact_sheet

    start = time.time()
    _validate(cfg)
    task_path = asset_path("face_landmarker.task")
    seg_path = asset_path("selfie_segmentation.tflite")
    rvm_path = asset_path("rvm_mobilenetv3_fp32.onnx") if cfg.matting == "rvm" else None
    source = FrameSource(cfg.input, stride=cfg.stride, max_frames=cfg.max_frames)
    _check_output(cfg)
    template = load_template(task_path)
    rigid = template.rigid_ids
    rigid_cm = template.vertices[rigid]

    # ---- pass 1: landmarks and head pose -----------------------------------------------------
    records: List[FrameRecord] = []
    skipped: List[Dict] = []
    size = None
    decoded = 0
    with FaceLandmarker(task_path) as landmarker, SelfieSegmenter(seg_path) as segmenter:
        for frame in _progress(source, len(source), "finding faces"):
            decoded += 1
            h, w = frame.rgb.shape[:2]
            if size is None:
                size = (w, h)
            elif size != (w, h):
                raise InputError(f"{cfg.input}: frame {frame.index} is {w}x{h} but earlier frames are "
                                 f"{size[0]}x{size[1]}; all frames must have one size")
            det = landmarker.detect(frame.rgb)
            if det is None:
                skipped.append({"source_frame": frame.index, "reason": "no face"})
                continue
            score = _person_score(segmenter(frame.rgb), det.landmarks)
            if score < cfg.min_person_score:
                skipped.append({"source_frame": frame.index, "reason": f"face not on a person (score {score:.2f})"})
                continue
            records.append(FrameRecord(frame.index, det.landmarks, det.blendshapes, det.num_faces))
    if decoded == 0:
        raise InputError(f"{cfg.input}: no frames could be decoded")
    if not records:
        raise ProcessError(f"{cfg.input}: no face found in any of {decoded} frames")
    assert size is not None
    K_src = geo.source_intrinsics(size[0], size[1], cfg.fov_degrees)

    fits = []
    kept: List[FrameRecord] = []
    for rec in records:
        fit = geo.fit_head_pose(rigid_cm, rec.landmarks[rigid], K_src)
        if fit is None:
            skipped.append({"source_frame": rec.source_index, "reason": "head pose fit failed"})
            continue
        fits.append(fit)
        kept.append(rec)
    if not kept:
        raise ProcessError(f"{cfg.input}: head pose could not be fitted in any of {decoded} frames")
    n = len(kept)
    if n < 2:
        raise ProcessError(f"{cfg.input}: a usable face in only {n} of {decoded} frames; a dataset needs at "
                           "least 2 (train and eval)")
    skipped.sort(key=lambda s: s["source_frame"])
    mean_depth = float(np.mean([geo.head_origin_in_camera(r, t)[2] for r, t in fits])) * 0.01
    w2c = geo.virtual_world_to_camera(mean_depth)
    scale = geo.HEAD_SCALE_M
    times = np.array([r.source_index / cfg.stride for r in kept])
    raw = np.stack([geo.dataset_pose(r, t, w2c) for r, t in fits])
    smooth = geo.smooth_poses(raw, times, cfg.smooth_sigma)
    squares = np.stack([geo.face_square(r.landmarks[:468], LEFT_EYE_OUTER, RIGHT_EYE_OUTER, cfg.face_margin)
                        for r in kept])
    squares[:, 3] = np.unwrap(squares[:, 3])
    squares = geo.gaussian_smooth(squares, times, cfg.smooth_sigma)

    n_eval = min(max(int(round(cfg.eval_fraction * n)), 1), n - 1)
    by_source = {rec.source_index: (i, rec) for i, rec in enumerate(kept)}

    # ---- pass 2: crops, mattes, params ---------------------------------------------------------
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    rigid_canonical = geo.template_to_canonical(rigid_cm)
    sheet_every = max(1, n // max(cfg.sheet_tiles, 1))
    tiles: List[SheetTile] = []
    Ks, reproj_raw, reproj, coverage, inside, face_side = [], [], [], [], [], []
    res = cfg.resolution
    matter = RobustVideoMatting(rvm_path) if rvm_path is not None else SelfieSegmenter(seg_path)
    with matter:
        for frame in _progress(source, decoded, "writing dataset"):
            if frame.index not in by_source:
                if rvm_path is not None:
                    matter(frame.rgb)  # the recurrent matte sees every frame in order
                continue
            i, rec = by_source[frame.index]
            split = "train" if i < n - n_eval else "eval"
            pose = smooth[i]
            crop = geo.head_crop(pose, scale, w2c, K_src, res, cfg.crop_scale)
            K = crop.intrinsics(K_src)
            image = crop.warp(frame.rgb)
            matte = crop.warp(matter(frame.rgb))
            if cfg.clip_mask_to_box:
                matte = matte * geo.box_hit_mask(K, w2c, pose, scale, res, res)
            lms = crop.to_crop(rec.landmarks)
            sq = squares[i].copy()
            sq[:2] = crop.to_crop(sq[None, :2])[0]
            sq[2] *= crop.zoom
            affine = geo.face_square_affine(sq)
            reprojected = geo.project_canonical(rigid_canonical, pose, scale, w2c, K)
            err_raw = np.linalg.norm(geo.project_canonical(rigid_canonical, raw[i], scale, w2c, K)
                                     - lms[rigid], axis=1).mean()
            err = np.linalg.norm(reprojected - lms[rigid], axis=1).mean()
            paths = frame_paths(cfg.output_dir / split, i, f".{cfg.image_format}")
            paths.image.parent.mkdir(parents=True, exist_ok=True)
            _write_image(paths.image, image)
            _write_image(paths.mask, to_uint8(matte))
            save_params(paths.params, FrameParams(
                pose=pose, scale=scale, intrinsics=K, crop_affine=affine,
                extra={"landmarks": lms.astype(np.float32), "blendshapes": rec.blendshapes.astype(np.float32),
                       "source_frame": np.array(rec.source_index), "raw_pose": raw[i].astype(np.float32)}))
            Ks.append(K)
            reproj_raw.append(float(err_raw))
            reproj.append(float(err))
            coverage.append(float(matte.mean()))
            inside.append(crop.inside_fraction(*size))
            face_side.append(float(2 * sq[2]))
            if i % sheet_every == 0 and len(tiles) < cfg.sheet_tiles:
                corners = np.linalg.solve(np.vstack([affine, [0, 0, 1]]),
                                          np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]]).T).T[:, :2]
                tiles.append(SheetTile(image, matte, lms, reprojected, corners,
                                       f"{split} {i} (src {rec.source_index})"))

    K_med = np.median(np.stack(Ks), axis=0)
    write_camera(cfg.output_dir, CameraSpec(res, res, float(K_med[0, 0]), float(K_med[1, 1]), float(K_med[0, 2]),
                                            float(K_med[1, 2]), w2c))
    steps = [geo.rotation_angle_deg(a, b) for a, b in zip(smooth[:-1], smooth[1:])]
    moves = [float(np.linalg.norm(a[3:] - b[3:])) for a, b in zip(smooth[:-1], smooth[1:])]
    summary: Dict[str, Any] = {
        "input": str(cfg.input),
        "output_dir": str(cfg.output_dir),
        "source_size": list(size),
        "source_fps": source.fps,
        "frames_decoded": decoded,
        "frames_kept": n,
        "frames_skipped": len(skipped),
        "skipped": skipped,
        "num_train": n - n_eval,
        "num_eval": n_eval,
        "resolution": res,
        "fov_degrees": cfg.fov_degrees,
        "source_focal_px": float(K_src[0, 0]),
        "head_scale_m": scale,
        "camera_distance_m": mean_depth,
        "multiple_faces_frames": int(sum(r.num_faces > 1 for r in kept)),
        "reprojection_px": {"raw_mean": float(np.mean(reproj_raw)), "mean": float(np.mean(reproj)),
                            "max": float(np.max(reproj))},
        "mask_coverage": {"mean": float(np.mean(coverage)), "min": float(np.min(coverage)),
                          "max": float(np.max(coverage))},
        "crop_inside_frame": {"mean": float(np.mean(inside)), "min": float(np.min(inside))},
        "face_crop_side_px": {"mean": float(np.mean(face_side))},
        "pose_step": {"max_rotation_deg": max(steps, default=0.0), "max_translation_m": max(moves, default=0.0)},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "wall_time_s": round(time.time() - start, 2),
    }
    (cfg.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    title = (f"{cfg.input.name}: {n} of {decoded} frames kept ({n - n_eval} train, {n_eval} eval), "
             f"{len(skipped)} skipped; reprojection {summary['reprojection_px']['mean']:.2f} px")
    write_contact_sheet(cfg.output_dir / SHEET_FILE, tiles, title)
    return summary


def _person_score(confidence: np.ndarray, landmarks: np.ndarray) -> float:
    """Mean person confidence over the middle half of the face's landmark box."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    a, b = lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo)
    h, w = confidence.shape
    x0, y0 = int(np.clip(a[0], 0, w - 1)), int(np.clip(a[1], 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(b[0]), x0 + 1, w)), int(np.clip(np.ceil(b[1]), y0 + 1, h))
    return float(confidence[y0:y1, x0:x1].mean())


def _write_image(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    img = Image.fromarray(array)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, quality=95)
    else:
        img.save(path)

