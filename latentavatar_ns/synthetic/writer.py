"""Writing a synthetic dataset: frames, cameras (one or a rig around the head), images, params, ``synth.json``.

:func:`make_dataset` renders a person's own performance, or with ``drive_from`` replays another
synthetic dataset's poses and expressions exactly: the ground truth of "avatar A making actor B's
expression", which gives cross-identity reenactment a real error figure. :class:`DatasetOptions`
states every option once, for the function and for ``ns-latentavatar-synth`` alike.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np

from latentavatar_ns.data.format import (
    SPLITS,
    CameraRig,
    CameraSpec,
    DatasetError,
    FrameParams,
    frame_paths,
    list_frames,
    load_params,
    read_camera,
    save_params,
    write_camera,
    write_rig,
)
from latentavatar_ns.data.poses import axis_angle_to_matrix
from latentavatar_ns.synthetic.head import EXPRESSION_KEYS, FACE_REGION, Expression, HeadIdentity
from latentavatar_ns.synthetic.motion import sample_expressions, sample_motion
from latentavatar_ns.synthetic.raycast import make_background, render_head
from latentavatar_ns.utils.errors import OutputExistsError
from latentavatar_ns.utils.image import to_uint8

SYNTH_FILE = "synth.json"
"""Written at a synthetic dataset's root: identity parameters, seed, sizes, counts."""


@dataclass
class DatasetOptions:
    """Everything a synthetic dataset is made from: :func:`make_dataset`'s options by name, and
    ``ns-latentavatar-synth``'s flags, whose help is these fields' docs (hence the ``--flags`` in them).
    """

    output_dir: Path
    """Where to write the dataset (must be empty unless --overwrite)."""
    identity: int = 0
    """Which person: 0-3 are hand-made presets, larger numbers are seeded random people."""
    num_frames: int = 120
    """Frames of synthetic video (ignored with --drive-from)."""
    resolution: int = 256
    """Image width and height in pixels."""
    eval_fraction: float = 0.15
    """Share of the last frames held out as eval/ (ignored with --drive-from)."""
    seed: int = 0
    """Seed of the motion, expressions and background, mixed with the identity (with --drive-from: the background)."""
    drive_from: Optional[Path] = None
    """Another synthetic dataset whose poses and expressions this identity replays exactly."""
    image_format: Literal["jpg", "png"] = "jpg"
    """Frame image format (masks are always png)."""
    overwrite: bool = False
    """Replace the dataset (train/, eval/, camera.json, synth.json) in a non-empty output directory."""
    num_views: int = 1
    """Synchronised cameras (more than 1: a multi-view capture, images named img_<moment>_camNN)."""
    view_layout: Literal["arc", "ring"] = "arc"
    """Where the cameras stand: an arc in front of the face or a ring all around the head."""
    view_spread: float = 120.0
    """Arc layout: degrees from the leftmost to the rightmost camera (the ring always spans 360)."""
    heldout_views: Tuple[int, ...] = ()
    """Indices of the views kept out of training for novel-view evaluation (e.g. --heldout-views 1 3)."""
    detail: bool = False
    """Render the detailed head, with the detail a real face has: textured skin and hair, white eyes with a
    dark limbal ring, outlined lips, separated teeth, a dark mouth and specular highlights, and sample
    wider expressions (winks, wide-open mouth). A smooth head is easy to fit, so a benchmark's PSNR on
    it says little about an avatar; on the detailed one it measures detail and expressiveness."""


@dataclass
class _Frame:
    split: str
    index: int
    """Index within the split (the file number)."""
    frame: int
    """Global frame index in the video."""
    pose: np.ndarray
    scale: float
    expression: Expression


def _dataset_seeds(seed: int, identity: int) -> Tuple[int, int, int]:
    """Motion, expression and background seeds: distinct people with one seed move differently."""
    a, b, c = np.random.SeedSequence([seed, identity]).generate_state(3)
    return int(a), int(b), int(c)


def synthetic_background(dataset_dir: Path) -> np.ndarray:
    """(H, W, 3) backdrop every frame of a single-camera synthetic dataset was rendered on, from its ``synth.json``."""
    path = Path(dataset_dir) / SYNTH_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: not found; only a synthetic dataset has a known backdrop")
    info = json.loads(path.read_text())
    if info.get("drive_from") or info.get("num_views", 1) > 1:
        raise DatasetError(f"{path}: only a single-camera dataset of its own performance has one backdrop")
    width, height = info["resolution"]
    return make_background(width, height, _dataset_seeds(info["seed"], info["identity"])[2])


def _own_frames(num_frames: int, eval_fraction: float, motion_seed: int, expression_seed: int,
                detail: bool = False) -> List[_Frame]:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    num_eval = max(1, int(round(num_frames * eval_fraction))) if eval_fraction > 0 else 0
    if num_eval >= num_frames:
        raise ValueError(f"{num_frames} frames leave none to train on with eval_fraction={eval_fraction}")
    poses, scales = sample_motion(num_frames, motion_seed)
    expressions = sample_expressions(num_frames, expression_seed, detail=detail)
    num_train = num_frames - num_eval
    return [_Frame("train" if i < num_train else "eval", i if i < num_train else i - num_train, i,
                   poses[i], float(scales[i]), expressions[i]) for i in range(num_frames)]


def _driver_frames(driver: Path) -> Tuple[List[_Frame], CameraSpec]:
    """Every frame of another synthetic dataset (both splits, same numbering) and its camera."""
    if not driver.is_dir():
        raise DatasetError(f"{driver}: driving dataset not found")
    frames: List[_Frame] = []
    size: Optional[Tuple[int, int]] = None
    for split in SPLITS:
        if not (driver / split).is_dir():
            continue
        for files in list_frames(driver / split):
            params = load_params(files.params)
            if "expression" not in params.extra:
                raise DatasetError(f"{files.params}: no 'expression' key; drive_from needs a synthetic dataset")
            expression = Expression.from_array(params.extra["expression"])
            global_index = int(np.asarray(params.extra.get("frame", files.index)).reshape(-1)[0])
            frames.append(_Frame(split, files.index, global_index, params.pose, params.scale, expression))
            if size is None:
                from PIL import Image

                with Image.open(files.image) as image:
                    size = image.size
    if not frames or size is None:
        raise DatasetError(f"{driver}: no frames in {' or '.join(SPLITS)}/")
    return frames, read_camera(driver, size[0], size[1])


def _clear_output(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputExistsError(f"{output_dir} exists and is not a directory")
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{output_dir} is not empty; pass overwrite=True (--overwrite) to replace it")
        for name in SPLITS:
            if (output_dir / name).exists():
                shutil.rmtree(output_dir / name)
        for name in ("camera.json", SYNTH_FILE):
            (output_dir / name).unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)


def view_yaws(num_views: int, layout: Literal["arc", "ring"] = "arc", spread: float = 120.0) -> np.ndarray:
    """Yaw angles (degrees) of the cameras of a synthetic capture around the head.

    ``arc``: evenly from -spread/2 to +spread/2 (a frontal camera when ``num_views`` is odd);
    ``ring``: all around, 360/num_views apart, starting in front of the face.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if layout == "ring":
        return np.arange(num_views) * 360.0 / num_views
    if layout != "arc":
        raise ValueError(f"view layout must be 'arc' or 'ring', got {layout!r}")
    if not 0.0 < spread <= 360.0:
        raise ValueError(f"view spread must be in (0, 360] degrees, got {spread}")
    return np.linspace(-spread / 2.0, spread / 2.0, num_views) if num_views > 1 else np.zeros(1)


def camera_rig(resolution: int, yaws_deg: Union[Sequence[float], np.ndarray], heldout: Sequence[int] = ()) -> CameraRig:
    """The official camera swung about the world's vertical axis through the head, one view per yaw.

    A yaw of +90 degrees looks at the subject's left side (+x). Views are named ``cam00``, ``cam01``, ...
    in the order of ``yaws_deg``; ``heldout`` lists the indices kept out of training.
    """
    official = CameraSpec.official(resolution)
    views = {}
    for i, yaw in enumerate(yaws_deg):
        swing = np.eye(4)
        swing[:3, :3] = axis_angle_to_matrix(np.array([0.0, np.radians(yaw), 0.0]))
        views[f"cam{i:02d}"] = CameraSpec(official.width, official.height, official.fx, official.fy, official.cx,
                                          official.cy, official.world_to_camera @ np.linalg.inv(swing))
    names = list(views)
    for i in heldout:
        if not 0 <= i < len(names):
            raise ValueError(f"held-out view {i} does not exist (views 0..{len(names) - 1})")
    if len(set(heldout)) >= len(names):
        raise ValueError(f"all {len(names)} views are held out; leave at least one for training")
    return CameraRig(views, None, tuple(names[i] for i in sorted(set(heldout))))



def make_dataset(output_dir: Path, *, progress: bool = True, **options: Any) -> Path:
    """Render a synthetic dataset in the ``format`` layout and return its directory.

    ``options`` are :class:`DatasetOptions`' fields by name, with its defaults (``identity=1,
    num_frames=48, detail=True``; an unknown name is a TypeError); ``progress`` shows a progress bar.

    The last ``eval_fraction`` of the frames form ``eval/`` (held-out later frames, at least one).
    Motion and expressions come from ``(seed, identity)``, as does the background, so one seed
    gives each person a different performance in front of their own backdrop. With ``drive_from``
    (another synthetic dataset) this person is rendered with exactly that dataset's poses, scales,
    expressions, camera, splits and numbering: the ground truth of cross-identity reenactment.

    ``num_views`` > 1 renders a synchronised multi-view capture instead: every moment seen by
    cameras on an arc (``view_spread`` degrees) or a ring around the head (:func:`camera_rig`),
    each with its own backdrop; ``heldout_views`` (indices) are marked in ``camera.json`` as
    never used for training.

    ``detail`` renders the detailed head (``render_head(..., detail=True)``) and, for its own
    performance, the wider expression repertoire (``sample_expressions(..., detail=True)``); a
    driven dataset keeps its driver's expressions. ``region_boxes_of_frame`` gives any
    synthetic frame's mouth and eye boxes.
    """
    opts = DatasetOptions(Path(output_dir), **options)
    output_dir, identity, resolution, image_format = opts.output_dir, opts.identity, opts.resolution, opts.image_format
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8 pixels, got {resolution}")
    ident = HeadIdentity.preset(identity)
    motion_seed, expression_seed, background_seed = _dataset_seeds(opts.seed, identity)
    rig: Optional[CameraRig] = None
    if opts.num_views > 1:
        if opts.drive_from is not None:
            raise ValueError("drive_from replays a single-camera dataset; it cannot be combined with num_views > 1")
        yaws = view_yaws(opts.num_views, opts.view_layout, opts.view_spread)
        rig = camera_rig(resolution, yaws, opts.heldout_views)
    elif opts.num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {opts.num_views}")
    elif opts.heldout_views:
        raise ValueError("held-out views need a multi-view capture (num_views > 1)")
    drive_from = Path(opts.drive_from) if opts.drive_from is not None else None
    if drive_from is not None:
        if drive_from.resolve() == output_dir.resolve():
            raise DatasetError(f"{output_dir}: a dataset cannot be driven by itself")
        frames, driver_camera = _driver_frames(drive_from)
        camera = driver_camera.rescaled(resolution, max(int(round(resolution * driver_camera.height
                                                                       / driver_camera.width)), 1))
    else:
        frames = _own_frames(opts.num_frames, opts.eval_fraction, motion_seed, expression_seed, opts.detail)
        camera = CameraSpec.official(resolution)
    _clear_output(output_dir, opts.overwrite)
    if rig is None:
        write_camera(output_dir, camera)
        views: Dict[Optional[str], CameraSpec] = {None: camera}
    else:
        write_rig(output_dir, rig)
        views = dict(rig.views.items())
    for split in SPLITS:
        (output_dir / split).mkdir(exist_ok=True)
    backgrounds = {name: make_background(camera.width, camera.height, background_seed + i)
                   for i, name in enumerate(views)}
    from PIL import Image
    from rich.progress import track

    shots = [(frame, name) for frame in frames for name in views]
    for frame, name in track(shots, description=f"Rendering {output_dir.name}", disable=not progress):
        rgb, mask = render_head(ident, frame.expression, frame.pose, frame.scale, views[name], backgrounds[name],
                                detail=opts.detail)
        paths = frame_paths(output_dir / frame.split, frame.index, f".{image_format}", view=name)
        image = Image.fromarray(to_uint8(rgb))
        image.save(paths.image, **({"quality": 95} if image_format == "jpg" else {}))  # type: ignore[arg-type]
        Image.fromarray(to_uint8(mask)).save(paths.mask)
        if paths.params.exists():  # a moment's params are written with its first view
            continue
        save_params(paths.params, FrameParams(pose=frame.pose, scale=frame.scale, extra={
            "expression": frame.expression.to_array(),
            "blendshapes": frame.expression.to_blendshapes(),  # as ns-latentavatar-process stores them
            "identity": np.array([identity], dtype=np.int64),
            "frame": np.array([frame.frame], dtype=np.int64),
        }))
    counts = {split: sum(f.split == split for f in frames) for split in SPLITS}
    info = {
        "identity": identity,
        "identity_params": asdict(ident),
        "seed": opts.seed,
        "resolution": [camera.width, camera.height],
        "num_frames": len(frames),
        "num_train": counts["train"],
        "num_eval": counts["eval"],
        "image_format": image_format,
        "expression_keys": list(EXPRESSION_KEYS),
        "face_region": FACE_REGION,
        "drive_from": str(drive_from) if drive_from is not None else None,
        "detail": bool(opts.detail),
    }
    if rig is not None:
        info.update({"num_views": opts.num_views, "view_layout": opts.view_layout, "view_spread": opts.view_spread,
                     "view_yaws_deg": yaws.round(6).tolist(),
                     "views": rig.names, "heldout_views": list(rig.heldout_views)})
    (output_dir / SYNTH_FILE).write_text(json.dumps(info, indent=2))
    return output_dir
