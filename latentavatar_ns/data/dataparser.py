"""Dataparser for the LatentAvatar layout: head pose folded into per-frame cameras.

A multi-view capture (``camera.json`` with ``views``) gives one camera per image and one
expression code per moment: every view of a moment shares the moment's code index and the face
crop of its encoder view.

Every problem with the input (missing mask or params, unreadable image, wrong keys or shapes,
mixed image sizes, empty split, missing folder, every mask empty, the head outside every image)
is found here, before training starts, and raised as one :class:`DatasetError` line naming the
file. Frames that would train but teach nothing of the head (an empty mask, the head or its face
crop wholly outside the image) are named in one :class:`DatasetWarning` line per split.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from PIL import Image

from latentavatar_ns.data.face_crop import DEFAULT_FACE_CENTER, DEFAULT_FACE_HALF_SIZE, crop_affine_from_pose
from latentavatar_ns.data.format import (
    CAMERA_FILE,
    OFFICIAL_BOX,
    CameraRig,
    CameraSpec,
    DatasetError,
    DatasetWarning,
    FrameFiles,
    FrameParams,
    axis_angle_to_matrix,
    canonical_camera_to_world,
    head_to_world,
    list_frames,
    list_view_frames,
    load_params,
    opencv_to_opengl,
    project_points,
    read_camera,
    read_rig,
)


@dataclass
class LatentAvatarDataParserConfig(DataParserConfig):
    """Reads ``<data>/{train,eval}/img_*.jpg, mask_*, params_*.npz`` and optional ``camera.json``."""

    _target: Type = field(default_factory=lambda: LatentAvatarDataParser)
    data: Path = Path("data/latentavatar")
    """Dataset folder (holds train/ and eval/)."""
    background_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour the frames are composited onto through their masks, and the renderer's background."""
    scene_box: Tuple[Tuple[float, float, float], Tuple[float, float, float]] = OFFICIAL_BOX
    """Canonical head box (min xyz, max xyz) in which the tri-plane lives."""
    face_center: Tuple[float, float, float] = DEFAULT_FACE_CENTER
    """Canonical centre of the face square projected to make the encoder crop."""
    face_half_size: float = DEFAULT_FACE_HALF_SIZE
    """Half side of that square, canonical units."""
    encoder_view: str = ""
    """Multi-view captures: the encoder view ("" = camera.json's encoder_view, else the most frontal training view)."""
    train_views: Tuple[str, ...] = ()
    """Multi-view captures: the views that supervise training (empty = all but camera.json's heldout_views)."""
    eval_views: Tuple[str, ...] = ()
    """Multi-view captures: the views of the eval split (empty = every view, held-out ones included)."""


@dataclass
class ParsedSplit:
    """What was read for one split: frames, their params, and the shared camera.

    In a multi-view capture ``frames`` and ``params`` are per moment (``frames`` holds the encoder
    view's files) and ``camera`` is the encoder view's, so tools that want one camera per frame
    (orbits, reenactment) see the capture as the encoder view's video.
    """

    frames: List[FrameFiles]
    params: List[FrameParams]
    camera: CameraSpec
    rig: Optional[CameraRig] = None
    """Multi-view captures: every view's camera, rescaled to the images."""
    moments: List[Dict[str, FrameFiles]] = field(default_factory=list)
    """Multi-view captures: each moment's images by view name (aligned with ``params``)."""


class LatentAvatarDataParser(DataParser):
    config: LatentAvatarDataParserConfig
    includes_time = False

    def __init__(self, config: LatentAvatarDataParserConfig):
        super().__init__(config)
        self._splits: Dict[str, ParsedSplit] = {}

    def parse_split(self, split: Literal["train", "eval"]) -> ParsedSplit:
        """Validate one split folder and read its params (cached: train is read again for eval offsets)."""
        if split in self._splits:
            return self._splits[split]
        root = Path(self.config.data)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder does not exist")
        split_dir = root / split
        if not split_dir.is_dir():
            raise DatasetError(f"{split_dir}: split folder is missing (expected {root}/train and {root}/eval)")
        rig = read_rig(root)
        if rig is not None:
            parsed = self._parse_views(split, split_dir, rig)
        else:
            frames = list_frames(split_dir)
            if not frames:
                raise DatasetError(f"{split_dir}: split is empty (no img_XXXXX.jpg/png frames)")
            params: List[FrameParams] = []
            size = _check_images(frames, params)
            parsed = ParsedSplit(frames, params, read_camera(root, *size))
            camera, outside = parsed.camera, []
            for frame, p in zip(frames, params):
                K = p.intrinsics if p.intrinsics is not None else camera.K
                affine = self._crop_affine(p, K, camera.world_to_camera)
                beyond = self._outside(camera.width, camera.height, K, camera.world_to_camera, p, affine)
                outside.append((frame, beyond))
            self._check_head_in_view(split_dir, outside)
        self._splits[split] = parsed
        return parsed

    def _parse_views(self, split: str, split_dir: Path, rig: CameraRig) -> ParsedSplit:
        """A multi-view split: images grouped by moment, one params file per moment, the encoder view's frames."""
        files = list_view_frames(split_dir, rig.names)
        if not files:
            raise DatasetError(f"{split_dir}: split is empty (no img_XXXXX_<view>.jpg/png frames of the views "
                               f"{', '.join(rig.names)})")
        rig = rig.rescaled(*_check_images(files))
        grouped: Dict[int, Dict[str, FrameFiles]] = {}
        for frame in files:
            grouped.setdefault(frame.index, {})[frame.view] = frame  # type: ignore[index]  # multi-view frames have one
        moments = [grouped[index] for index in sorted(grouped)]
        params = []
        for views in moments:
            p = load_params(next(iter(views.values())).params)
            if p.intrinsics is not None:
                raise DatasetError(f"{next(iter(views.values())).params}: 'intrinsics' is not allowed in a "
                                   f"multi-view capture; each view's camera is in {CAMERA_FILE}")
            params.append(p)
        train_params = params if split == "train" else self.parse_split("train").params
        encoder = self._encoder_view(rig, train_params)
        for views in moments:
            if encoder not in views:
                some = next(iter(views.values()))
                missing = some.image.with_name(f"img_{some.image.stem.split('_')[1]}_{encoder}{some.image.suffix}")
                raise DatasetError(f"{missing}: the encoder view's image is missing for moment {some.index}")
        frames = [views[encoder] for views in moments]
        crop_camera, outside = rig.views[encoder], []
        for views, p in zip(moments, params):
            affine = self._crop_affine(p, crop_camera.K, crop_camera.world_to_camera)
            for name, frame in views.items():
                spec = rig.views[name]
                outside.append((frame, self._outside(spec.width, spec.height, spec.K, spec.world_to_camera, p, affine)))
        self._check_head_in_view(split_dir, outside)
        return ParsedSplit(frames, params, rig.views[encoder], rig, moments)

    def _outside(self, width: int, height: int, K: np.ndarray, world_to_camera: np.ndarray, p: FrameParams,
                 affine: np.ndarray) -> str:
        """What of an image's head lies wholly outside it: its head box (the scene box posed and projected),
        its face crop, both ("head box and face crop"), or nothing ("")."""
        parts = [("head box", _head_outside(K, world_to_camera, p, self.config.scene_box, width, height)),
                 ("face crop", _crop_outside(affine, width, height))]
        return " and ".join(name for name, out in parts if out)

    @staticmethod
    def _check_head_in_view(split_dir: Path, images: List[Tuple[FrameFiles, str]]) -> None:
        """Warn of the images whose head box or face crop lies wholly outside them (``images``: each one's files
        and :meth:`_outside`); refuse the split if that is every image."""
        outside = [(files.image.name, what) for files, what in images if what]
        if not outside:
            return
        if len(outside) == len(images):
            raise DatasetError(f"{split_dir}: in all {len(images)} frames the head box or face crop lies wholly "
                               f"outside the image (e.g. {outside[0][0]}: {outside[0][1]}); check the pose and scale "
                               f"in the params files, and any intrinsics, crop_affine or {CAMERA_FILE}")
        warnings.warn(f"{split_dir}: in {len(outside)} of {len(images)} frames the head box or face crop lies wholly "
                      f"outside the image, so they teach nothing of the head: "
                      f"{_some([f'{name} ({what})' for name, what in outside])}", DatasetWarning)

    def _encoder_view(self, rig: CameraRig, params: List[FrameParams]) -> str:
        """The configured encoder view, else camera.json's, else the view that faces the face most directly."""
        name = self.config.encoder_view or rig.encoder_view
        if name:
            if name not in rig.views:
                raise DatasetError(f"{Path(self.config.data) / CAMERA_FILE}: encoder view '{name}' is not one of "
                                   f"the views ({', '.join(rig.names)})")
            return name
        return most_frontal_view(rig, params)

    def views_of(self, split: Literal["train", "eval"]) -> List[str]:
        """The views an output split is made of (multi-view captures)."""
        rig = self.parse_split(split).rig
        assert rig is not None
        chosen = self.config.train_views if split == "train" else self.config.eval_views
        for name in chosen:
            if name not in rig.views:
                raise DatasetError(f"{Path(self.config.data) / CAMERA_FILE}: {split} view '{name}' is not one of "
                                   f"the views ({', '.join(rig.names)})")
        if chosen:
            return [name for name in rig.names if name in chosen]
        if split == "train":
            return [name for name in rig.names if name not in rig.heldout_views]
        return rig.names

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        folder: Literal["train", "eval"] = "train" if split == "train" else "eval"
        parsed = self.parse_split(folder)
        code_offset = 0 if folder == "train" else len(self.parse_split("train").frames)
        if parsed.rig is not None:
            return self._multiview_outputs(folder, parsed, code_offset)
        camera = parsed.camera
        c2ws, intrinsics, affines = [], [], []
        for p in parsed.params:
            K = p.intrinsics if p.intrinsics is not None else camera.K
            c2ws.append(opencv_to_opengl(canonical_camera_to_world(camera.world_to_camera, p.pose, p.scale)))
            intrinsics.append((K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
            affines.append(self._crop_affine(p, K, camera.world_to_camera))
        codes = range(code_offset, code_offset + len(parsed.frames))
        return self._outputs(parsed, [f.image for f in parsed.frames], [f.mask for f in parsed.frames],
                             c2ws, intrinsics, affines, codes)

    def _multiview_outputs(self, folder: Literal["train", "eval"], parsed: ParsedSplit,
                           code_offset: int) -> DataparserOutputs:
        """One camera per (moment, view); the moment's code index and encoder crop for each of them."""
        assert parsed.rig is not None
        views = self.views_of(folder)
        encoder_camera = parsed.camera
        images, masks, encoder_images, image_views = [], [], [], []
        c2ws, intrinsics, affines, codes = [], [], [], []
        for moment, (files, p) in enumerate(zip(parsed.moments, parsed.params)):
            affine = self._crop_affine(p, encoder_camera.K, encoder_camera.world_to_camera)
            encoder_image = parsed.frames[moment].image
            for name in views:
                if name not in files:
                    continue
                spec = parsed.rig.views[name]
                images.append(files[name].image)
                masks.append(files[name].mask)
                image_views.append(name)
                encoder_images.append(encoder_image)
                c2ws.append(opencv_to_opengl(canonical_camera_to_world(spec.world_to_camera, p.pose, p.scale)))
                intrinsics.append((spec.fx, spec.fy, spec.cx, spec.cy))
                affines.append(affine)
                codes.append(code_offset + moment)
        if not images:
            raise DatasetError(f"{Path(self.config.data) / folder}: no images of the {folder} views "
                               f"({', '.join(views)})")
        return self._outputs(parsed, images, masks, c2ws, intrinsics, affines, codes,
                             encoder_image_filenames=encoder_images, image_views=image_views,
                             encoder_view=parsed.frames[0].view)

    def _crop_affine(self, p: FrameParams, K: np.ndarray, world_to_camera: np.ndarray) -> np.ndarray:
        """The frame's stored crop affine, else the configured face square projected through this camera."""
        if p.crop_affine is not None:
            return p.crop_affine
        return crop_affine_from_pose(K, world_to_camera, p.pose, p.scale, self.config.face_center,
                                     self.config.face_half_size)

    def _outputs(self, parsed: ParsedSplit, images: List[Path], masks: List[Path], c2ws: List[np.ndarray],
                 intrinsics: List[Tuple[float, float, float, float]], affines: List[np.ndarray],
                 codes: Sequence[int], **metadata) -> DataparserOutputs:
        """One camera per image (OpenGL camera-to-canonical, fx/fy/cx/cy, the split's image size) with
        its code index; ``metadata`` is added to what every split carries."""
        n = len(images)
        fx, fy, cx, cy = (torch.tensor(values, dtype=torch.float32)[:, None] for values in zip(*intrinsics))
        cameras = Cameras(
            camera_to_worlds=torch.tensor(np.stack(c2ws), dtype=torch.float32),
            fx=fx, fy=fy, cx=cx, cy=cy,
            width=torch.full((n, 1), parsed.camera.width, dtype=torch.int64),
            height=torch.full((n, 1), parsed.camera.height, dtype=torch.int64),
            camera_type=CameraType.PERSPECTIVE,
            metadata={"code_idx": torch.tensor(list(codes), dtype=torch.int64)[:, None]},
        )
        lo, hi = self.config.scene_box
        return DataparserOutputs(
            image_filenames=images,
            cameras=cameras,
            alpha_color=torch.tensor(self.config.background_color, dtype=torch.float32),
            scene_box=SceneBox(aabb=torch.tensor([lo, hi], dtype=torch.float32)),
            mask_filenames=masks,
            metadata={
                "crop_affines": torch.tensor(np.stack(affines), dtype=torch.float32),
                "background_color": torch.tensor(self.config.background_color, dtype=torch.float32),
                "num_train_frames": len(self.parse_split("train").frames),
                "num_eval_frames": len(self.parse_split("eval").frames),
                "image_code_idx": cameras.metadata["code_idx"][:, 0].clone(),  # type: ignore[index]
                **metadata,
            },
        )


def most_frontal_view(rig: CameraRig, params: List[FrameParams]) -> str:
    """The training view whose camera sits most nearly on the face's axis (canonical +z), on average.

    For each moment the camera centre is brought into canonical head space (``R^T (c - T)``) and
    the cosine between that direction and +z is averaged. Held-out views are not candidates; ties
    go to the first view listed.
    """
    rotations = np.stack([axis_angle_to_matrix(p.pose[:3]) for p in params])
    translations = np.stack([p.pose[3:6] for p in params])
    candidates = [name for name in rig.names if name not in rig.heldout_views]
    best, best_score = candidates[0], -np.inf
    for name in candidates:
        spec = rig.views[name]
        centre = np.linalg.inv(spec.world_to_camera)[:3, 3]
        directions = np.einsum("nji,nj->ni", rotations, centre[None] - translations)
        score = float(np.mean(directions[:, 2] / np.linalg.norm(directions, axis=1).clip(1e-12)))
        if score > best_score + 1e-9:
            best, best_score = name, score
    return best


def _check_images(frames: List[FrameFiles], params: Optional[List[FrameParams]] = None) -> Tuple[int, int]:
    """Every image readable, all of one size, each with a mask of that size; returns (width, height).

    With ``params`` given, each frame's params file is read right after its images (monocular
    datasets: the first bad file in frame order is the one reported).
    """
    size: Optional[Tuple[int, int]] = None
    colour: Optional[str] = None
    empty: List[Path] = []
    for frame in frames:
        if not frame.mask.exists():
            raise DatasetError(f"{frame.mask}: mask file is missing for {frame.image.name}")
        image_size, mode = _image_header(frame.image)
        kind = "grey" if mode in _GREY_MODES else "colour"
        if size is None:
            size, colour = image_size, kind
        elif image_size != size:
            raise DatasetError(f"{frame.image}: image is {image_size[0]}x{image_size[1]} but earlier frames "
                               f"are {size[0]}x{size[1]}; all frames must have one size")
        elif kind != colour:
            raise DatasetError(f"{frame.image}: image is {kind} ({mode}) but earlier frames are {colour}; "
                               "all frames must be of one kind")
        mask_size, _ = _image_header(frame.mask, masks=True)
        if mask_size != image_size:
            raise DatasetError(f"{frame.mask}: mask is {mask_size[0]}x{mask_size[1]} but its image is "
                               f"{image_size[0]}x{image_size[1]}")
        if _matte_peak(frame.mask) < _EMPTY_MASK_PEAK:
            empty.append(frame.mask)
        if params is not None:
            params.append(load_params(frame.params))
    assert size is not None
    if empty:
        folder = frames[0].mask.parent
        if len(empty) == len(frames):
            raise DatasetError(f"{folder}: all {len(frames)} masks are empty (no pixel is even half foreground, e.g. "
                               f"{empty[0].name}); a mask must be white (255) on the head: save a 0/1 mask as 0/255")
        warnings.warn(f"{folder}: {len(empty)} of {len(frames)} masks are empty (no pixel is even half "
                      f"foreground), so those frames teach only background: {_some([m.name for m in empty])}",
                      DatasetWarning)
    return size


_EMPTY_MASK_PEAK = 128
"""A mask whose brightest pixel is below this (of 255) marks nothing as foreground: it is empty."""


def _matte_peak(path: Path) -> int:
    """The brightest value (0-255) of a mask's matte, read as the dataset reads it (alpha, else grey)."""
    try:
        with Image.open(path) as img:
            matte = img.getchannel("A") if img.mode in ("RGBA", "LA") else img.convert("L")
            return int(matte.getextrema()[1])
    except Exception as err:
        raise DatasetError(f"{path}: cannot decode mask ({type(err).__name__}: {err})") from None


def _some(names: List[str], shown: int = 8) -> str:
    """The first ``shown`` names, comma-separated, and how many more."""
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _misses_image(points: np.ndarray, width: int, height: int) -> bool:
    """Whether the box around (N, 2) pixel positions lies wholly outside a width x height image."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return bool(hi[0] <= 0 or hi[1] <= 0 or lo[0] >= width or lo[1] >= height)


def _head_outside(K: np.ndarray, world_to_camera: np.ndarray, p: FrameParams,
                  box: Tuple[Tuple[float, float, float], Tuple[float, float, float]], width: int, height: int) -> bool:
    """Whether the canonical head box, posed and projected, lies wholly outside the image (or behind the camera).

    A box that straddles the camera's plane cannot be bounded on the image; it counts as seen.
    """
    corners = np.array(list(itertools.product(*zip(*box))), dtype=np.float64)
    world = corners @ head_to_world(p.pose, p.scale)[:3, :3].T + p.pose[3:6]
    depth = world @ world_to_camera[2, :3] + world_to_camera[2, 3]
    if np.all(depth <= 0):
        return True
    if np.any(depth <= 1e-9):
        return False
    return _misses_image(project_points(world, world_to_camera, K), width, height)


def _crop_outside(affine: np.ndarray, width: int, height: int) -> bool:
    """Whether the face crop (the unit square under the inverse of the pixel-to-crop affine) misses the image."""
    to_crop = np.vstack([affine, [0.0, 0.0, 1.0]])
    if abs(np.linalg.det(to_crop)) < 1e-12:
        return True  # the crop shows a line or a point
    corners = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]) @ np.linalg.inv(to_crop).T
    return _misses_image(corners[:, :2], width, height)


# 8-bit pixel formats PIL turns into RGB (frames) or a matte (masks) without loss; 16-bit, float and
# CMYK files would be silently clipped or mis-coloured, so they are refused by name.
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "YCbCr")
_GREY_MODES = ("L", "LA")


def _image_header(path: Path, masks: bool = False) -> Tuple[Tuple[int, int], str]:
    """((width, height), mode) from the header; an unreadable or unsupported file is a one-line error naming it."""
    try:
        with Image.open(path) as img:
            size, mode = img.size, img.mode
    except Exception as err:
        raise DatasetError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None
    if mode not in _COLOUR_MODES + _GREY_MODES + (("1",) if masks else ()):
        raise DatasetError(f"{path}: pixel format {mode} is not supported; save {'masks' if masks else 'frames'} "
                           "as 8-bit " + ("grey or RGB(A)" if masks else "RGB"))
    return size, mode


latentavatar_dataparser = DataParserSpecification(
    config=LatentAvatarDataParserConfig(),
    description="LatentAvatar dataset layout: train/eval folders of img_, mask_ and params_ files.",
)
