"""Expressiveness benchmark: does the avatar render each frame's own expression, and not its pose error?

    python scripts/bench_expression.py [--iterations 3000] [--variants baseline region_losses] [--cases detailed smooth]

Every variant is the real ``ns-train`` run of ``--method`` with a few options changed (``VARIANTS``),
trained on each case (``CASES``): synthetic heads, smooth or with the detail a real face has
(``--detail``: highlights, textured skin and hair, high-contrast eyes, lips and teeth, winks), one
whose stored training poses carry tracker-like error while its images were rendered with the true
poses, and optionally the real sample clip. Each trained avatar is scored on training frames (fit)
and on the held-out frames at the end of the video (generalisation), both rendered with their own
code and with the mean training code (``latentavatar_ns.evaluation.expressiveness``):

- PSNR, SSIM and LPIPS-Alex on the full frame, the face, the mouth and the eyes (boxes from the
  synthetic head's ground truth, or from the landmarks of a real video);
- the expression gain per region (own code minus mean code, in dB), also on the held-out frames
  whose ground-truth expressions are the rarest in training;
- silhouette IoU of the rendered matte with the own and with the mean code;
- the code spread: how much a render changes with the code against with the pose.

Writes ``--output`` (``bench/expression.json``) and a contact sheet per case and variant beside it
(ground truth | own code | mean code, regions boxed: face green, mouth red, eyes blue).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import tyro
from nerfstudio.utils.eval_utils import eval_setup
from PIL import Image

from latentavatar_ns.data.face_crop import crop_affine_from_pose
from latentavatar_ns.data.format import FrameParams, list_frames, load_params, read_camera, save_params
from latentavatar_ns.demo.steps import train_command
from latentavatar_ns.demo.synthetic import DEMO_IDENTITY, DemoConfig
from latentavatar_ns.evaluation.metrics import face_box
from latentavatar_ns.evaluation.expressiveness import (
    RegionScorer,
    code_spread,
    contact_sheet,
    encoded_codes,
    linear_probe,
    score_split,
)
from latentavatar_ns.model.lpips import load_lpips
from latentavatar_ns.synthetic import make_dataset, region_boxes
from latentavatar_ns.utils.image import to_uint8

BASELINE: List[str] = [
    "--pipeline.model.static-planes", "False", "--pipeline.model.lpips-loss-weight", "0",
    "--pipeline.model.lpips-loss-net", "vgg", "--pipeline.model.face-loss-weight", "0",
    "--pipeline.model.mouth-loss-weight", "0", "--pipeline.model.eye-loss-weight", "0",
    "--pipeline.model.static-planes-start-step", "0", "--pipeline.model.expression-planes", "0",
    "--pipeline.model.expression-plane-resolution", "0", "--lr-final-factor", "1",
    "--pipeline.model.sr-residual", "False", "--pipeline.model.plane-tv-weight", "0",
    "--pipeline.model.plane-tv-norm", "squared", "--pipeline.model.plane-tv-target", "triplane",
    "--pipeline.model.plane-tv-end-step", "None", "--pipeline.model.plane-tv-spare-mouth", "False",
    "--pipeline.model.view-dependent", "True", "--pipeline.model.mask-loss-weight", "0.1",
]
"""Where every variant starts: ``latentavatar-tiny`` with the paper's losses (without its LPIPS-VGG term,
too costly on a CPU) and no static planes, which was its default before this benchmark. Spelled out,
so that the variants keep their meaning whatever the method's defaults become."""

VARIANTS: Dict[str, List[str]] = {
    "baseline": [],
    "region_losses": ["--pipeline.model.face-loss-weight", "1", "--pipeline.model.mouth-loss-weight", "1",
                      "--pipeline.model.eye-loss-weight", "1"],
    "code_to_field": ["--pipeline.model.code-to-field", "True"],
    "code_to_sr": ["--pipeline.model.code-to-sr", "True"],
    "warm_start": ["--pipeline.model.encoder-warm-start-steps", "300"],
    "region_lpips": ["--pipeline.model.region-lpips-weight", "0.5"],
    "eyes4": ["--pipeline.model.eye-loss-weight", "4"],
    "lpips_alex": ["--pipeline.model.lpips-loss-weight", "0.1", "--pipeline.model.lpips-loss-net", "alex"],
    "sr2": ["--pipeline.model.sr-scale", "2"],
    # Patch-wise training: a 32^2 window of the low-res grid per step (with sr2, as many rays as the default).
    "patch32": ["--pipeline.model.train-patch-size", "32"],
    "pose_refinement": ["--pipeline.model.pose-refinement", "True"],
    "pose_centred": ["--pipeline.model.pose-refinement-centred", "True"],
    "pose_weight10": ["--pipeline.model.pose-refinement-weight", "10"],
    "pose_weight01": ["--pipeline.model.pose-refinement-weight", "0.1"],
    "pose_outside_face": ["--pipeline.model.pose-refinement-from", "outside_face"],
    "pose_outside_parts": ["--pipeline.model.pose-refinement-from", "outside_parts"],
    "pose_codes8": ["--pipeline.model.pose-refinement-expression-directions", "8",
                    "--pipeline.model.pose-refinement-expression-from", "codes"],
    "pose_crops3": ["--pipeline.model.pose-refinement-expression-directions", "3",
                    "--pipeline.model.pose-refinement-expression-from", "crops"],
    "pose_crops8": ["--pipeline.model.pose-refinement-expression-directions", "8",
                    "--pipeline.model.pose-refinement-expression-from", "crops"],
    # Learning rates per part: the encoder (and its mapping) three times faster, so that codes separate
    # expressions before the static planes settle on an average; or the static planes at the networks'
    # rate instead of ten times it, so that the code-driven generator has to carry more of the detail.
    "encoder_lr3x": ["--optimizers.encoder.optimizer.lr", "3e-3"],
    "static_lr1x": ["--optimizers.static-planes.optimizer.lr", "1e-3"],
    # Codes standardised per channel over the training frames, so that frames never share one code.
    "frame_norm": ["--pipeline.model.code-normalisation", "frames"],
    # Frames whose face crop is far from its nearest neighbours' (rare expressions) drawn more often: weight
    # 1 + rarity, or 1 + rarity / 2.
    "rare_frames": ["--pipeline.datamanager.rare-frame-sampling", "1"],
    "rare_frames_half": ["--pipeline.datamanager.rare-frame-sampling", "0.5"],
    # The code also trained to reconstruct its crop (a decoder alongside), so that it keeps the whole expression.
    "code_recon": ["--pipeline.model.code-reconstruction-weight", "1"],
    "static_planes": ["--pipeline.model.static-planes", "True"],
    # The static planes left out of the first steps, so the generator takes what changes with the code first.
    "static_start500": ["--pipeline.model.static-planes-start-step", "500"],
    "static_start1000": ["--pipeline.model.static-planes-start-step", "1000"],
    "static_start2000": ["--pipeline.model.static-planes-start-step", "2000"],
    # The same minutes spent differently: one image per step instead of two (a step takes 0.55 of the time),
    # and the step counts that fill ten minutes of one run alone on two cores with two threads
    # (3000 steps of two images, 4800 of one).
    "batch1": ["--pipeline.datamanager.images-per-batch", "1"],
    "steps3000": ["--max-num-iterations", "3000"],
    "steps4800": ["--max-num-iterations", "4800"],
    # Tri-plane blend shapes beside the generator: 16 or 8 bases weighted by a linear map of theta.
    "expression_planes16": ["--pipeline.model.expression-planes", "16"],
    "expression_planes8": ["--pipeline.model.expression-planes", "8"],
    # The bases at a half, a quarter and an eighth of the planes' side (upsampled): smoother, fewer texels to overfit.
    "expression_res32": ["--pipeline.model.expression-plane-resolution", "32"],
    "expression_res16": ["--pipeline.model.expression-plane-resolution", "16"],
    "expression_res8": ["--pipeline.model.expression-plane-resolution", "8"],
    # The bases at the networks' step size instead of the static planes' ten times it.
    "expression_lr1x": ["--optimizers.expression-planes.optimizer.lr", "1e-3"],
    # Another training seed (nerfstudio's --machine.seed, 42 by default): run-to-run spread on the same data.
    "train_seed1": ["--machine.seed", "1"],
    "train_seed2": ["--machine.seed", "2"],
    "train_seed3": ["--machine.seed", "3"],
    # latentavatar-tiny's static planes from the first step and no expression planes, as before they became its
    # default: nothing on top of BASELINE, for benchmarks that start from the method's defaults (bench_reenact.py).
    "earlier_tiny_default": ["--pipeline.model.static-planes-start-step", "0",
                             "--pipeline.model.expression-planes", "0"],
    # Noise on the training codes, at a third of each channel's spread over the training frames.
    "code_noise": ["--pipeline.model.code-noise-std", "0.3"],
    # The occupancy grid instead of the paper's uniform samples ("Sampling").
    "occupancy": ["--pipeline.model.sampler", "occupancy"],
    # One more generator block: 128^2 planes instead of latentavatar-tiny's 64^2.
    "planes128": ["--pipeline.model.generator-channels", "64", "64", "64", "64", "32", "32"],
    # The SR head's output added to the upsampled low-res RGB, as EG3D's head does.
    "sr_residual": ["--pipeline.model.sr-residual", "True"],
    # Every learning rate held for the first half of the run, then down to a tenth along a half cosine.
    "lr_decay": ["--lr-final-factor", "0.1"],
    # The matte loss ten times stronger (latentavatar-tiny's 0.1 to 1): a head outline pinned in every
    # training view, for outlines in poses between them.
    "mask1": ["--pipeline.model.mask-loss-weight", "1"],
    # Smoother tri-planes, so a head turned past the training views keeps its outline.
    "plane_tv": ["--pipeline.model.plane-tv-weight", "0.01"],
    "plane_tv10x": ["--pipeline.model.plane-tv-weight", "0.1"],
    "plane_tv100x": ["--pipeline.model.plane-tv-weight", "1"],
    "plane_tv1000x": ["--pipeline.model.plane-tv-weight", "10"],
    # The penalty on the static planes alone: the fixed shape smoothed, what the code draws left sharp.
    "tv_static": ["--pipeline.model.plane-tv-target", "static"],
    # The penalty on the two planes that hold the depth axis, the frontal plane (mouth, eyes) left sharp.
    "tv_depth_planes": ["--pipeline.model.plane-tv-target", "depth_planes"],
    # The penalty for the first half of the run only: unpinned texels keep their shape, the mouth re-sharpens.
    "tv_until1500": ["--pipeline.model.plane-tv-end-step", "1500"],
    "tv_until2000": ["--pipeline.model.plane-tv-end-step", "2000"],
    # The penalty on the tri-plane without the expression planes' offset, which it would shrink otherwise.
    "tv_no_expression_planes": ["--pipeline.model.plane-tv-target", "no_expression_planes"],
    # The penalty with the texels over the canonical mouth box left out.
    "tv_spare_mouth": ["--pipeline.model.plane-tv-spare-mouth", "True"],
    # The penalty on each step's magnitude instead of its square: texel noise removed, sharp edges kept.
    "tv_absolute": ["--pipeline.model.plane-tv-norm", "absolute"],
    # The head's shape mirrored across the face's middle: a side turned past the training views borrows the
    # other side's outline.
    "density_symmetry": ["--pipeline.model.density-symmetry-weight", "1"],
    "density_symmetry01": ["--pipeline.model.density-symmetry-weight", "0.1"],
    "no_view_dir": ["--pipeline.model.view-dependent", "False"],
    # Twice latentavatar-tiny's 32 uniform samples per ray: a finer step through the head's edge.
    "samples64": ["--pipeline.model.num-samples", "64"],
    # The steps of 64 samples per ray that fit the time of 3000 with 32 (their step takes 28% longer).
    "steps2340": ["--max-num-iterations", "2340"],
    # The steps today's default fits in ten minutes, alone on the 2-core CPU with two threads (0.105 s a step).
    "steps5700": ["--max-num-iterations", "5700"],
    # Three times the region losses' mouth L1, so that an average mouth costs the loss more.
    "mouth3": ["--pipeline.model.mouth-loss-weight", "3"],
    # Three times the region losses' face L1: the face square, where the face-box score is read, weighed
    # more against the hair, neck and background.
    "face3": ["--pipeline.model.face-loss-weight", "3"],
    # Between the default's weight and face3's: does the face box gain while the real clip keeps its mouth?
    "face2": ["--pipeline.model.face-loss-weight", "2"],
    # With face2: the mouth L1 twice as heavy too, so that the mouth keeps its weight against the face.
    "mouth2": ["--pipeline.model.mouth-loss-weight", "2"],
}
"""Named option sets on top of ``BASELINE``; a ``+`` joins several
(``static_planes+lpips_alex+region_losses+static_start500+expression_planes16+expression_res16+lr_decay+sr_residual``
``+plane_tv100x+tv_no_expression_planes+no_view_dir+face2+mask1`` is ``latentavatar-tiny``'s default)."""


@dataclass(frozen=True)
class Case:
    """One training video."""

    identity: int = 0
    detail: bool = False
    seed: int = 0
    pose_noise: bool = False
    """Training poses stored with tracker-like error (jitter and a slow drift); images and crops exact."""
    pose_follows_mouth: bool = False
    """Training poses stored pitched and shifted in step with the jaw, as a tracker that reads the mouth as a
    nod stores them (the real clip's pitch follows its lip gap); images, crops and held-out poses exact."""
    real: bool = False
    """The real sample clip (processed with ns-latentavatar-process) instead of a synthetic head."""
    num_frames: Optional[int] = None
    """Frames of this case's video; None takes ``--num-frames``."""
    heldout_of: Optional[str] = None
    """Another case of the same head whose held-out frames replace this one's, so that two training videos
    are scored on the same frames."""


CASES: Dict[str, Case] = {
    "smooth": Case(identity=0),
    "detailed": Case(identity=1, detail=True),
    "detailed_seed1": Case(identity=2, detail=True, seed=1),
    "detailed_seed2": Case(identity=3, detail=True, seed=2),
    "detailed_pose_noise": Case(identity=1, detail=True, pose_noise=True),
    "detailed_pose_mouth": Case(identity=1, detail=True, pose_follows_mouth=True),
    "real_clip": Case(real=True),
    # The demo's own video (ns-latentavatar-demo's defaults), and a longer one of the same head.
    "demo": Case(identity=DEMO_IDENTITY, detail=DemoConfig.detail, seed=DemoConfig.seed,
                 num_frames=DemoConfig.num_frames),
    "demo_300": Case(identity=DEMO_IDENTITY, detail=DemoConfig.detail, seed=DemoConfig.seed, num_frames=300,
                     heldout_of="demo"),
}

JITTER_DEG, JITTER_CANONICAL = 1.5, 0.04
"""Per-frame pose noise (standard deviations): rotation in degrees, translation in canonical head units."""
DRIFT_DEG, DRIFT_CANONICAL = 3.0, 0.08
"""Amplitude of the slowly drifting pose bias over the video."""
MOUTH_NOD_DEG, MOUTH_NOD_CANONICAL = 1.5, 0.03
"""Pitch and vertical shift of the stored pose per standard deviation of the jaw's opening (``detailed_pose_mouth``)."""


@dataclass
class BenchExpression:
    method: str = "latentavatar-tiny"
    """Method to train (the CPU budget suits latentavatar-tiny)."""
    variants: List[str] = field(default_factory=lambda: [
        "baseline",
        "static_planes+lpips_alex+region_losses+static_start500+expression_planes16+expression_res16+lr_decay+sr_residual"
        "+plane_tv100x+tv_no_expression_planes+no_view_dir+face2+mask1"])
    """Which of VARIANTS to train (``a+b`` combines two); the first is the reference of every delta."""
    cases: List[str] = field(default_factory=lambda: ["detailed", "smooth"])
    """Which of CASES to train on."""
    iterations: int = 3000
    """Training steps per run (the demo's budget)."""
    num_frames: int = 150
    """Synthetic frames (the last 15% held out)."""
    resolution: int = 128
    """Frame side in pixels."""
    train_frames_scored: int = 16
    """Training frames scored (evenly spaced), for the fit."""
    device: str = "cpu"
    jobs: int = 2
    """Runs trained at the same time (on a CPU, at most the number of cores / --threads)."""
    threads: int = 1
    """CPU threads per training run."""
    output: Path = Path("bench/expression.json")
    """Where the numbers go; contact sheets are written beside it."""
    test_pose_steps: int = 0
    """Also score held-out frames from the head pose fitted to each image (``fit_head_pose``, this many
    steps; 120 lets a tracker-sized error settle) as ``heldout_fitted_pose``; 0 scores them from their
    stored pose only."""
    work_dir: Optional[Path] = None
    """Keep datasets and runs here (default: a temporary folder); existing datasets and finished runs are reused."""


def variant_options(name: str) -> List[str]:
    """The options a ``+``-joined variant name adds to whatever it starts from (an empty name adds none)."""
    return [arg for part in name.split("+") if part for arg in VARIANTS[part]]


def _variant_args(name: str) -> List[str]:
    return BASELINE + variant_options(name)


def _store_pose_error(data: Path, errors: np.ndarray) -> None:
    """Store the training poses with ``errors`` (frames, 6: rotation in degrees, translation in canonical head
    units) composed in; keep the true pose and the true crop beside them."""
    frames = list_frames(data / "train")
    camera = read_camera(data, *Image.open(frames[0].image).size)
    from scipy.spatial.transform import Rotation

    for k, frame in enumerate(frames):
        params = load_params(frame.params)
        crop = crop_affine_from_pose(camera.K, camera.world_to_camera, params.pose, params.scale)
        rotation = Rotation.from_rotvec(np.deg2rad(errors[k, :3])) * Rotation.from_rotvec(params.pose[:3])
        noisy = np.concatenate([rotation.as_rotvec(), params.pose[3:] + errors[k, 3:] * params.scale])
        save_params(frame.params, FrameParams(pose=noisy, scale=params.scale, intrinsics=params.intrinsics,
                                              crop_affine=crop, extra={**params.extra, "true_pose": params.pose}))


def _perturb_poses(data: Path, seed: int) -> None:
    """Tracker-like error in the stored training poses: per-frame jitter and a slowly drifting bias."""
    n = len(list_frames(data / "train"))
    rng = np.random.default_rng(seed + 101)
    t = np.linspace(0.0, 1.0, n)
    phases = rng.uniform(0, 2 * np.pi, 6)
    drift = np.stack([np.sin(2 * np.pi * 0.7 * t + phases[k]) for k in range(6)], axis=1)
    errors = np.zeros((n, 6))
    for k in range(n):
        errors[k, :3] = rng.normal(0, JITTER_DEG, 3) + DRIFT_DEG * drift[k, :3]
        errors[k, 3:] = rng.normal(0, JITTER_CANONICAL, 3) + DRIFT_CANONICAL * drift[k, 3:]
    _store_pose_error(data, errors)


def _pose_follows_mouth(data: Path) -> None:
    """A tracker that reads the mouth as a nod: the stored training poses pitch and shift with the jaw."""
    jaw = _expressions(data, "train")[:, 0]
    z = (jaw - jaw.mean()) / max(jaw.std(), 1e-8)
    errors = np.zeros((len(z), 6))
    errors[:, 0], errors[:, 4] = -MOUTH_NOD_DEG * z, MOUTH_NOD_CANONICAL * z
    _store_pose_error(data, errors)


def _make_case(name: str, case: Case, cfg: BenchExpression, work: Path) -> Path:
    data = work / "data" / name
    if (data / "train").exists():
        return data
    if case.real:
        from latentavatar_ns.assets.cache import asset_path
        from latentavatar_ns.process.video_to_dataset import ProcessConfig, process

        process(ProcessConfig(input=asset_path("single_face.mp4"), output_dir=data, resolution=cfg.resolution,
                              eval_fraction=0.15))
        return data
    make_dataset(data, identity=case.identity, num_frames=case.num_frames or cfg.num_frames,
                 resolution=cfg.resolution, eval_fraction=0.15, seed=case.seed, detail=case.detail, overwrite=True)
    if case.heldout_of is not None:
        shutil.rmtree(data / "eval")
        shutil.copytree(_make_case(case.heldout_of, CASES[case.heldout_of], cfg, work) / "eval", data / "eval")
    if case.pose_noise:
        _perturb_poses(data, case.seed)
    if case.pose_follows_mouth:
        _pose_follows_mouth(data)
    return data


def _boxes_of(data: Path):
    """Region boxes of a dataset's frames: ground truth on synthetic heads, landmarks on real video."""
    camera_cache: Dict[tuple, object] = {}
    frames = {split: list_frames(data / split) for split in ("train", "eval")}

    def boxes(split: str, index: int, width: int, height: int) -> Dict[str, tuple]:
        params = load_params(frames[split][index].params)
        if (width, height) not in camera_cache:
            camera_cache[(width, height)] = read_camera(data, width, height)
        camera = camera_cache[(width, height)]
        pose = params.extra.get("true_pose", params.pose).reshape(6)  # where the head really is
        affine = params.crop_affine if params.crop_affine is not None else \
            crop_affine_from_pose(camera.K, camera.world_to_camera, pose, params.scale)
        out = {"face": face_box(affine, width, height)}
        if "landmarks" in params.extra:
            out.update(landmark_boxes(params.extra["landmarks"], width, height))
        else:
            out.update(region_boxes(pose, params.scale, camera))
        return out

    return boxes


# MediaPipe face-mesh indices of the lips and of both eyes' contours.
_LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409]
_EYES = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
         263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]


def landmark_boxes(landmarks: np.ndarray, width: int, height: int) -> Dict[str, tuple]:
    """Mouth and eye boxes around a frame's landmarks (pixels), with a margin for opening and lids."""
    def around(idx: List[int], grow_x: float, grow_y: float) -> tuple:
        pts = np.asarray(landmarks)[idx]
        lo, hi = pts.min(0), pts.max(0)
        pad = (hi - lo) * [grow_x, grow_y] + 1.0
        x0, y0 = np.floor(lo - pad).astype(int)
        x1, y1 = np.ceil(hi + pad).astype(int)
        return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)

    return {"mouth": around(_LIPS, 0.2, 0.4), "eyes": around(_EYES, 0.1, 1.0)}


def _expressions(data: Path, split: str) -> Optional[np.ndarray]:
    """(frames, parameters) ground-truth expressions of a synthetic split, or None (real video)."""
    frames = [load_params(f.params).extra.get("expression") for f in list_frames(data / split)]
    return None if any(e is None for e in frames) else np.stack(frames).astype(np.float64)


def _expression_keys(data: Path) -> List[str]:
    """Names of a synthetic case's expression parameters, in the order ``_expressions`` gives them."""
    return json.loads((data / "synth.json").read_text())["expression_keys"]


def _rare_eval_frames(data: Path) -> Optional[List[int]]:
    """Held-out frames whose ground-truth expression is farther than the median from every training one."""
    train, held = _expressions(data, "train"), _expressions(data, "eval")
    if train is None or held is None:
        return None
    nearest = np.sqrt(((held[:, None] - train[None]) ** 2).sum(-1)).min(1)
    return [int(i) for i in np.nonzero(nearest >= np.median(nearest))[0]]


def _launch(cfg: BenchExpression, data: Path, runs: Path, name: str, variant: str) -> subprocess.Popen:
    cmd = train_command(data, runs, cfg.iterations, cfg.device, cfg.method, experiment=name,
                        extra_args=[*_variant_args(variant), "--overwrite", "True"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(cfg.threads),
           "MKL_NUM_THREADS": str(cfg.threads)}
    print(f"{name}: $ {' '.join(cmd)}", flush=True)
    with (runs / f"{name}.log").open("w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _train_all(cfg: BenchExpression, jobs: List[tuple], runs: Path) -> Dict[str, float]:
    """Train every (run name, dataset, variant) not already finished, ``--jobs`` at a time; seconds each."""
    pending = [job for job in jobs if not (runs / job[0] / cfg.method / "run" / "done").exists()]
    running: Dict[str, tuple] = {}
    seconds: Dict[str, float] = {}
    while pending or running:
        while pending and len(running) < cfg.jobs:
            name, data, variant = pending.pop(0)
            running[name] = (_launch(cfg, data, runs, name, variant), time.time())
        time.sleep(2)
        for name, (proc, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode != 0:
                raise SystemExit(f"error: run {name} failed (log: {runs / (name + '.log')})")
            seconds[name] = round(time.time() - start, 1)
            (runs / name / cfg.method / "run" / "done").write_text(str(seconds[name]))
            print(f"{name}: trained in {seconds[name]:.0f} s", flush=True)
    for name, _, _ in jobs:
        seconds.setdefault(name, float((runs / name / cfg.method / "run" / "done").read_text()))
    return seconds


def _score(config: Path, data: Path, cfg: BenchExpression, scorer: RegionScorer, sheet: Path) -> Dict:
    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    return _score_pipeline(pipeline, data, cfg, scorer, sheet)


def _score_pipeline(pipeline, data: Path, cfg: BenchExpression, scorer: RegionScorer, sheet: Path) -> Dict:
    """Every score of one trained avatar on its dataset ``data``, and its contact sheet."""
    boxes_of = _boxes_of(data)
    n_train = len(pipeline.datamanager.train_dataset)
    n_eval = len(pipeline.datamanager.eval_dataset)
    train_idx = np.linspace(0, n_train - 1, min(cfg.train_frames_scored, n_train)).round().astype(int).tolist()
    held = score_split(pipeline, "eval", list(range(n_eval)), boxes_of, scorer)
    result = {"train": score_split(pipeline, "train", train_idx, boxes_of, scorer), "heldout": held,
              "code_spread": code_spread(pipeline, list(range(n_eval)))}
    if cfg.test_pose_steps > 0:
        result["heldout_fitted_pose"] = score_split(pipeline, "eval", list(range(n_eval)), boxes_of, scorer,
                                                    test_pose_steps=cfg.test_pose_steps)
    truth = _expressions(data, "train")
    if truth is not None:  # synthetic heads: which expression parameters the training frames' codes hold
        keys = _expression_keys(data)
        poses = np.stack([load_params(f.params).pose for f in list_frames(data / "train")])
        codes = encoded_codes(pipeline, "train", range(n_train))
        result["probe_r2"] = {name: {key: float(v) for key, v in zip(keys, linear_probe(features, truth))}
                              for name, features in (("pose", poses), ("pose_and_code", np.c_[poses, codes]))}
    if pipeline.model.pose_refinement is not None:
        result["pose_corrections"] = _pose_correction_scores(pipeline.model.pose_refinement, data)
    rare = _rare_eval_frames(data)
    if rare:
        rows = [f for f in held["frames"] if f["index"] in rare]
        result["heldout_rare_gain_db"] = {r: float(np.mean([f["gain_db"][r] for f in rows]))
                                          for r in rows[0]["gain_db"]}
    # The contact sheet: evenly spaced held-out frames and the two rarest expressions.
    picks = sorted(set(np.linspace(0, n_eval - 1, 4).round().astype(int).tolist() + (rare or [])[:2]))
    Image.fromarray(to_uint8(contact_sheet(pipeline, picks, boxes_of, zoom=max(1, 256 // cfg.resolution)))).save(sheet)
    # Each held-out frame's gains stay (a mean over a few frames can hang on one or two of them); the rest of
    # the per-frame rows go.
    held["frame_gain_db"] = [f["gain_db"] for f in held["frames"]]
    for split in ("train", "heldout", "heldout_fitted_pose"):
        result.get(split, {}).pop("frames", None)
    return result


def _pose_correction_scores(refinement, data: Path) -> Dict:
    """What the learned pose corrections of ``--pipeline.model.pose-refinement`` hold: their mean size, and how
    much of each ground-truth expression parameter (synthetic heads) and of each component of the stored
    poses' error (``pose_noise`` cases) a linear map reads from them (``linear_probe``). Corrections that
    read an expression have taken a share of it from the code."""
    c = refinement.corrections(torch.arange(len(refinement.correction))).detach().cpu().double().numpy()
    out: Dict = {"rotation_deg": float(np.degrees(np.linalg.norm(c[:, 3:], axis=1)).mean()),
                 "translation_canonical": float(np.linalg.norm(c[:, :3], axis=1).mean())}
    truth = _expressions(data, "train")
    if truth is not None:
        keys = _expression_keys(data)
        out["expression_r2"] = {key: float(v) for key, v in zip(keys, linear_probe(c, truth))}
    poses = _true_and_stored_poses(data)
    if poses is not None:
        out["stored_error_r2"] = [float(v) for v in linear_probe(c, poses[1] - poses[0])]
    return out


def _true_and_stored_poses(data: Path) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(frames, 6) true and stored training poses of a case whose stored poses carry error, else None."""
    params = [load_params(f.params) for f in list_frames(data / "train")]
    if not all("true_pose" in p.extra for p in params):
        return None
    return (np.stack([np.asarray(p.extra["true_pose"]).reshape(6) for p in params]),
            np.stack([np.asarray(p.pose).reshape(6) for p in params]))


def _pose_error_shared_with_expression(data: Path) -> Optional[Dict]:
    """For a case with error in its stored poses: how much of each component of the error a linear map reads
    (``linear_probe``) from the ground-truth expressions and from the true poses. What it reads, no
    correction kept apart from the expression (or pose) can take without also taking that share."""
    truth, poses = _expressions(data, "train"), _true_and_stored_poses(data)
    if truth is None or poses is None:
        return None
    true, error = poses[0], poses[1] - poses[0]
    return {"from_expression_r2": [float(v) for v in linear_probe(truth, error)],
            "from_true_pose_r2": [float(v) for v in linear_probe(true, error)]}


def _summary(results: Dict, reference: str) -> Dict:
    """Per case and variant: the headline numbers, and their differences from the reference variant."""
    out: Dict[str, Dict] = {}
    for case, variants in results.items():
        out[case] = {}
        for variant, r in variants.items():
            h, t = r["heldout"], r["train"]
            row = {
                "heldout_psnr": {reg: h["own"][reg]["psnr"] for reg in h["own"]},
                "heldout_gain_db": h["gain_db"],
                "train_psnr": {reg: t["own"][reg]["psnr"] for reg in t["own"]},
                "train_gain_db": t["gain_db"],
                "train_silhouette_iou": t["silhouette_iou"],
                "heldout_silhouette_iou": h["silhouette_iou"],
                "code_over_pose": r["code_spread"]["code_over_pose"],
                **({"probe_r2": r["probe_r2"]} if "probe_r2" in r else {}),
                **({"pose_corrections": r["pose_corrections"]} if "pose_corrections" in r else {}),
                "train_seconds": r["train_seconds"],
            }
            if "heldout_fitted_pose" in r:
                fitted = r["heldout_fitted_pose"]
                row["heldout_fitted_pose_psnr"] = {reg: fitted["own"][reg]["psnr"] for reg in fitted["own"]}
                row["heldout_fitted_pose_gain_db"] = fitted["gain_db"]
                row["heldout_fitted_pose_silhouette_iou"] = fitted["silhouette_iou"]
            if variant != reference and reference in variants:
                ref = variants[reference]["heldout"]
                row[f"heldout_psnr_vs_{reference}"] = {reg: h["own"][reg]["psnr"] - ref["own"][reg]["psnr"]
                                                       for reg in h["own"]}
            out[case][variant] = row
    return out


def main() -> None:
    cfg = tyro.cli(BenchExpression)
    unknown = [v for name in cfg.variants for v in name.split("+") if v not in VARIANTS]
    unknown += [c for c in cfg.cases if c not in CASES]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) or case(s) {unknown}; variants: {list(VARIANTS)}, "
                         f"cases: {list(CASES)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(cfg.work_dir) if cfg.work_dir is not None else Path(tmp)
        runs = work / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        datasets = {case: _make_case(case, CASES[case], cfg, work) for case in cfg.cases}
        shared = {case: found for case in cfg.cases if (found := _pose_error_shared_with_expression(datasets[case]))}
        jobs = [(f"{case}__{variant}", datasets[case], variant) for case in cfg.cases for variant in cfg.variants]
        seconds = _train_all(cfg, jobs, runs)
        scorer = RegionScorer(load_lpips("alex", required=False))
        sheets = cfg.output.parent / f"{cfg.output.stem}_sheets"
        sheets.mkdir(parents=True, exist_ok=True)
        results: Dict[str, Dict] = {}
        for name, data, variant in jobs:
            case = name.split("__")[0]
            config = runs / name / cfg.method / "run" / "config.yml"
            print(f"scoring {name}", flush=True)
            r = _score(config, data, cfg, scorer, sheets / f"{name}.png")
            r["train_seconds"] = seconds[name]
            results.setdefault(case, {})[variant] = r
    device = torch.cuda.get_device_name() if cfg.device == "cuda" else \
        f"cpu ({platform.processor() or 'x86_64'}, {cfg.threads} threads per run, {cfg.jobs} runs at a time)"
    report = {
        "config": {k: str(v) for k, v in asdict(cfg).items() if k != "work_dir"},
        "device": device,
        "variants": {name: _variant_args(name) for name in cfg.variants},
        "cases": {name: asdict(CASES[name]) for name in cfg.cases},
        "pose_noise": {"jitter_deg": JITTER_DEG, "jitter_canonical": JITTER_CANONICAL,
                       "drift_deg": DRIFT_DEG, "drift_canonical": DRIFT_CANONICAL},
        "pose_follows_mouth": {"pitch_deg_per_std": MOUTH_NOD_DEG, "shift_canonical_per_std": MOUTH_NOD_CANONICAL},
        "pose_error_shared_with_expression": shared,
        "summary": _summary(results, cfg.variants[0]),
        "results": results,
    }
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
