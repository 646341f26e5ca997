"""Dataparser for the LatentAvatar layout: head pose folded into per-frame cameras.

Every problem with the input (missing mask or params, unreadable image, wrong keys or shapes,
mixed image sizes, empty split, missing folder) is found here, before training starts, and
raised as one :class:`DatasetError` line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from PIL import Image

from latentavatar_ns.data.face_crop import DEFAULT_FACE_CENTER, DEFAULT_FACE_HALF_SIZE, crop_affine_from_pose
from latentavatar_ns.data.format import (
    OFFICIAL_BOX,
    CameraSpec,
    DatasetError,
    FrameFiles,
    FrameParams,
    canonical_camera_to_world,
    list_frames,
    load_params,
    opencv_to_opengl,
    read_camera,
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


@dataclass
class ParsedSplit:
    """What was read for one split: frames, their params, and the shared camera."""

    frames: List[FrameFiles]
    params: List[FrameParams]
    camera: CameraSpec


class LatentAvatarDataParser(DataParser):
    config: LatentAvatarDataParserConfig
    includes_time = False

    def __init__(self, config: LatentAvatarDataParserConfig):
        super().__init__(config)
        self._splits = {}

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
        frames = list_frames(split_dir)
        if not frames:
            raise DatasetError(f"{split_dir}: split is empty (no img_XXXXX.jpg/png frames)")
        size: Optional[Tuple[int, int]] = None
        params = []
        for frame in frames:
            if not frame.mask.exists():
                raise DatasetError(f"{frame.mask}: mask file is missing for {frame.image.name}")
            image_size = _image_size(frame.image)
            if size is None:
                size = image_size
            elif image_size != size:
                raise DatasetError(f"{frame.image}: image is {image_size[0]}x{image_size[1]} but earlier frames "
                                   f"are {size[0]}x{size[1]}; all frames must have one size")
            mask_size = _image_size(frame.mask)
            if mask_size != image_size:
                raise DatasetError(f"{frame.mask}: mask is {mask_size[0]}x{mask_size[1]} but its image is "
                                   f"{image_size[0]}x{image_size[1]}")
            params.append(load_params(frame.params))
        assert size is not None
        parsed = ParsedSplit(frames, params, read_camera(root, *size))
        self._splits[split] = parsed
        return parsed

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        folder = "train" if split == "train" else "eval"
        parsed = self.parse_split(folder)
        code_offset = 0 if folder == "train" else len(self.parse_split("train").frames)
        camera = parsed.camera
        c2ws, fx, fy, cx, cy, affines = [], [], [], [], [], []
        for frame, p in zip(parsed.frames, parsed.params):
            K = p.intrinsics if p.intrinsics is not None else camera.K
            c2ws.append(opencv_to_opengl(canonical_camera_to_world(camera.world_to_camera, p.pose, p.scale)))
            fx.append(K[0, 0]), fy.append(K[1, 1]), cx.append(K[0, 2]), cy.append(K[1, 2])
            affine = p.crop_affine
            if affine is None:
                affine = crop_affine_from_pose(K, camera.world_to_camera, p.pose, p.scale,
                                               self.config.face_center, self.config.face_half_size)
            affines.append(affine)
        n = len(parsed.frames)
        column = lambda values: torch.tensor(values, dtype=torch.float32)[:, None]  # noqa: E731
        cameras = Cameras(
            camera_to_worlds=torch.tensor(np.stack(c2ws), dtype=torch.float32),
            fx=column(fx), fy=column(fy), cx=column(cx), cy=column(cy),
            width=torch.full((n, 1), camera.width, dtype=torch.int64),
            height=torch.full((n, 1), camera.height, dtype=torch.int64),
            camera_type=CameraType.PERSPECTIVE,
            metadata={"code_idx": torch.arange(code_offset, code_offset + n, dtype=torch.int64)[:, None]},
        )
        lo, hi = self.config.scene_box
        return DataparserOutputs(
            image_filenames=[f.image for f in parsed.frames],
            cameras=cameras,
            alpha_color=torch.tensor(self.config.background_color, dtype=torch.float32),
            scene_box=SceneBox(aabb=torch.tensor([lo, hi], dtype=torch.float32)),
            mask_filenames=[f.mask for f in parsed.frames],
            metadata={
                "crop_affines": torch.tensor(np.stack(affines), dtype=torch.float32),
                "background_color": torch.tensor(self.config.background_color, dtype=torch.float32),
                "num_train_frames": len(self.parse_split("train").frames),
                "num_eval_frames": len(self.parse_split("eval").frames),
            },
        )


def _image_size(path: Path) -> Tuple[int, int]:
    """(width, height) from the header; an unreadable file is a one-line error naming it."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception as err:
        raise DatasetError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None


latentavatar_dataparser = DataParserSpecification(
    config=LatentAvatarDataParserConfig(),
    description="LatentAvatar dataset layout: train/eval folders of img_, mask_ and params_ files.",
)
