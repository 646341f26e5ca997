"""Checks of a split's files before training: every image and mask readable and consistent, the masks not
all empty, the head in view. A problem that stops training is one :class:`DatasetError` line naming the file
or folder; frames that would train but teach nothing of the head are named in one :class:`DatasetWarning`.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from latentavatar_ns.data.format import CAMERA_FILE, DatasetError, DatasetWarning, FrameFiles, FrameParams, load_params
from latentavatar_ns.data.poses import head_to_world, project_points


def check_images(frames: List[FrameFiles], params: Optional[List[FrameParams]] = None) -> Tuple[int, int]:
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


def head_outside(K: np.ndarray, world_to_camera: np.ndarray, p: FrameParams,
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


def crop_outside(affine: np.ndarray, width: int, height: int) -> bool:
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


def check_head_in_view(split_dir: Path, images: List[Tuple[FrameFiles, str]]) -> None:
    """Warn of the images whose head box or face crop lies wholly outside them (``images``: each one's files
    and the dataparser's ``_outside``); refuse the split if that is every image."""
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
