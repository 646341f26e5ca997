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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from latentavatar_ns.data.checks import check_head_in_view, check_images, crop_outside, head_outside
from latentavatar_ns.data.face_crop import DEFAULT_FACE_CENTER, DEFAULT_FACE_HALF_SIZE, crop_affine_from_pose
from latentavatar_ns.data.format import (
    CAMERA_FILE,
    OFFICIAL_BOX,
    CameraRig,
    CameraSpec,
    DatasetError,
    FrameFiles,
    FrameParams,
    list_frames,
    list_view_frames,
    load_params,
    read_camera,
    read_rig,
)
from latentavatar_ns.data.poses import axis_angle_to_matrix, canonical_camera_to_world, opencv_to_opengl


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
            size = check_images(frames, params)
            parsed = ParsedSplit(frames, params, read_camera(root, *size))
            camera, outside = parsed.camera, []
            for frame, p in zip(frames, params):
                K = p.intrinsics if p.intrinsics is not None else camera.K
                affine = self._crop_affine(p, K, camera.world_to_camera)
                beyond = self._outside(camera.width, camera.height, K, camera.world_to_camera, p, affine)
                outside.append((frame, beyond))
            check_head_in_view(split_dir, outside)
        self._splits[split] = parsed
        return parsed

    def _parse_views(self, split: str, split_dir: Path, rig: CameraRig) -> ParsedSplit:
        """A multi-view split: images grouped by moment, one params file per moment, the encoder view's frames."""
        files = list_view_frames(split_dir, rig.names)
        if not files:
            raise DatasetError(f"{split_dir}: split is empty (no img_XXXXX_<view>.jpg/png frames of the views "
                               f"{', '.join(rig.names)})")
        rig = rig.rescaled(*check_images(files))
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
        check_head_in_view(split_dir, outside)
        return ParsedSplit(frames, params, rig.views[encoder], rig, moments)

    def _outside(self, width: int, height: int, K: np.ndarray, world_to_camera: np.ndarray, p: FrameParams,
                 affine: np.ndarray) -> str:
        """What of an image's head lies wholly outside it: its head box (the scene box posed and projected),
        its face crop, both ("head box and face crop"), or nothing ("")."""
        parts = [("head box", head_outside(K, world_to_camera, p, self.config.scene_box, width, height)),
                 ("face crop", crop_outside(affine, width, height))]
        return " and ".join(name for name, out in parts if out)

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


latentavatar_dataparser = DataParserSpecification(
    config=LatentAvatarDataParserConfig(),
    description="LatentAvatar dataset layout: train/eval folders of img_, mask_ and params_ files.",
)
