"""The dataset format's pose and camera conventions, in numpy.

A canonical head point ``x`` appears in the world at ``R @ (S * x) + T`` (``pose`` holds R as an
axis-angle vector and T; ``scale`` is S). Cameras are OpenCV (x right, y down, looking down +z);
nerfstudio's look down -z with y up. Every tool that reads or writes datasets shares these.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np


def axis_angle_to_matrix(rotvec: Union[np.ndarray, Sequence[float]]) -> np.ndarray:
    """Rodrigues' formula for one (3,) axis-angle vector."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * kx @ kx


def matrix_to_axis_angle(rot: np.ndarray) -> np.ndarray:
    """Inverse of :func:`axis_angle_to_matrix` (angles in [0, pi))."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    return axis / (2.0 * np.sin(angle)) * angle


def head_to_world(pose: np.ndarray, scale: float) -> np.ndarray:
    """4x4 similarity taking canonical head points to the world: x -> R (S x) + T."""
    m = np.eye(4)
    m[:3, :3] = axis_angle_to_matrix(pose[:3]) * scale
    m[:3, 3] = pose[3:6]
    return m


def canonical_camera_to_world(world_to_camera: np.ndarray, pose: np.ndarray, scale: float) -> np.ndarray:
    """Fold a frame's head pose into its camera: the 3x4 camera-to-canonical matrix (OpenCV axes).

    A world point x_w is canonical R^T (x_w - T) / S, so the camera centre c moves to R^T (c - T) / S
    and its axes rotate by R^T. Lengths shrink by S, which the caller applies to near/far.
    """
    rot = axis_angle_to_matrix(pose[:3])
    c2w = np.linalg.inv(world_to_camera)
    out = np.zeros((3, 4))
    out[:, :3] = rot.T @ c2w[:3, :3]
    out[:, 3] = rot.T @ (c2w[:3, 3] - pose[3:6]) / scale
    return out


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """nerfstudio cameras look down -z with y up: flip the y and z axes of an OpenCV pose."""
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[:3, 1:3] *= -1.0
    return out


def project_points(points_world: np.ndarray, world_to_camera: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) world points to (N, 2) pixel coordinates (pixel centres at +0.5)."""
    cam = points_world @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:3]
