"""Head pose, temporal smoothing, the square crop and the intrinsics it implies.

Conventions. The source camera is a pinhole with square pixels, principal point at the frame
centre and a focal length from an assumed field of view (``--fov-degrees``, of the longer side).
Head pose is fitted per frame by PnP of MediaPipe's canonical face template (centimetres) to the
detected rigid landmarks. The dataset then states it in the format's terms:

* canonical head space = the template scaled and shifted: ``x = CM_TO_CANONICAL * p + CANONICAL_OFFSET``
  (1 canonical unit = 8 cm), so a real head with hair and some neck fills the official box;
* world units are metres; the head scale ``S`` is the metric size of a canonical unit (0.08 m), the
  same in every frame, because under perspective a head that looks bigger is a head that is closer;
* the fixed virtual camera (``camera.json``) is the source camera with the official axes
  (world y up, camera looking down -z), placed so the world origin is at the head's mean depth
  on its optical axis. Each frame's square crop changes only the intrinsics, which each params
  file records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from jaxtyping import Float

from latentavatar_ns.data.format import OFFICIAL_BOX, OFFICIAL_W2C
from latentavatar_ns.data.poses import (
    axis_angle_to_matrix,
    canonical_camera_to_world,
    head_to_world,
    matrix_to_axis_angle,
    project_points,
)

CM_TO_CANONICAL = 0.125
"""Canonical units per centimetre of the template (1 unit = 8 cm: the 3 x 3.6 x 3 box is 24 x 29 x 24 cm)."""
CANONICAL_OFFSET = np.array([0.0, -0.15, 0.05])
"""Where the template's origin (the head's centre behind the eyes) sits in canonical space: the nose
tip at z = 1.0 and the top of the hair near y = 1.75 stay inside the box, which leaves 4 cm of neck."""
HEAD_SCALE_M = 0.01 / CM_TO_CANONICAL
"""S: metres per canonical unit."""


def source_intrinsics(width: int, height: int, fov_degrees: float) -> np.ndarray:
    """K of the source frames: principal point at the centre, focal from the longer side's field of view."""
    f = 0.5 * max(width, height) / np.tan(np.radians(fov_degrees) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def template_to_canonical(points_cm: np.ndarray) -> np.ndarray:
    return np.asarray(points_cm) * CM_TO_CANONICAL + CANONICAL_OFFSET


def fit_head_pose(
    template_cm: Float[np.ndarray, "N 3"], landmarks: Float[np.ndarray, "N 2"], K: np.ndarray
) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(rotation 3x3, translation cm) of the template in the OpenCV source camera, or None if PnP fails.

    SQPnP finds the global optimum; Levenberg-Marquardt then polishes it on the reprojection error.
    """
    import cv2

    obj = np.ascontiguousarray(template_cm, dtype=np.float64)
    img = np.ascontiguousarray(landmarks, dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)  # type: ignore[call-overload]
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, None, rvec, tvec)  # type: ignore[call-overload]
    rot = cv2.Rodrigues(rvec)[0]
    t = tvec.reshape(3)
    if not (np.all(np.isfinite(rot)) and np.isfinite(t).all() and t[2] > 0):
        return None
    return rot, t


def head_origin_in_camera(rot: np.ndarray, t_cm: np.ndarray) -> np.ndarray:
    """Camera coordinates (cm) of the canonical origin for a template pose."""
    return t_cm - rot @ (CANONICAL_OFFSET / CM_TO_CANONICAL)


def virtual_world_to_camera(mean_depth_m: float) -> np.ndarray:
    """The fixed virtual camera: official axes, the world origin ``mean_depth_m`` in front of it."""
    w2c = OFFICIAL_W2C.copy()
    w2c[2, 3] = mean_depth_m
    return w2c


def dataset_pose(rot: np.ndarray, t_cm: np.ndarray, world_to_camera: np.ndarray) -> np.ndarray:
    """(6,) axis-angle + translation (metres) such that R (S x) + T, seen by ``world_to_camera``,
    is where the template pose puts canonical point x."""
    r_w2c, t_w2c = world_to_camera[:3, :3], world_to_camera[:3, 3]
    rotation = r_w2c.T @ rot
    translation = r_w2c.T @ (head_origin_in_camera(rot, t_cm) * 0.01 - t_w2c)
    return np.concatenate([matrix_to_axis_angle(rotation), translation])


# ----------------------------------------------------------------------------------------------
# Smoothing


def _quaternions(rotvecs: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    q = Rotation.from_rotvec(rotvecs).as_quat()
    for i in range(1, len(q)):  # one hemisphere, so averaging neighbours is meaningful
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


def gaussian_smooth(values: np.ndarray, times: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted average over time (frames), tolerant of gaps left by skipped frames."""
    values = np.asarray(values, dtype=np.float64)
    if sigma <= 0 or len(values) < 2:
        return values.copy()
    dt = np.asarray(times, dtype=np.float64)[:, None] - np.asarray(times, dtype=np.float64)[None, :]
    w = np.exp(-0.5 * (dt / sigma) ** 2)
    w[np.abs(dt) > 3 * sigma] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return w @ values.reshape(len(values), -1)


def smooth_poses(poses: np.ndarray, times: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth (N, 6) axis-angle + translation poses: rotations as quaternions, then renormalised."""
    from scipy.spatial.transform import Rotation

    if sigma <= 0 or len(poses) < 2:
        return poses.copy()
    q = gaussian_smooth(_quaternions(poses[:, :3]), times, sigma)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = np.empty_like(poses)
    out[:, :3] = Rotation.from_quat(q).as_rotvec()
    out[:, 3:] = gaussian_smooth(poses[:, 3:], times, sigma)
    return out


# ----------------------------------------------------------------------------------------------
# Crop


@dataclass
class Crop:
    """A square of the source frame, in continuous pixel coordinates, resized to ``resolution``."""

    x0: float
    y0: float
    side: float
    resolution: int

    @property
    def zoom(self) -> float:
        return self.resolution / self.side

    def intrinsics(self, K_source: np.ndarray) -> np.ndarray:
        """K of the cropped, resized frame."""
        s = self.zoom
        K = K_source.copy()
        K[0, 0] *= s
        K[1, 1] *= s
        K[0, 2] = s * (K_source[0, 2] - self.x0)
        K[1, 2] = s * (K_source[1, 2] - self.y0)
        return K

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points)[:, :2] - [self.x0, self.y0]) * self.zoom

    def warp(self, image: np.ndarray, interpolation: Optional[int] = None) -> np.ndarray:
        """The crop of an (H, W[, C]) image; outside the frame is 0. Shrinking area-averages first."""
        import cv2

        image = np.asarray(image)
        s, x0, y0 = self.zoom, self.x0, self.y0
        sx = sy = 1.0
        if s < 0.5:  # area-downsample by an integer factor so the bilinear warp does not alias
            k = int(1.0 / s)
            h, w = image.shape[:2]
            small = cv2.resize(image, (max(w // k, 1), max(h // k, 1)), interpolation=cv2.INTER_AREA)
            sx, sy = small.shape[1] / w, small.shape[0] / h
            image = small
        # continuous coordinates u' = s (u - x0); cv2 puts pixel centres at integers (u - 0.5).
        # With the image first shrunk by (sx, sy): u' = (s / sx) u_small - s x0.
        m = np.array([[s / sx, 0.0, 0.5 * s / sx - s * x0 - 0.5],
                      [0.0, s / sy, 0.5 * s / sy - s * y0 - 0.5]])
        flags = cv2.INTER_LINEAR if interpolation is None else interpolation
        return cv2.warpAffine(image, m, (self.resolution, self.resolution),  # type: ignore[call-overload]
                              flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def inside_fraction(self, width: int, height: int) -> float:
        """Share of the crop that lies inside the source frame."""
        ix = max(0.0, min(self.x0 + self.side, width) - max(self.x0, 0.0))
        iy = max(0.0, min(self.y0 + self.side, height) - max(self.y0, 0.0))
        return ix * iy / self.side**2


def head_crop(pose: np.ndarray, scale: float, world_to_camera: np.ndarray, K_source: np.ndarray,
              resolution: int, crop_scale: float) -> Crop:
    """The square around the canonical box's projection (``crop_scale`` times its larger side).

    The box is everything the avatar's field can hold, so with ``crop_scale >= 1`` the whole head is
    in view; projecting its corners (rather than sizing from its centre's depth) keeps that true
    at phone distances, where the face is much nearer the camera than the back of the head.
    """
    lo, hi = np.asarray(OFFICIAL_BOX[0]), np.asarray(OFFICIAL_BOX[1])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    uv = project_canonical(corners, pose, scale, world_to_camera, K_source)
    (u0, v0), (u1, v1) = uv.min(0), uv.max(0)
    side = crop_scale * max(u1 - u0, v1 - v0)
    return Crop((u0 + u1 - side) / 2.0, (v0 + v1 - side) / 2.0, side, resolution)


def box_hit_mask(K: np.ndarray, world_to_camera: np.ndarray, pose: np.ndarray, scale: float,
                 width: int, height: int, box: Sequence[Sequence[float]] = OFFICIAL_BOX) -> np.ndarray:
    """(H, W) bool: pixel rays (through pixel centres) that pass through the canonical box."""
    c2c = canonical_camera_to_world(world_to_camera, pose, scale)  # camera -> canonical (OpenCV axes)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    dirs_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    dirs = dirs_cam @ c2c[:, :3].T
    origin = c2c[:, 3]
    lo, hi = np.asarray(box[0], dtype=np.float64), np.asarray(box[1], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t0, t1 = (lo - origin) * inv, (hi - origin) * inv
    near = np.nanmax(np.minimum(t0, t1), axis=-1)
    far = np.nanmin(np.maximum(t0, t1), axis=-1)
    return (far >= np.maximum(near, 0.0))


def face_square(landmarks: Float[np.ndarray, "N 2"], left_eye: int, right_eye: int,
                margin: float) -> np.ndarray:
    """(centre x, centre y, half side, roll) of the square around the face, aligned with the eye line."""
    d = landmarks[right_eye] - landmarks[left_eye]
    roll = float(np.arctan2(d[1], d[0]))
    c, s = np.cos(roll), np.sin(roll)
    to_face = np.array([[c, s], [-s, c]])  # rotates the eye line onto the x axis
    aligned = landmarks @ to_face.T
    lo, hi = aligned.min(0), aligned.max(0)
    centre = to_face.T @ ((lo + hi) / 2.0)
    half = 0.5 * margin * float(np.max(hi - lo))
    return np.array([centre[0], centre[1], half, roll])


def face_square_affine(square: np.ndarray) -> np.ndarray:
    """(2, 3) map from pixels to the face square's normalised coordinates [0, 1]^2 (the crop_affine key)."""
    cx, cy, half, roll = square
    c, s = np.cos(roll), np.sin(roll)
    lin = np.array([[c, s], [-s, c]]) / (2.0 * half)
    return np.concatenate([lin, (np.array([0.5, 0.5]) - lin @ [cx, cy])[:, None]], axis=1)


def project_canonical(points: np.ndarray, pose: np.ndarray, scale: float, world_to_camera: np.ndarray,
                      K: np.ndarray) -> np.ndarray:
    """Pixels of canonical points under a dataset pose, camera and intrinsics (the format's own maths)."""
    m = head_to_world(pose, scale)
    return project_points(points @ m[:3, :3].T + m[:3, 3], world_to_camera, K)


def rotation_angle_deg(pose_a: np.ndarray, pose_b: np.ndarray) -> float:
    """Angle between two poses' rotations."""
    rel = axis_angle_to_matrix(pose_a[:3]).T @ axis_angle_to_matrix(pose_b[:3])
    return float(np.degrees(np.arccos(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0))))
