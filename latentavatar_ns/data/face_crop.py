"""The expression encoder's input: a face crop that follows the head.

The crop is a square of canonical head space facing the camera (the face region), projected
through each frame's camera and head pose, so it moves with the head without any landmark
detection at training time. A dataset may instead store its own 2x3 ``crop_affine`` (from
landmarks). Outside an inscribed ellipse the crop is black: the encoder sees the face only.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from latentavatar_ns.data.poses import head_to_world, project_points

DEFAULT_FACE_CENTER = (0.0, -0.25, 0.85)
"""Canonical centre of the face square: between the eyes and the chin, on the face surface."""
DEFAULT_FACE_HALF_SIZE = 1.0
"""Half the side of the face square in canonical units: brows to chin."""


def crop_affine_from_pose(
    K: np.ndarray,
    world_to_camera: np.ndarray,
    pose: np.ndarray,
    scale: float,
    center: Sequence[float] = DEFAULT_FACE_CENTER,
    half_size: float = DEFAULT_FACE_HALF_SIZE,
) -> np.ndarray:
    """(2, 3) affine taking image pixels to normalised crop coordinates in [0, 1]^2."""
    c = np.asarray(center, dtype=np.float64)
    corners = np.stack([c + [-half_size, half_size, 0.0], c + [half_size, half_size, 0.0],
                        c + [-half_size, -half_size, 0.0]])  # top-left, top-right, bottom-left
    world = corners @ head_to_world(pose, scale)[:3, :3].T + np.asarray(pose[3:6])
    pixels = project_points(world, world_to_camera, K)
    unit = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float32)
    return cv2.getAffineTransform(pixels.astype(np.float32), unit).astype(np.float64)


def ellipse_mask(size: int) -> np.ndarray:
    """(size, size) float mask, 1 inside the ellipse inscribed in the crop."""
    t = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    return ((t[None, :] ** 2 + t[:, None] ** 2) <= 1.0).astype(np.float32)


def extract_crop(image: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """Warp an (H, W, 3) float image into the (size, size, 3) face crop, black outside the face.

    When the crop shrinks the face by more than 2x, the image is first area-downsampled so the
    bilinear warp does not alias.
    """
    image = image.astype(np.float32)
    to_crop = np.asarray(affine, dtype=np.float64) * size
    shrink = int(np.sqrt(1.0 / max(abs(np.linalg.det(to_crop[:, :2])), 1e-12)))
    if shrink >= 2:
        h, w = image.shape[:2]
        image = cv2.resize(image, (max(w // shrink, 1), max(h // shrink, 1)), interpolation=cv2.INTER_AREA)
        to_crop = to_crop @ np.diag([w / image.shape[1], h / image.shape[0], 1.0])
    crop = cv2.warpAffine(image, to_crop, (size, size), flags=cv2.INTER_LINEAR,  # type: ignore[call-overload]
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop * ellipse_mask(size)[..., None]
