"""Cameras for novel views of a trained avatar: a frontal camera and orbits around the head."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from latentavatar_ns.data.dataparser import LatentAvatarDataParser
from latentavatar_ns.data.poses import axis_angle_to_matrix, canonical_camera_to_world, opencv_to_opengl


def frontal_camera(parser: LatentAvatarDataParser) -> Cameras:
    """The dataset's camera looking at an unrotated head of the training frames' mean size and position."""
    parsed = parser.parse_split("train")
    scale = float(np.mean([p.scale for p in parsed.params]))
    pose = np.concatenate([np.zeros(3), np.mean([p.pose[3:] for p in parsed.params], axis=0)])
    c2w = opencv_to_opengl(canonical_camera_to_world(parsed.camera.world_to_camera, pose, scale))
    cam = parsed.camera
    return Cameras(camera_to_worlds=torch.tensor(c2w, dtype=torch.float32)[None], fx=cam.fx, fy=cam.fy, cx=cam.cx,
                   cy=cam.cy, width=cam.width, height=cam.height, camera_type=CameraType.PERSPECTIVE)


def orbit(camera: Cameras, yaws_deg: Sequence[float] | np.ndarray,
          pitches_deg: Sequence[float] | np.ndarray | None = None) -> Cameras:
    """Copies of one camera rotated about the canonical origin (the head), one per yaw/pitch."""
    pitches_deg = [0.0] * len(yaws_deg) if pitches_deg is None else pitches_deg
    base = camera.camera_to_worlds.reshape(-1, 3, 4)[0].double().numpy()
    c2ws = []
    for yaw, pitch in zip(yaws_deg, pitches_deg):
        rot = axis_angle_to_matrix(np.array([0.0, np.radians(yaw), 0.0])) @ axis_angle_to_matrix(
            np.array([np.radians(pitch), 0.0, 0.0]))
        c2ws.append(np.concatenate([rot @ base[:, :3], (rot @ base[:, 3])[:, None]], axis=1))
    n = len(c2ws)
    row = lambda t: t.reshape(-1)[:1].expand(n)[:, None].clone()  # noqa: E731
    return Cameras(camera_to_worlds=torch.tensor(np.stack(c2ws), dtype=torch.float32), fx=row(camera.fx),
                   fy=row(camera.fy), cx=row(camera.cx), cy=row(camera.cy), width=row(camera.width),
                   height=row(camera.height), camera_type=CameraType.PERSPECTIVE)


def with_codes(cameras: Cameras, code_indices: Sequence[int] | np.ndarray) -> Cameras:
    """Attach the stored expression each camera should render (index into the model's code table)."""
    cameras.metadata = {"code_idx": torch.as_tensor(list(code_indices), dtype=torch.long)[:, None]}
    return cameras
