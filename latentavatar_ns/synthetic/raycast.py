"""Rendering a synthetic frame: camera rays into the head's canonical space, antialiased edges, backdrops.

A frame is :func:`render_head` of one identity, expression, head pose and camera, composited on a
:func:`make_background`; :func:`canonical_to_pixel` projects canonical points the same way.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from latentavatar_ns.data.format import CameraSpec
from latentavatar_ns.data.poses import axis_angle_to_matrix, head_to_world, project_points
from latentavatar_ns.synthetic.head import Expression, HeadIdentity
from latentavatar_ns.synthetic.primitives import _box_corners, _normalize, _Rays
from latentavatar_ns.synthetic.scene import _Scene


def make_background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth two-colour gradient with faint texture; never white, so the mask matters."""
    rng = np.random.default_rng([seed, 4099])
    c0, c1 = rng.uniform(0.12, 0.7, 3), rng.uniform(0.12, 0.7, 3)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = u / max(width - 1, 1), v / max(height - 1, 1)
    g = np.clip(0.5 + (u - 0.5) * np.cos(angle) + (v - 0.5) * np.sin(angle), 0.0, 1.0)
    bg = c0 * (1.0 - g[..., None]) + c1 * g[..., None]
    fu, fv, phase = rng.uniform(6.0, 14.0), rng.uniform(6.0, 14.0), rng.uniform(0.0, 2.0 * np.pi, 2)
    texture = 0.02 * np.sin(2.0 * np.pi * fu * u + phase[0]) * np.sin(2.0 * np.pi * fv * v + phase[1])
    return np.clip(bg + texture[..., None], 0.0, 1.0).astype(np.float32)



class _Caster:
    """Casts pixel rays of one camera into the canonical space of one head pose."""

    def __init__(self, camera: CameraSpec, pose: np.ndarray, scale: float):
        if not scale > 0:
            raise ValueError(f"head scale must be positive, got {scale}")
        self.camera, self.pose, self.scale = camera, pose, float(scale)
        rot = axis_angle_to_matrix(pose[:3])
        c2w = np.linalg.inv(np.asarray(camera.world_to_camera, dtype=np.float64))
        # A world ray (c, d) is the canonical ray (R^T (c - T) / S, R^T d): distances shrink by S.
        self.to_canon = rot.T @ c2w[:3, :3]
        self.origin = rot.T @ (c2w[:3, 3] - pose[3:6]) / self.scale

    def pixel_rect(self, lo: np.ndarray, hi: np.ndarray) -> Tuple[int, int, int, int]:
        """Pixel rows and columns (v0, v1, u0, u1) that can see the canonical box [lo, hi]."""
        corners = _box_corners(lo, hi)
        world = corners @ head_to_world(self.pose, self.scale)[:3, :3].T + self.pose[3:6]
        w2c = np.asarray(self.camera.world_to_camera, dtype=np.float64)
        w, h = int(self.camera.width), int(self.camera.height)
        if np.any(world @ w2c[2, :3] + w2c[2, 3] <= 0):  # box reaches behind the camera: no projection bound
            return 0, h, 0, w
        uv = project_points(world, w2c, self.camera.K)
        u0, v0 = (int(x) - 1 for x in np.floor(uv.min(axis=0)))
        u1, v1 = (int(x) + 1 for x in np.ceil(uv.max(axis=0)))
        return max(v0, 0), min(v1, h), max(u0, 0), min(u1, w)

    def cast(self, scene: _Scene, u: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Colour (N, 3) and coverage (N,) at pixel coordinates (u, v) (pixel centres at +0.5)."""
        cam = self.camera
        d = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=1) @ self.to_canon.T
        d = _normalize(d).astype(np.float32)
        rgb, covered = scene.trace(_Rays(self.origin, d[:, 0].copy(), d[:, 1].copy(), d[:, 2].copy()))
        return rgb, covered.astype(np.float64)


def render_head(
    identity: HeadIdentity,
    expression: Expression,
    pose: np.ndarray,
    scale: float,
    camera: CameraSpec,
    background: Optional[np.ndarray] = None,
    supersample: int = 3,
    detail: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """Ray-cast one frame: (rgb HxWx3 composited on ``background``, mask HxW), float32 in [0, 1].

    ``pose`` is axis-angle (3) then translation (3) and ``scale`` is S, as in params files.
    ``background`` defaults to :func:`make_background` with seed 0. Pixels on an edge (colour or
    coverage differs from a neighbour) are re-cast with ``supersample`` x ``supersample`` rays, so
    edges are antialiased and the mask is fractional there; 1 turns that off. ``detail`` paints the
    detailed head (texture, crisp eyes, lips and teeth, highlights; see :mod:`.scene`).
    """
    h, w = int(camera.height), int(camera.width)
    if background is None:
        background = make_background(w, h)
    background = np.asarray(background, dtype=np.float64).reshape(h, w, 3)
    pose = np.asarray(pose, dtype=np.float64).reshape(6)
    scene = _Scene(identity, expression, detail)
    caster = _Caster(camera, pose, scale)
    rgb = background.copy()
    alpha = np.zeros((h, w))
    v0, v1, u0, u1 = caster.pixel_rect(*scene.bounds())
    if v1 <= v0 or u1 <= u0:
        return rgb.astype(np.float32), alpha.astype(np.float32)
    vv, uu = np.mgrid[v0:v1, u0:u1].astype(np.float64) + 0.5
    col, cov = caster.cast(scene, uu.ravel(), vv.ravel())
    col, cov = col.reshape(*uu.shape, 3), cov.reshape(uu.shape)
    patch = col + (1.0 - cov[..., None]) * background[v0:v1, u0:u1]
    if supersample > 1:
        # Re-cast the pixels that differ from a neighbour, averaging a grid of sub-pixel rays.
        edge = np.zeros(uu.shape, dtype=bool)
        step_v = np.zeros((uu.shape[0] - 1, uu.shape[1]), dtype=bool)
        step_u = np.zeros((uu.shape[0], uu.shape[1] - 1), dtype=bool)
        # Texture makes neighbours differ a little everywhere: a detailed head re-casts only colour
        # steps above its fine-texture contrast (feature and silhouette edges), at the smooth head's cost.
        colour_step = 0.06 if detail else 0.04
        for channel, step in ((patch[..., 0], colour_step), (patch[..., 1], colour_step),
                              (patch[..., 2], colour_step), (cov, 0.04)):
            step_v |= np.abs(np.diff(channel, axis=0)) > step
            step_u |= np.abs(np.diff(channel, axis=1)) > step
        edge[1:] |= step_v
        edge[:-1] |= step_v
        edge[:, 1:] |= step_u
        edge[:, :-1] |= step_u
        rows, cols = np.nonzero(edge)
        if rows.size:
            ss = int(supersample)
            offsets = (np.arange(ss) + 0.5) / ss
            du, dv = (a.ravel() for a in np.meshgrid(offsets, offsets))
            us = (cols + u0)[:, None] + du[None, :]
            vs = (rows + v0)[:, None] + dv[None, :]
            sub_col, sub_cov = caster.cast(scene, us.ravel(), vs.ravel())
            sub_col = sub_col.reshape(rows.size, ss * ss, 3).mean(axis=1)
            sub_cov = sub_cov.reshape(rows.size, ss * ss).mean(axis=1)
            cov[rows, cols] = sub_cov
            patch[rows, cols] = sub_col + (1.0 - sub_cov[:, None]) * background[rows + v0, cols + u0]
    rgb[v0:v1, u0:u1] = patch
    alpha[v0:v1, u0:u1] = cov
    return np.clip(rgb, 0.0, 1.0).astype(np.float32), np.clip(alpha, 0.0, 1.0).astype(np.float32)


def canonical_to_pixel(points: np.ndarray, pose: np.ndarray, scale: float, camera: CameraSpec) -> np.ndarray:
    """(N, 3) canonical head points to (N, 2) pixel coordinates, through ``format``'s conventions."""
    m = head_to_world(np.asarray(pose, dtype=np.float64).reshape(6), scale)
    world = np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]
    return project_points(world, np.asarray(camera.world_to_camera, dtype=np.float64), camera.K)
