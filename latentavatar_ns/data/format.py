"""The on-disk dataset format: the official LatentAvatar layout plus our ``camera.json``.

::

    <dataset>/camera.json              optional: intrinsics, world-to-camera, image size
    <dataset>/train/img_00000.jpg      RGB frame
    <dataset>/train/mask_00000.jpg     foreground matte ("img" -> "mask"; png also fine)
    <dataset>/train/params_00000.npz   pose (1,6) axis-angle + translation, scale (1,)
    <dataset>/eval/...                 held-out frames, same naming

A multi-view capture lists its cameras under ``views`` in ``camera.json`` and names each image
after its moment and view (``img_00012_cam03.jpg``, ``mask_00012_cam03.png``); the head pose of a
moment is one ``params_00012.npz`` shared by its views (see :class:`CameraRig`).

A canonical head point ``x`` appears in the world at ``R @ (S * x) + T``; the conventions and their
numpy helpers are in :mod:`latentavatar_ns.data.poses`. This module is pure numpy so that every tool
that reads or writes datasets (dataparser, synthetic heads, video preprocessing) shares one definition.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from latentavatar_ns.utils.errors import LatentAvatarError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "eval")
CAMERA_FILE = "camera.json"

# The official release's fixed camera, for 512 px frames.
OFFICIAL_SIZE = 512
OFFICIAL_FOCAL = 5000.0
OFFICIAL_W2C = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 4.0], [0.0, 0.0, 0.0, 1.0]]
)
# The official canonical head box (x, y, z minima then maxima).
OFFICIAL_BOX = ((-1.5, -1.8, -1.9), (1.5, 1.8, 1.1))

_FRAME_RE = re.compile(r"^img_(\d+)$")
_VIEW_FRAME_RE = re.compile(r"^img_(\d+)_(.+)$")
_VIEW_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


class DatasetError(LatentAvatarError, ValueError):
    """Bad dataset input. The message names the file and the problem, on one line."""


class DatasetWarning(UserWarning):
    """Dataset input that trains, but some of whose frames teach nothing (named, on one line)."""


@dataclass
class CameraSpec:
    """A pinhole camera in OpenCV convention, shared by all frames unless a frame overrides K."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray = field(default_factory=lambda: OFFICIAL_W2C.copy())
    """4x4 world-to-camera matrix (OpenCV)."""

    @classmethod
    def official(cls, width: int, height: Optional[int] = None) -> "CameraSpec":
        """The official camera scaled to an image size (focal and centre scale with the width)."""
        height = width if height is None else height
        s = width / OFFICIAL_SIZE
        return cls(width, height, OFFICIAL_FOCAL * s, OFFICIAL_FOCAL * s, width / 2.0, height / 2.0)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def to_json(self) -> Dict:
        return {
            "width": int(self.width),
            "height": int(self.height),
            "fx": float(self.fx),
            "fy": float(self.fy),
            "cx": float(self.cx),
            "cy": float(self.cy),
            "world_to_camera": np.asarray(self.world_to_camera, dtype=float).tolist(),
        }

    @classmethod
    def from_json(cls, data: Dict, path: Path) -> "CameraSpec":
        try:
            w2c = np.asarray(data.get("world_to_camera", OFFICIAL_W2C), dtype=np.float64)
            spec = cls(int(data["width"]), int(data["height"]), float(data["fx"]), float(data["fy"]),
                       float(data["cx"]), float(data["cy"]), w2c)
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"{path}: camera file is malformed ({err!r}); expected keys width, height, "
                               "fx, fy, cx, cy and optionally world_to_camera (4x4)") from None
        if spec.world_to_camera.shape != (4, 4) or not np.all(np.isfinite(spec.world_to_camera)):
            raise DatasetError(f"{path}: world_to_camera must be a finite 4x4 matrix")
        if not np.all(np.isfinite([spec.fx, spec.fy, spec.cx, spec.cy])):
            raise DatasetError(f"{path}: fx, fy, cx and cy must be finite numbers")
        if spec.width <= 0 or spec.height <= 0 or spec.fx <= 0 or spec.fy <= 0:
            raise DatasetError(f"{path}: image size and focal lengths must be positive")
        return spec

    def rescaled(self, width: int, height: int) -> "CameraSpec":
        sx, sy = width / self.width, height / self.height
        return CameraSpec(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                          self.world_to_camera.copy())


def _read_camera_json(path: Path) -> Dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: cannot read camera file ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: camera file must hold a JSON object")
    return data


def read_camera(dataset_dir: Path, image_width: int, image_height: int) -> CameraSpec:
    """``camera.json`` if present (rescaled to the images if they differ), else the official camera."""
    path = Path(dataset_dir) / CAMERA_FILE
    if not path.exists():
        return CameraSpec.official(image_width, image_height)
    data = _read_camera_json(path)
    if "views" in data:
        raise DatasetError(f"{path}: a multi-view camera file (it has 'views'); this tool reads single-camera "
                           "datasets")
    spec = CameraSpec.from_json(data, path)
    if (spec.width, spec.height) != (image_width, image_height):
        spec = spec.rescaled(image_width, image_height)
    return spec


def write_camera(dataset_dir: Path, spec: CameraSpec) -> None:
    path = Path(dataset_dir) / CAMERA_FILE
    path.write_text(json.dumps(spec.to_json(), indent=2))


@dataclass
class CameraRig:
    """The synchronised cameras of a multi-view capture: ``camera.json`` with a ``views`` object.

    ::

        {"views": {"cam00": {"width": 512, "height": 512, "fx": ..., "world_to_camera": [[...]]},
                   "cam01": {...}},
         "encoder_view": "cam01",        optional: whose face crop feeds the encoder (default: the most frontal)
         "heldout_views": ["cam00"]}     optional: never used for training, kept for novel-view evaluation

    View names are letters, digits and hyphens (no underscore: it separates moment and view in
    file names). Every view is a full camera: its own intrinsics and world-to-camera matrix.
    """

    views: Dict[str, CameraSpec]
    encoder_view: Optional[str] = None
    heldout_views: Tuple[str, ...] = ()

    @property
    def names(self) -> List[str]:
        return list(self.views)

    def to_json(self) -> Dict:
        data: Dict = {"views": {name: spec.to_json() for name, spec in self.views.items()}}
        if self.encoder_view is not None:
            data["encoder_view"] = self.encoder_view
        if self.heldout_views:
            data["heldout_views"] = list(self.heldout_views)
        return data

    @classmethod
    def from_json(cls, data: Dict, path: Path) -> "CameraRig":
        views = data.get("views")
        if not isinstance(views, dict) or not views:
            raise DatasetError(f"{path}: 'views' must be a non-empty object of view name -> camera")
        specs = {}
        for name, entry in views.items():
            if not _VIEW_NAME_RE.match(name):
                raise DatasetError(f"{path}: view name {name!r} must be letters, digits and hyphens")
            if not isinstance(entry, dict):
                raise DatasetError(f"{path}: view '{name}' must be a camera object")
            specs[name] = CameraSpec.from_json(entry, path)
        encoder = data.get("encoder_view")
        if encoder is not None and encoder not in specs:
            raise DatasetError(f"{path}: encoder_view '{encoder}' is not one of the views ({', '.join(specs)})")
        heldout = data.get("heldout_views", [])
        if not isinstance(heldout, list) or any(name not in specs for name in heldout):
            raise DatasetError(f"{path}: heldout_views must be a list of view names from {', '.join(specs)}, "
                               f"got {heldout!r}")
        if set(heldout) >= set(specs):
            raise DatasetError(f"{path}: every view is held out; at least one must be left for training")
        return cls(specs, encoder, tuple(heldout))

    def rescaled(self, width: int, height: int) -> "CameraRig":
        views = {name: spec if (spec.width, spec.height) == (width, height) else spec.rescaled(width, height)
                 for name, spec in self.views.items()}
        return CameraRig(views, self.encoder_view, self.heldout_views)


def read_rig(dataset_dir: Path) -> Optional[CameraRig]:
    """The multi-view cameras of a dataset, or None for a single-camera (monocular) dataset."""
    path = Path(dataset_dir) / CAMERA_FILE
    if not path.exists():
        return None
    data = _read_camera_json(path)
    return CameraRig.from_json(data, path) if "views" in data else None


def write_rig(dataset_dir: Path, rig: CameraRig) -> None:
    path = Path(dataset_dir) / CAMERA_FILE
    path.write_text(json.dumps(rig.to_json(), indent=2))


# ----------------------------------------------------------------------------------------------
# Per-frame parameters


@dataclass
class FrameParams:
    """What a ``params_XXXXX.npz`` holds. Only pose and scale are required."""

    pose: np.ndarray
    """(6,) axis-angle rotation (3) then translation (3)."""
    scale: float
    intrinsics: Optional[np.ndarray] = None
    """(3, 3) per-frame K, overriding camera.json (e.g. per-frame crops of a video)."""
    crop_affine: Optional[np.ndarray] = None
    """(2, 3) affine mapping image pixels to normalised encoder-crop coordinates in [0, 1]."""
    extra: Dict[str, np.ndarray] = field(default_factory=dict)
    """Anything else stored (landmarks, ground-truth expression, view id, ...)."""


def load_params(path: Path) -> FrameParams:
    """Read and validate one params file; errors name the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: params file is missing")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: np.asarray(npz[k]) for k in npz.files}
    except Exception as err:  # zipfile, pickle and value errors all mean "unreadable"
        raise DatasetError(f"{path}: cannot read params file ({type(err).__name__}: {err})") from None
    for key in ("pose", "scale"):
        if key not in data:
            raise DatasetError(f"{path}: params file has no '{key}' key (found: {sorted(data)})")
    pose = _numbers(path, "pose", data.pop("pose"))
    scale = _numbers(path, "scale", data.pop("scale"))
    if pose.size != 6:
        raise DatasetError(f"{path}: 'pose' must have 6 values (axis-angle, translation), got shape {pose.shape}")
    if scale.size != 1:
        raise DatasetError(f"{path}: 'scale' must have 1 value, got shape {scale.shape}")
    pose = pose.reshape(6)
    scale_value = float(scale.reshape(()))
    if not np.all(np.isfinite(pose)) or not np.isfinite(scale_value):
        raise DatasetError(f"{path}: 'pose' or 'scale' is not finite")
    if scale_value <= 0:
        raise DatasetError(f"{path}: 'scale' must be positive, got {scale_value}")
    intrinsics = data.pop("intrinsics", None)
    if intrinsics is not None:
        intrinsics = _numbers(path, "intrinsics", intrinsics)
        if intrinsics.shape != (3, 3) or not np.all(np.isfinite(intrinsics)) or intrinsics[0, 0] <= 0:
            raise DatasetError(f"{path}: 'intrinsics' must be a finite 3x3 matrix with positive focal length")
    crop = data.pop("crop_affine", None)
    if crop is not None:
        crop = _numbers(path, "crop_affine", crop)
        if crop.shape != (2, 3) or not np.all(np.isfinite(crop)):
            raise DatasetError(f"{path}: 'crop_affine' must be a finite 2x3 matrix, got shape {crop.shape}")
        if abs(np.linalg.det(crop[:, :2])) < 1e-12:
            raise DatasetError(f"{path}: 'crop_affine' is singular (it flattens the image onto a line or a point)")
    return FrameParams(pose=pose, scale=scale_value, intrinsics=intrinsics, crop_affine=crop, extra=data)


_NOT_NUMBERS = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers", "M": "dates",
                "m": "time spans", "V": "raw records"}


def _numbers(path: Path, key: str, value: np.ndarray) -> np.ndarray:
    """``value`` as float64 if it holds real numbers (booleans and integers too); else an error naming the file."""
    if value.dtype.kind not in "biuf":
        what = _NOT_NUMBERS.get(value.dtype.kind, "values that are not numbers")
        raise DatasetError(f"{path}: '{key}' must hold numbers, but holds {what} (dtype {value.dtype.str})")
    return value.astype(np.float64)


def save_params(path: Path, params: FrameParams) -> None:
    arrays: Dict[str, np.ndarray] = {
        "pose": np.asarray(params.pose, dtype=np.float32).reshape(1, 6),
        "scale": np.asarray([params.scale], dtype=np.float32),
    }
    if params.intrinsics is not None:
        arrays["intrinsics"] = np.asarray(params.intrinsics, dtype=np.float32)
    if params.crop_affine is not None:
        arrays["crop_affine"] = np.asarray(params.crop_affine, dtype=np.float32)
    arrays.update({k: np.asarray(v) for k, v in params.extra.items()})
    np.savez(path, **arrays)


# ----------------------------------------------------------------------------------------------
# Frames on disk


@dataclass
class FrameFiles:
    index: int
    """The frame's number; in a multi-view capture, the moment's."""
    image: Path
    mask: Path
    params: Path
    view: Optional[str] = None
    """The camera this image is from (multi-view captures only)."""


def _find_mask(image: Path, stem: str) -> Path:
    """``mask_<stem>`` beside ``image``, with the image's suffix or any image suffix (the image's if none exists)."""
    candidates = [image.with_name(f"mask_{stem}{s}") for s in (image.suffix, *IMAGE_SUFFIXES)]
    return next((m for m in candidates if m.exists()), candidates[0])


def list_frames(split_dir: Path) -> List[FrameFiles]:
    """The frames of one split, sorted by index; the mask and params paths may not exist."""
    split_dir = Path(split_dir)
    frames = []
    for path in sorted(split_dir.iterdir()):
        match = _FRAME_RE.match(path.stem)
        if match is None or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        idx = match.group(1)
        frames.append(FrameFiles(int(idx), path, _find_mask(path, idx), split_dir / f"params_{idx}.npz"))
    return frames


def list_view_frames(split_dir: Path, views: Sequence[str]) -> List[FrameFiles]:
    """The images of one multi-view split, sorted by moment, then in the order of ``views``.

    ``img_<moment>_<view>`` with its ``mask_<moment>_<view>`` and the moment's ``params_<moment>.npz``
    (either may not exist). An image of a view that ``camera.json`` does not list is an error.
    """
    split_dir = Path(split_dir)
    order = {name: i for i, name in enumerate(views)}
    frames = []
    for path in sorted(split_dir.iterdir()):
        match = _VIEW_FRAME_RE.match(path.stem)
        if match is None or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        idx, view = match.groups()
        if view not in order:
            raise DatasetError(f"{path}: view '{view}' is not in {CAMERA_FILE} (views: {', '.join(views)})")
        frames.append(FrameFiles(int(idx), path, _find_mask(path, f"{idx}_{view}"), split_dir / f"params_{idx}.npz",
                                 view))
    frames.sort(key=lambda f: (f.index, order[f.view]))  # type: ignore[index]  # every frame here has a view
    return frames


def frame_paths(split_dir: Path, index: int, image_suffix: str = ".jpg", view: Optional[str] = None) -> FrameFiles:
    """Where a writer puts frame ``index`` (of ``view`` in a multi-view capture; masks are png to stay exact)."""
    split_dir = Path(split_dir)
    stem = f"{index:05d}"
    image_stem = stem if view is None else f"{stem}_{view}"
    return FrameFiles(index, split_dir / f"img_{image_stem}{image_suffix}", split_dir / f"mask_{image_stem}.png",
                      split_dir / f"params_{stem}.npz", view)
