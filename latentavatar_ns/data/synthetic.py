"""Procedural 3D heads rendered by analytic ray casting, for datasets with exact ground truth.

Because a head's expression is a handful of parameters, we can render "avatar A making actor B's
expression" exactly (``make_dataset(..., drive_from=B)``), which gives cross-identity reenactment
a real error figure. Every colour is a function of the canonical surface point and the light is
fixed to the head, so each frame is a view of one static canonical radiance field per expression:
what the avatar models, with no lighting changes it could not learn.

Canonical head space is the official one: x right, y up, z toward the camera (the face looks
along +z), everything inside ``format.OFFICIAL_BOX`` with a margin. A world point is
``R (S x) + T`` (``format.head_to_world``); the camera is ``CameraSpec.official``.

The head is a union of convex primitives (ellipsoids, a clipped cylinder). Hair, eyelids and the
mouth are "shells with holes": where a primitive's entry point falls in its hole the primitive is
skipped and the ray goes on to what lies behind it (scalp, eyeball, mouth interior).

``detail=True`` (``render_head``, ``make_dataset``) paints the harder head a real face is: skin and
hair texture (procedural noise in canonical coordinates, so it moves rigidly with the head), crisp
eyes with white sclera and a dark limbal ring, outlined lips, separated teeth, a very dark mouth and
Blinn-Phong highlights of the same head-fixed light. Highlights are the one view-dependent part of
the radiance: still a static canonical field per expression, but one a view-independent colour
cannot fit exactly. :func:`region_boxes` gives the pixel boxes of the mouth and the eyes, where an
avatar's expressiveness shows.
"""

from __future__ import annotations

import json
import shutil
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from latentavatar_ns.data.format import (
    IMAGE_SUFFIXES,
    SPLITS,
    CameraRig,
    CameraSpec,
    DatasetError,
    FrameParams,
    axis_angle_to_matrix,
    frame_paths,
    head_to_world,
    list_frames,
    load_params,
    matrix_to_axis_angle,
    project_points,
    read_camera,
    read_rig,
    save_params,
    write_camera,
    write_rig,
)

Vec3 = Tuple[float, float, float]

EXPRESSION_KEYS = ("jaw_open", "smile", "blink_left", "blink_right", "brow_raise", "gaze_x", "gaze_y")
"""The order of :meth:`Expression.to_array` and of the ``expression`` key in params files."""

FACE_REGION: Dict[str, object] = {"center": (0.0, -0.25, 0.85), "half_width": 1.0, "half_height": 1.0}
"""Canonical square facing +z (x in [-1, 1], y in [-1.25, 0.75] at z = 0.85) whose projection is
the encoder's face crop: raised brows to dropped chin, cheek to cheek; the square of ``face_crop``'s defaults."""

SYNTH_FILE = "synth.json"
"""Written at a synthetic dataset's root: identity parameters, seed, sizes, counts."""

# Where the features sit in canonical space (geometry, paint and tests share them).
EYE_X, EYE_Y = 0.30, 0.25
MOUTH_Y = -0.55
NOSE_TIP = (0.0, -0.27, 0.97)
"""Front-most point of the nose, the same for every identity (handy for checking projections)."""
NECK_BOTTOM = -1.72
HEAD_SCALE = 0.1
"""Mean head scale S: head and neck fill about 80% of the frame height of the official camera."""

_SKULL_CENTRE = np.array([0.0, 0.2, -0.3])
_LID_RADIUS, _EYEBALL_RADIUS = 0.158, 0.15
_LIGHT = np.array([-0.35, 0.5, 0.8]) / np.linalg.norm([-0.35, 0.5, 0.8])
_AMBIENT = 0.38
# Eyes, nose and mouth lie in this canonical box; their primitives are only tested on rays through it.
_FEATURE_BOX = (np.array([-0.5, -0.85, 0.3]), np.array([0.5, 0.45, 1.05]))
# Detailed heads: Blinn-Phong highlight (strength, sharpness) per material. Skin is mostly matte,
# lips and teeth are wet, the cornea is a mirror that shows the light as a small sharp spot.
_SHINE_SKIN, _SHINE_LIPS, _SHINE_HAIR = (0.06, 30.0), (0.28, 45.0), (0.1, 28.0)
_SHINE_EYE, _SHINE_TEETH = (1.2, 80.0), (0.3, 50.0)
_FRECKLE_TINT = np.array([0.72, 0.55, 0.45])


# ----------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class HeadIdentity:
    """What makes one synthetic person look different from another."""

    skull_radii: Vec3 = (0.93, 1.17, 1.08)
    jaw_width: float = 0.74
    """Half-width of the lower face (cheeks and jaw)."""
    nose_size: float = 1.0
    skin: Vec3 = (0.87, 0.68, 0.57)
    hair_color: Vec3 = (0.24, 0.15, 0.09)
    hair_volume: float = 0.07
    """Thickness of the hair shell over the skull (the hair style's volume)."""
    hairline: float = 0.88
    """Height (canonical y) of the front hairline at the middle of the forehead."""
    hair_length: float = 0.1
    """Lowest canonical y the hair reaches at the sides and back (below -0.2: long hair framing the face)."""
    eye_color: Vec3 = (0.25, 0.45, 0.7)
    lip_color: Vec3 = (0.72, 0.36, 0.38)

    @classmethod
    def preset(cls, index: int) -> "HeadIdentity":
        """Four hand-made, clearly different people for 0..3; seeded random ones beyond."""
        if index < 0:
            raise ValueError(f"identity index must be >= 0, got {index}")
        presets = [
            cls(),
            cls(skull_radii=(0.97, 1.15, 1.1), jaw_width=0.8, nose_size=1.12, skin=(0.45, 0.3, 0.22),
                hair_color=(0.06, 0.05, 0.05), hair_volume=0.14, hairline=0.82, hair_length=0.25,
                eye_color=(0.3, 0.18, 0.08), lip_color=(0.45, 0.22, 0.22)),
            cls(skull_radii=(0.89, 1.2, 1.05), jaw_width=0.68, nose_size=0.88, skin=(0.93, 0.78, 0.68),
                hair_color=(0.85, 0.7, 0.4), hair_volume=0.1, hairline=0.8, hair_length=-0.85,
                eye_color=(0.3, 0.55, 0.3), lip_color=(0.8, 0.42, 0.46)),
            cls(skull_radii=(0.95, 1.14, 1.08), jaw_width=0.77, nose_size=1.22, skin=(0.76, 0.56, 0.42),
                hair_color=(0.55, 0.22, 0.1), hair_volume=0.04, hairline=1.02, hair_length=0.3,
                eye_color=(0.5, 0.52, 0.55), lip_color=(0.66, 0.33, 0.3)),
        ]
        if index < len(presets):
            return presets[index]
        rng = np.random.default_rng([index, 7919])
        tone = rng.uniform(0.0, 1.0)
        skin = np.array([0.93, 0.78, 0.68]) * (1.0 - tone) + np.array([0.42, 0.28, 0.2]) * tone
        return cls(
            skull_radii=_vec3(np.array([0.93, 1.17, 1.08]) * rng.uniform(0.96, 1.04, 3)),
            jaw_width=float(rng.uniform(0.67, 0.8)),
            nose_size=float(rng.uniform(0.85, 1.22)),
            skin=_vec3(skin),
            hair_color=_vec3(rng.uniform(0.04, 0.8) * rng.uniform(0.55, 1.0, 3)),
            hair_volume=float(rng.uniform(0.03, 0.15)),
            hairline=float(rng.uniform(0.8, 1.02)),
            hair_length=float(rng.uniform(-0.9, 0.3)),
            eye_color=_vec3(rng.uniform(0.1, 0.65, 3)),
            lip_color=_vec3(skin * np.array([0.85, 0.5, 0.55])),
        )


def _vec3(values: np.ndarray) -> Vec3:
    return (float(values[0]), float(values[1]), float(values[2]))


@dataclass(frozen=True)
class Expression:
    """Expression parameters; :data:`EXPRESSION_KEYS` is the array layout.

    ``blink_left`` closes the subject's left eye, the one at +x (image right in a frontal view);
    ``gaze_x > 0`` turns the eyes toward +x and ``gaze_y > 0`` up. Gaze is in [-1, 1], the rest in
    [0, 1]; values outside are clipped when rendering.
    """

    jaw_open: float = 0.0
    smile: float = 0.0
    blink_left: float = 0.0
    blink_right: float = 0.0
    brow_raise: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0

    def to_array(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in EXPRESSION_KEYS], dtype=np.float32)

    @classmethod
    def from_array(cls, values: Sequence[float]) -> "Expression":
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size != len(EXPRESSION_KEYS):
            raise ValueError(f"an expression has {len(EXPRESSION_KEYS)} values {EXPRESSION_KEYS}, got {arr.size}")
        return cls(**{k: float(v) for k, v in zip(EXPRESSION_KEYS, arr)})


# ----------------------------------------------------------------------------------------------
# Primitives


@dataclass
class _Rays:
    """Rays from one origin (a pinhole); direction components as separate float32 arrays for speed."""

    origin: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    dz: np.ndarray

    def subset(self, idx: np.ndarray) -> "_Rays":
        return _Rays(self.origin, self.dx[idx], self.dy[idx], self.dz[idx])

    def points(self, t: np.ndarray) -> np.ndarray:
        o = self.origin
        return np.stack([o[0] + t * self.dx, o[1] + t * self.dy, o[2] + t * self.dz], axis=1).astype(np.float64)

    def hits_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        enter = np.zeros_like(self.dx)
        leave = np.full_like(self.dx, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis, d in enumerate((self.dx, self.dy, self.dz)):
                t0 = (float(lo[axis]) - float(self.origin[axis])) / d
                t1 = (float(hi[axis]) - float(self.origin[axis])) / d
                enter = np.fmax(enter, np.fmin(t0, t1))
                leave = np.fmin(leave, np.fmax(t0, t1))
        return enter < leave


@dataclass
class _Ellipsoid:
    centre: np.ndarray
    radii: np.ndarray
    axes: Optional[np.ndarray] = None
    """Rows are the local axes (a rotation); None means axis-aligned."""

    def intersect(self, rays: _Rays) -> Tuple[np.ndarray, np.ndarray]:
        """Entry and exit distances (inf where the ray misses)."""
        inv = 1.0 / self.radii
        rel = rays.origin - self.centre
        dx, dy, dz = rays.dx, rays.dy, rays.dz
        if self.axes is not None:
            m = self.axes
            rel = m @ rel
            dx, dy, dz = (float(m[i, 0]) * rays.dx + float(m[i, 1]) * rays.dy + float(m[i, 2]) * rays.dz
                          for i in range(3))
        oc = rel * inv
        ax, ay, az = dx * float(inv[0]), dy * float(inv[1]), dz * float(inv[2])
        a = ax * ax + ay * ay + az * az
        b = ax * float(oc[0]) + ay * float(oc[1]) + az * float(oc[2])
        disc = b * b - a * (float(oc @ oc) - 1.0)
        hit = disc > 0
        root = np.sqrt(np.where(hit, disc, 0.0))
        near = np.where(hit, (-b - root) / a, np.inf)
        far = np.where(hit, (-b + root) / a, np.inf)
        return near, far

    def entry(self, rays: _Rays) -> np.ndarray:
        near = self.intersect(rays)[0]
        return np.where(near > 0, near, np.inf)

    def local(self, p: np.ndarray) -> np.ndarray:
        """Points in the frame where the ellipsoid is the unit sphere."""
        rel = p - self.centre
        if self.axes is not None:
            rel = rel @ self.axes.T
        return rel / self.radii

    def normal(self, p: np.ndarray) -> np.ndarray:
        grad = self.local(p) / self.radii
        if self.axes is not None:
            grad = grad @ self.axes
        return _normalize(grad)

    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        reach = self.radii if self.axes is None else np.full(3, self.radii.max())
        return self.centre - reach, self.centre + reach


@dataclass
class _Cylinder:
    """Vertical elliptic cylinder clipped to y in [y0, y1]: the intersection of a tube and a slab."""

    centre_xz: np.ndarray
    radii_xz: np.ndarray
    y0: float
    y1: float

    def entry(self, rays: _Rays) -> np.ndarray:
        inv = 1.0 / self.radii_xz
        ox = (rays.origin[0] - self.centre_xz[0]) * inv[0]
        oz = (rays.origin[2] - self.centre_xz[1]) * inv[1]
        ax, az = rays.dx * float(inv[0]), rays.dz * float(inv[1])
        a = np.maximum(ax * ax + az * az, 1e-12)
        b = ax * float(ox) + az * float(oz)
        disc = b * b - a * float(ox * ox + oz * oz - 1.0)
        hit = disc > 0
        root = np.sqrt(np.where(hit, disc, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            s0 = (self.y0 - float(rays.origin[1])) / rays.dy
            s1 = (self.y1 - float(rays.origin[1])) / rays.dy
        enter = np.fmax((-b - root) / a, np.fmin(s0, s1))
        leave = np.fmin((-b + root) / a, np.fmax(s0, s1))
        return np.where(hit & (enter < leave) & (enter > 0), enter, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        n = np.zeros_like(p)
        n[:, 0] = (p[:, 0] - self.centre_xz[0]) / self.radii_xz[0] ** 2
        n[:, 2] = (p[:, 2] - self.centre_xz[1]) / self.radii_xz[1] ** 2
        n[np.abs(p[:, 1] - self.y0) < 1e-4] = (0.0, -1.0, 0.0)
        n[np.abs(p[:, 1] - self.y1) < 1e-4] = (0.0, 1.0, 0.0)
        return _normalize(n)

    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        cx, cz = self.centre_xz
        rx, rz = self.radii_xz
        return np.array([cx - rx, self.y0, cz - rz]), np.array([cx + rx, self.y1, cz + rz])


def _tilt(angle: float) -> np.ndarray:
    """Rotation rows for an ellipsoid whose front dips down by ``angle`` (a jaw sloping up to the ears)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


def _sqnorm(v: np.ndarray) -> np.ndarray:
    """Row-wise squared length of (N, 3) arrays (einsum: much faster than a sum over a short axis)."""
    return np.einsum("ij,ij->i", v, v)


def _normalize(v: np.ndarray) -> np.ndarray:
    if v.ndim == 1:
        return v / max(float(np.sqrt(v @ v)), 1e-12)
    return v / np.sqrt(np.maximum(_sqnorm(v), 1e-24))[:, None]


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lambert(n: np.ndarray) -> np.ndarray:
    return (_AMBIENT + (1.0 - _AMBIENT) * np.clip(n @ _LIGHT, 0.0, 1.0))[:, None]


_HASH_X, _HASH_Y, _HASH_Z = np.uint32(0x9E3779B1), np.uint32(0x85EBCA77), np.uint32(0xC2B2AE3D)


def _hash01(h: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float32 values of mixed lattice keys (uint32): fixed integer arithmetic, so a
    texture is the same on every machine and in every run."""
    h = h ^ (h >> np.uint32(15))
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(13)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def _value_noise(q: np.ndarray, salt: int) -> np.ndarray:
    """Smooth 3D value noise in [-1, 1] (float32) at (N, 3) points ``q``, one feature per unit lattice cell.

    Trilinear blend (smoothstep weights) of the hashed values at the cell's eight corners: cheap,
    continuous, and a function of the point alone, so texture painted with it sticks to the surface.
    """
    cell = np.floor(q)
    f = (q - cell).astype(np.float32)
    w = f * f * (np.float32(3.0) - np.float32(2.0) * f)
    i = cell.astype(np.int64).astype(np.uint32)
    kx, ky, kz = i[:, 0] * _HASH_X, i[:, 1] * _HASH_Y, (i[:, 2] * _HASH_Z) ^ np.uint32(salt & 0xFFFFFFFF)
    wx, wy, wz = w[:, 0], w[:, 1], w[:, 2]

    def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        return a + (b - a) * t

    planes = []
    for z in (kz, kz + _HASH_Z):
        rows = []
        for y in (ky, ky + _HASH_Y):
            yz = y ^ z
            rows.append(lerp(_hash01(kx ^ yz), _hash01((kx + _HASH_X) ^ yz), wx))
        planes.append(lerp(rows[0], rows[1], wy))
    return np.float32(2.0) * lerp(planes[0], planes[1], wz) - np.float32(1.0)


# ----------------------------------------------------------------------------------------------
# The head


class _Scene:
    """One head with one expression: primitive geometry plus the paint that goes on it.

    ``detail`` adds texture, crisper features and highlights to the paint; the geometry is the same.
    """

    def __init__(self, ident: HeadIdentity, expr: Expression, detail: bool = False):
        self.ident = ident
        self.detail = bool(detail)
        # Where this person's texture noise is sampled: two people do not share freckles.
        salt = zlib.crc32(repr(ident).encode())
        self.noise_offset = np.array([salt % 97, (salt // 97) % 89, (salt // 8633) % 83], dtype=np.float64)
        self.view_origin = np.zeros(3)
        """The camera centre in canonical space (set by :meth:`trace`), for view-dependent highlights."""
        self.jaw = float(np.clip(expr.jaw_open, 0.0, 1.0))
        self.smile = float(np.clip(expr.smile, 0.0, 1.0))
        self.brow_lift = 0.1 * float(np.clip(expr.brow_raise, 0.0, 1.0))
        drop = 0.1 * self.jaw
        sk, ns = np.asarray(ident.skull_radii, dtype=np.float64), ident.nose_size
        self.skull = _Ellipsoid(_SKULL_CENTRE, sk)
        self.hair = _Ellipsoid(_SKULL_CENTRE, sk + ident.hair_volume)
        self.lower_face = _Ellipsoid(np.array([0.0, -0.45 - drop / 2, 0.15]),
                                     np.array([ident.jaw_width, 0.62 + drop / 2, 0.68]), _tilt(0.2))
        self.chin = _Ellipsoid(np.array([0.0, -0.86 - drop, 0.42]), np.array([0.26, 0.2, 0.27]))
        long_hair = ident.hair_length < -0.2  # covers the ears
        self.ears = [] if long_hair else [_Ellipsoid(np.array([s * (sk[0] + 0.02), 0.0, -0.3]),
                                                     np.array([0.11, 0.25, 0.15])) for s in (-1.0, 1.0)]
        self.neck = _Cylinder(np.array([0.0, -0.45]), np.array([0.46, 0.44]), NECK_BOTTOM, -0.3)
        self.nose_bridge = _Ellipsoid(np.array([0.0, 0.02, 0.72]), np.array([0.085 * ns, 0.27, 0.12 * ns]))
        tip_radii = np.array([0.13, 0.11, 0.15]) * ns
        self.nose_tip = _Ellipsoid(np.array(NOSE_TIP) - [0.0, 0.0, tip_radii[2]], tip_radii)
        # Eyeballs sit just behind the skull surface inside slightly larger eyelid spheres.
        eye_z = _SKULL_CENTRE[2] + sk[2] * np.sqrt(max(
            1.0 - (EYE_X / sk[0]) ** 2 - ((EYE_Y - _SKULL_CENTRE[1]) / sk[1]) ** 2, 0.0))
        self.eye_centres = [np.array([s * EYE_X, EYE_Y, eye_z - 0.1]) for s in (-1.0, 1.0)]  # right, left
        self.eyeballs = [_Ellipsoid(c, np.full(3, _EYEBALL_RADIUS)) for c in self.eye_centres]
        self.lids = [_Ellipsoid(c, np.full(3, _LID_RADIUS)) for c in self.eye_centres]
        self.blinks = [float(np.clip(expr.blink_right, 0.0, 1.0)), float(np.clip(expr.blink_left, 0.0, 1.0))]
        yaw = 0.45 * float(np.clip(expr.gaze_x, -1.0, 1.0))
        pitch = 0.3 * float(np.clip(expr.gaze_y, -1.0, 1.0))
        self.gaze = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
        # Mouth: an opening through the front skin into a dark cavity holding the upper teeth.
        self.mouth_half_width = 0.25 + 0.07 * self.smile
        self.cavity = _Ellipsoid(np.array([0.0, -0.62, 0.3]), np.array([0.42, 0.32, 0.45]))
        self.teeth = _Cylinder(np.array([0.0, 0.28]), np.array([0.24, 0.46]), MOUTH_Y - 0.075, MOUTH_Y + 0.05)
        # Surfaces whose shading normals blend where they meet, so the face has no hard creases.
        self.smooth_parts = [self.skull, self.lower_face, self.chin, self.nose_bridge, self.nose_tip] + self.lids

    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Canonical box holding every visible surface."""
        parts = (self.hair, self.lower_face, self.chin, self.neck, self.nose_tip, *self.ears)
        boxes = [part.bounds() for part in parts]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)

    # -- holes --------------------------------------------------------------------------------

    def _mouth_curves(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inside, upper inner lip edge, lower inner lip edge) as functions of x on the face front."""
        u = x / self.mouth_half_width
        s = np.clip(1.0 - u * u, 0.0, 1.0)
        centre = MOUTH_Y + 0.07 * self.smile * u * u - 0.01 * self.smile
        upper = centre + 0.02 * self.jaw * np.sqrt(s)
        lower = centre - 0.2 * self.jaw * s**0.7
        return np.abs(u) < 1.0, upper, lower

    def _mouth_rows(self, rays: _Rays, t: np.ndarray) -> np.ndarray:
        """Rows whose entry point at ``t`` falls in the mouth opening."""
        rows = np.flatnonzero(np.isfinite(t))
        p = rays.subset(rows).points(t[rows])
        inside, upper, lower = self._mouth_curves(p[:, 0])
        return rows[inside & (p[:, 2] > 0.3) & (p[:, 1] < upper) & (p[:, 1] > lower)]

    def _lid_coords(self, side: int, p: np.ndarray) -> Tuple[np.ndarray, ...]:
        """(outward x, y, z) on the unit lid sphere, and the upper and lower edges of the eye opening."""
        u = (p - self.eye_centres[side]) / _LID_RADIUS
        ux = u[:, 0] * (1.0 if side == 1 else -1.0)  # outward positive: the two eyes are mirror images
        s = np.clip(1.0 - (ux / 0.85) ** 2, 0.0, 1.0) ** 0.6
        top = 0.42 * s + 0.05 * ux - 0.01
        bottom = -0.3 * s + 0.02
        upper = top - self.blinks[side] * (top - bottom)
        return ux, u[:, 1], u[:, 2], upper, bottom

    def _in_lid_opening(self, side: int, p: np.ndarray) -> np.ndarray:
        ux, uy, uz, upper, bottom = self._lid_coords(side, p)
        return (uz > 0) & (np.abs(ux) < 0.85) & (uy < upper) & (uy > bottom)

    def _in_hair(self, p: np.ndarray) -> np.ndarray:
        rel = p - self.hair.centre
        azimuth = np.abs(np.arctan2(rel[:, 0], rel[:, 2]))  # 0 at the face, pi at the back
        front = 1.0 - _smoothstep(0.55, 1.4, azimuth)
        x = rel[:, 0] / self.hair.radii[0]
        hairline = self.ident.hairline - 0.15 * x * x + 0.03 * np.cos(9.0 * x)
        if not self.ears:  # long hair frames the face down to the jaw
            side = np.full_like(azimuth, self.ident.hair_length)
        else:  # short hair clears the ears and drops lower at the back
            side = np.maximum(self.ident.hair_length, 0.15 - 0.3 * _smoothstep(1.2, 1.9, azimuth))
        return p[:, 1] > front * hairline + (1.0 - front) * side

    # -- tracing ------------------------------------------------------------------------------

    def trace(self, rays: _Rays) -> Tuple[np.ndarray, np.ndarray]:
        """Colour (N, 3) and coverage (N,) of rays in canonical space (colour is 0 where uncovered)."""
        n = rays.dx.shape[0]
        self.view_origin = np.asarray(rays.origin, dtype=np.float64)
        # Each candidate surface: entry distances (inf: no hit), and how to shade its points (skin
        # surfaces are shaded together, in one batch, so their shading normals can blend).
        surfaces: List[Tuple[np.ndarray, Optional[Callable[[np.ndarray], np.ndarray]], Optional[object]]] = []

        def add(t: np.ndarray, shade: Optional[Callable[[np.ndarray], np.ndarray]],
                rows: Optional[np.ndarray] = None, skin_part: Optional[object] = None):
            if rows is not None:
                full = np.full(n, np.inf, dtype=t.dtype)
                full[rows] = t
                t = full
            surfaces.append((t, shade, skin_part))

        skin_parts = [self.skull, self.lower_face, self.chin, *self.ears, self.neck]
        skin_t = [part.entry(rays) for part in skin_parts]
        near = np.flatnonzero(rays.hits_box(*_FEATURE_BOX))
        sub = rays.subset(near)
        nose_t = [self.nose_bridge.entry(sub), self.nose_tip.entry(sub)]
        # Cut the mouth opening out of every skin surface; what is seen through it is the interior.
        punched = np.zeros(near.size, dtype=bool)
        if self.jaw > 0 and near.size:
            for t in skin_t[:3]:
                hole = self._mouth_rows(sub, t[near])
                t[near[hole]] = np.inf
                punched[hole] = True
            for t in nose_t:
                hole = self._mouth_rows(sub, t)
                t[hole] = np.inf
                punched[hole] = True
            if self.detail:  # the neck runs inside the mouth cavity: through the opening, only the mouth shows
                skin_t[-1][near[punched]] = np.inf
        for part, t in zip(skin_parts, skin_t):
            add(t, None, skin_part=part)
        for part, t in zip((self.nose_bridge, self.nose_tip), nose_t):
            add(t, None, near, skin_part=part)
        add(self._shell(rays, self.hair, self._in_hair), self._hair_color)
        for side in (0, 1):
            add(self._shell(sub, self.lids[side], lambda p, s=side: ~self._in_lid_opening(s, p)),
                lambda p, s=side: self._lid_color(s, p), near)
            add(self.eyeballs[side].entry(sub), lambda p, s=side: self._eye_color(s, p), near)
        holes = near[punched]
        if holes.size:
            inner = rays.subset(holes)
            add(self.teeth.entry(inner), self._teeth_color, holes)
            far = self.cavity.intersect(inner)[1]
            add(np.where(np.isfinite(far), far, 1e6).astype(far.dtype), self._cavity_color, holes)
        best = np.full(n, np.inf, dtype=rays.dx.dtype)
        winner = np.full(n, -1)
        for i, (t, _, _) in enumerate(surfaces):
            closer = t < best
            winner[closer] = i
            best = np.where(closer, t, best)
        covered = winner >= 0
        rgb = np.zeros((n, 3))
        skin_rows, skin_ids = [], []
        for i, (_, shade, _) in enumerate(surfaces):
            rows = np.flatnonzero(winner == i)
            if rows.size == 0:
                continue
            if shade is None:
                skin_rows.append(rows)
                skin_ids.append(np.full(rows.size, i))
            else:
                rgb[rows] = shade(rays.subset(rows).points(best[rows]))
        if skin_rows:
            rows = np.concatenate(skin_rows)
            parts = [part for _, _, part in surfaces]
            rgb[rows] = self._skin_color(rays.subset(rows).points(best[rows]), np.concatenate(skin_ids), parts)
        return rgb, covered

    @staticmethod
    def _shell(rays: _Rays, shape: _Ellipsoid, solid: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Entry distance into ``shape`` where ``solid(entry point)`` holds, inf elsewhere."""
        t = shape.entry(rays)
        rows = np.flatnonzero(np.isfinite(t))
        if rows.size:
            t[rows[~solid(rays.subset(rows).points(t[rows]))]] = np.inf
        return t

    # -- paint --------------------------------------------------------------------------------

    def _smooth_normal(self, p: np.ndarray) -> np.ndarray:
        """Normals of the face primitives blended by proximity, softening the creases between them."""
        total = np.zeros_like(p)
        for part in self.smooth_parts:
            reach = part.radii.max() + 0.15
            rows = np.flatnonzero(_sqnorm(p - part.centre) < reach * reach)
            loc = part.local(p[rows])
            dist = np.maximum(np.sqrt(_sqnorm(loc)) - 1.0, 0.0) * part.radii.min()
            grad = loc / part.radii
            if part.axes is not None:
                grad = grad @ part.axes
            total[rows] += (np.exp(-dist / 0.03) / np.sqrt(_sqnorm(grad)))[:, None] * grad
        return _normalize(total)

    def _skin_albedo(self, p: np.ndarray) -> np.ndarray:
        return self._skin_paint(p)[0]

    def _skin_paint(self, p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Skin albedo (N, 3) at canonical points ``p``, and how much of each point is lip (N,): lips are wetter."""
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        skin = np.asarray(self.ident.skin)
        grain = (1.0 + 0.03 * np.sin(7.1 * x + 1.3) * np.sin(6.3 * y + 0.7) * np.sin(5.9 * z + 2.1)
                 + 0.012 * np.sin(31.0 * x + 17.0 * y) * np.sin(23.0 * z - 11.0 * y))
        col = skin[None, :] * grain[:, None]
        if self.detail:
            col *= self._skin_texture(p)
        lips = np.zeros(p.shape[0])
        face = np.flatnonzero(z > 0.2)  # the paint below lives on the front of the head only
        x, y, z, front = x[face], y[face], z[face], _smoothstep(0.2, 0.5, z[face])
        ax = np.abs(x)
        cheek = np.exp(-(((ax - 0.43) / 0.16) ** 2 + ((y + 0.3 + 0.05 * self.smile) / 0.14) ** 2)) * front
        socket = np.exp(-(((ax - EYE_X) / 0.2) ** 2 + ((y - EYE_Y) / 0.16) ** 2)) * front
        blush = 0.22 * cheek[:, None]
        col[face] = (col[face] * (1.0 - blush) + (skin * np.array([1.05, 0.75, 0.75]))[None, :] * blush) \
            * (1.0 - 0.08 * socket)[:, None]
        # Brows: arched dark bands above the eyes.
        rows = np.flatnonzero((np.abs(y - 0.55 - self.brow_lift) < 0.15) & (ax < 0.6))
        u = (ax[rows] - EYE_X + 0.02) / 0.24
        arch = 0.5 + self.brow_lift + 0.045 * (1.0 - u * u) - 0.03 * u
        thick = 0.038 * (1.0 - 0.45 * np.clip(u, 0.0, 1.0))
        across = 1.0 - _smoothstep(0.75, 1.0, np.abs(y[rows] - arch) / thick)
        brow = ((1.0 - _smoothstep(0.9, 1.0, np.abs(u))) * across * front[rows])[:, None]
        brow_col = np.asarray(self.ident.hair_color) * 0.75 + 0.03
        col[face[rows]] = col[face[rows]] * (1.0 - brow) + brow_col[None, :] * brow
        # Lips around the opening, a dark seam between them when the mouth is closed.
        rows = np.flatnonzero((ax < self.mouth_half_width * 1.06) & (y > -0.95) & (y < -0.3) & (z > 0.3))
        x, y = x[rows], y[rows]
        inside, upper, lower = self._mouth_curves(x)
        s = np.clip(1.0 - (x / self.mouth_half_width) ** 2, 0.0, 1.0)
        bow = 0.012 * np.exp(-(((np.abs(x) - 0.05) / 0.04) ** 2))
        top, bottom = upper + 0.055 * s**0.4 + bow, lower - 0.07 * s**0.5
        lip = ((y < top) & (y > bottom)) * (1.0 - _smoothstep(0.92, 1.05, np.abs(x) / self.mouth_half_width))
        rows = face[rows]
        lip_col = np.asarray(self.ident.lip_color)[None, :]
        if self.detail:
            lip_col = lip_col * self._lip_texture(p[rows], y > upper)
        col[rows] = col[rows] * (1.0 - lip[:, None]) + lip_col * lip[:, None]
        if self.detail:
            col[rows] *= self._lip_outline(x, y, top, bottom)[:, None]
        lips[rows] = lip
        seam = rows[inside & (y < upper + 0.006) & (y > lower - 0.006)]
        col[seam] = col[seam] * 0.35 + np.array([0.2, 0.05, 0.05]) * 0.65
        return col, lips

    # Detailed paint: texture is noise of the canonical point (offset per person), so it moves rigidly
    # with the head; every factor is a multiplier, which keeps the hue of the paint it sits on.

    def _noise(self, p: np.ndarray, freq: Sequence[float], salt: int) -> np.ndarray:
        return _value_noise((p + self.noise_offset) * np.asarray(freq, dtype=np.float64), salt)

    def _skin_rest(self, p: np.ndarray) -> np.ndarray:
        """Where skin points were with the jaw closed: texture sampled there stretches with the lower
        face as the jaw drops (the chin moves ``0.1 * jaw`` down) instead of swimming over it; the neck,
        behind the jaw, stays put."""
        if self.jaw == 0:
            return p
        rest = p.copy()
        jaw = np.clip((MOUTH_Y - p[:, 1]) / 0.45, 0.0, 1.0) * _smoothstep(-0.1, 0.2, p[:, 2])
        rest[:, 1] += 0.1 * self.jaw * jaw
        return rest

    def _skin_texture(self, p: np.ndarray) -> np.ndarray:
        """(N, 3) albedo factors: blotchy mottling (about +-10%, a little redder where darker), fine
        pore grain, and freckles on the face, as a real face has at a benchmark's resolution."""
        p = self._skin_rest(p)
        mottle = self._noise(p, (6.0, 6.0, 6.0), 1)
        tone = 1.0 + 0.1 * mottle + 0.045 * self._noise(p, (23.0, 23.0, 23.0), 3)
        factor = np.repeat(tone[:, None], 3, axis=1)
        factor[:, 1:] *= (1.0 + 0.04 * mottle)[:, None]
        freckles = _smoothstep(0.66, 0.82, self._noise(p, (19.0, 19.0, 19.0), 4)) * _smoothstep(0.2, 0.45, p[:, 2])
        return factor * (1.0 - 0.35 * freckles[:, None] * (1.0 - _FRECKLE_TINT)[None, :])

    def _lip_texture(self, p: np.ndarray, upper_lip: np.ndarray) -> np.ndarray:
        """(N, 1) lip colour factors: fine vertical creases, and the upper lip darker (it faces down,
        away from the light)."""
        creases = 1.0 + 0.1 * self._noise(self._skin_rest(p), (45.0, 4.0, 45.0), 5)
        return (creases * np.where(upper_lip, 0.82, 1.0))[:, None]

    def _lip_outline(self, x: np.ndarray, y: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        """(N,) darkening along the lips' outer edges and into the mouth corners, against the skin."""
        edge = np.minimum(np.abs(y - top), np.abs(y - bottom))
        along = 1.0 - _smoothstep(0.98, 1.06, np.abs(x) / self.mouth_half_width)
        return 1.0 - 0.45 * np.exp(-((edge / 0.013) ** 2)) * along

    def _specular(self, p: np.ndarray, normal: np.ndarray, strength, sharpness) -> np.ndarray:
        """(N, 1) Blinn-Phong highlight of the head-fixed light seen from the camera, added as white;
        ``strength`` and ``sharpness`` are numbers or (N,) arrays (materials mixing at a point)."""
        half = _normalize(_normalize(self.view_origin[None, :] - p) + _LIGHT[None, :])
        spec = np.clip(np.einsum("ij,ij->i", normal, half), 0.0, 1.0) ** sharpness
        return (strength * np.where(normal @ _LIGHT > 0.0, spec, 0.0))[:, None]

    def _skin_color(self, p: np.ndarray, ids: np.ndarray, parts: List[object]) -> np.ndarray:
        """Skin points ``p`` lying on ``parts[ids]``: albedo, per-part details, and shading."""
        col, lips = self._skin_paint(p)
        normal = np.zeros_like(p)
        smooth = np.zeros(len(p), dtype=bool)
        for i in np.unique(ids):
            part = parts[i]
            rows = np.flatnonzero(ids == i)
            if any(part is q for q in self.smooth_parts):
                smooth[rows] = True
            else:
                normal[rows] = part.normal(p[rows])
            q = p[rows]
            if part is self.nose_tip:
                u = part.local(q)
                spot = ((np.abs(u[:, 0]) - 0.45) / 0.28) ** 2 + ((u[:, 2] - 0.15) / 0.4) ** 2
                nostril = (u[:, 1] < -0.45) & (spot < 1.0)
                col[rows[nostril]] *= 0.3
            elif any(part is ear for ear in self.ears):
                u = part.local(q)
                inner = (np.abs(u[:, 0]) > 0.5) & ((u[:, 1] / 0.75) ** 2 + (u[:, 2] / 0.6) ** 2 < 1.0)
                col[rows[inner]] *= 0.75
            elif part is self.neck:
                col[rows] *= (0.78 + 0.22 * _smoothstep(-1.25, -1.5, q[:, 1]))[:, None]  # shadow under the jaw
        normal[smooth] = self._smooth_normal(p[smooth])
        shaded = col * _lambert(normal)
        if self.detail:
            strength, sharpness = (a + (b - a) * lips for a, b in zip(_SHINE_SKIN, _SHINE_LIPS))
            shaded += self._specular(p, normal, strength, sharpness)
        return shaded

    def _lid_color(self, side: int, p: np.ndarray) -> np.ndarray:
        col = self._skin_albedo(p) * 0.96
        ux, uy, uz, upper, bottom = self._lid_coords(side, p)
        front = (uz > 0) & (np.abs(ux) < 0.9)
        s = np.clip(1.0 - (ux / 0.85) ** 2, 0.0, 1.0)
        lashes = front & (uy > upper - 0.02) & (uy < upper + 0.09 + 0.04 * s)
        col[lashes] = (0.08, 0.05, 0.04)
        col[front & (uy < bottom) & (uy > bottom - 0.05)] *= 0.75
        top = 0.42 * s**0.6 + 0.05 * ux - 0.01
        col[front & (np.abs(uy - top - 0.28) < 0.03)] *= 0.85  # crease
        normal = self._smooth_normal(p)
        shaded = col * _lambert(normal)
        if self.detail:
            shaded += self._specular(p, normal, *_SHINE_SKIN) * ~lashes[:, None]
        return shaded

    def _eye_color(self, side: int, p: np.ndarray) -> np.ndarray:
        n = _normalize(p - self.eye_centres[side])
        cos = n @ self.gaze
        col = np.tile(np.array([0.97, 0.96, 0.94] if self.detail else [0.93, 0.91, 0.88]), (p.shape[0], 1))
        iris = cos > np.cos(0.5)
        ring = np.clip(np.arccos(np.clip(cos[iris], -1.0, 1.0)) / 0.5, 0.0, 1.0)
        # Radial streaks around the gaze axis, a darker limbal ring.
        ref = _normalize(np.cross(self.gaze, [0.0, 1.0, 0.0]))
        angle = np.arctan2(n[iris] @ np.cross(self.gaze, ref), n[iris] @ ref)
        streak = 1.0 + 0.18 * np.sin(23.0 * angle) * ring
        col[iris] = np.asarray(self.ident.eye_color)[None, :] * (streak * (1.1 - 0.6 * ring**4))[:, None]
        if self.detail:  # a crisp, nearly black limbal ring around the iris, a black pupil
            col[iris] *= (1.0 - 0.85 * _smoothstep(0.78, 0.97, ring))[:, None]
        col[cos > np.cos(0.2)] = (0.01, 0.01, 0.012) if self.detail else (0.03, 0.03, 0.035)
        col *= (0.55 + 0.45 * np.clip(n @ _LIGHT, 0.0, 1.0))[:, None]
        if not self.detail:
            col[n @ _normalize(_LIGHT + np.array([0.0, 0.0, 1.0])) > 0.992] = 1.0  # catchlight
            return col
        return col * self._lid_shadow(side, p)[:, None] + self._specular(p, n, *_SHINE_EYE)

    def _lid_shadow(self, side: int, p: np.ndarray) -> np.ndarray:
        """(N,) shade the upper lid and lashes cast on the eyeball just below them: the eye sits in its socket."""
        _, uy, _, upper, _ = self._lid_coords(side, p)
        return 0.65 + 0.35 * _smoothstep(0.0, 0.18, upper - uy)

    def _hair_color(self, p: np.ndarray) -> np.ndarray:
        rel = p - self.hair.centre
        azimuth = np.arctan2(rel[:, 0], rel[:, 2])
        strands = (1.0 + 0.12 * np.sin(70.0 * azimuth + 9.0 * np.sin(3.0 * rel[:, 1]))
                   + 0.06 * np.sin(150.0 * azimuth + 4.0 * rel[:, 1]))
        if not self.detail:
            return np.asarray(self.ident.hair_color)[None, :] * strands[:, None] * _lambert(self.hair.normal(p))
        strands = strands + self._hair_streaks(rel, azimuth)
        normal = self.hair.normal(p)
        return np.asarray(self.ident.hair_color)[None, :] * strands[:, None] * _lambert(normal) \
            + self._specular(p, normal, *_SHINE_HAIR) * strands[:, None]

    def _hair_streaks(self, rel: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
        """(N,) irregular strand stripes: noise on a cylinder around the head, fine across the strands
        (around the azimuth) and long along them (down y); a cylinder, so the noise has no seam at the back."""
        around = np.stack([np.cos(azimuth), np.sin(azimuth), np.zeros_like(azimuth)], axis=1)
        coarse = around * 9.0 + np.outer(rel[:, 1], (0.0, 0.0, 1.3))
        fine = around * 24.0 + np.outer(rel[:, 1], (0.0, 0.0, 2.5))
        return 0.12 * self._noise(coarse, (1.0, 1.0, 1.0), 6) + 0.07 * self._noise(fine, (1.0, 1.0, 1.0), 7)

    def _teeth_color(self, p: np.ndarray) -> np.ndarray:
        col = np.tile(np.array([0.98, 0.97, 0.92] if self.detail else [0.95, 0.93, 0.86]), (p.shape[0], 1))
        angle = np.arctan2(p[:, 0] - self.teeth.centre_xz[0], p[:, 2] - self.teeth.centre_xz[1])
        normal = self.teeth.normal(p)
        diffuse = (0.55 + 0.45 * np.clip(normal @ _LIGHT, 0.0, 1.0))[:, None]
        if not self.detail:
            col[np.abs(np.sin(angle * 14.0)) < 0.12] *= 0.6
            return col * diffuse
        solid = _smoothstep(0.08, 0.3, np.abs(np.sin(angle * 14.0)))[:, None]  # 0 in the dark gaps between teeth
        col *= 0.1 + 0.9 * solid
        return col * diffuse + self._specular(p, normal, *_SHINE_TEETH) * solid

    def _cavity_color(self, p: np.ndarray) -> np.ndarray:
        col = np.tile(np.array([0.22, 0.05, 0.06]), (p.shape[0], 1))
        tongue = p[:, 1] < MOUTH_Y - 0.1
        col[tongue] = (0.5, 0.2, 0.22)
        if self.detail:  # the mouth is a deep cavity: little light reaches in
            col *= np.where(tongue, 0.6, 0.25)[:, None]
        return col * (0.35 + 0.65 * _smoothstep(-0.3, 0.4, np.clip(p[:, 2], -1.0, 1.0)))[:, None]


# ----------------------------------------------------------------------------------------------
# Rendering


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


def _box_corners(lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """(8, 3) corners of the axis-aligned box [lo, hi]."""
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


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
        u0, v0 = np.floor(uv.min(axis=0)).astype(int) - 1
        u1, v1 = np.ceil(uv.max(axis=0)).astype(int) + 1
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
    detailed head (texture, crisp eyes, lips and teeth, highlights; see the module docstring).
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


CANONICAL_REGIONS: Dict[str, Tuple[Vec3, Vec3]] = {
    "mouth": ((-0.37, MOUTH_Y - 0.3, 0.53), (0.37, MOUTH_Y + 0.11, 0.84)),
    "eyes": ((-EYE_X - 0.15, EYE_Y - 0.1, 0.58), (EYE_X + 0.15, EYE_Y + 0.14, 0.81)),
}
"""Canonical boxes (lo, hi) around the surfaces where expressions show, for every identity and
expression. ``mouth``: the lips (with their outline) at the widest smile and the jaw fully open,
and so everything seen through the opening (teeth, tongue); the chin moving down is outside it.
``eyes``: both eyes with their lids, lashes and creases, below the brows. Depths span the
front surfaces of all identities, so the projected box holds the region in any head pose."""


def region_boxes(pose: np.ndarray, scale: float, camera: CameraSpec) -> Dict[str, Tuple[int, int, int, int]]:
    """Pixel boxes ``{"mouth": (x0, y0, x1, y1), "eyes": (...)}`` of one frame, from the ground truth.

    ``pose`` (6,) is axis-angle then translation and ``scale`` is S, as in params files; ``camera``
    is the dataset's (``read_camera`` at the image size, or a view of a multi-view rig). Each box
    bounds the projection of the eight corners of its box in :data:`CANONICAL_REGIONS`, whatever the
    expression, so a metric restricted to it compares the same region in every frame and method.
    Boxes are half-open pixel ranges clipped to the image: ``image[y0:y1, x0:x1]`` (H x W x C) is the
    region, empty (x0 == x1 or y0 == y1) if it is out of view.
    """
    width, height = int(camera.width), int(camera.height)
    boxes = {}
    for name, (lo, hi) in CANONICAL_REGIONS.items():
        uv = canonical_to_pixel(_box_corners(lo, hi), pose, scale, camera)
        (x0, y0), (x1, y1) = np.floor(uv.min(axis=0)), np.ceil(uv.max(axis=0))
        boxes[name] = (int(np.clip(x0, 0, width)), int(np.clip(y0, 0, height)),
                       int(np.clip(x1, 0, width)), int(np.clip(y1, 0, height)))
    return boxes


def region_boxes_of_frame(dataset_dir: Path, split: str, index: int,
                          view: Optional[str] = None) -> Dict[str, Tuple[int, int, int, int]]:
    """:func:`region_boxes` of frame ``index`` of ``split`` (``train`` or ``eval``) of a dataset on disk.

    Pose and scale come from the frame's params file, the camera from ``camera.json`` rescaled to the
    frame's image size (the official camera if there is none; a per-frame ``intrinsics`` overrides
    its K). A multi-view capture needs ``view`` (e.g. ``"cam01"``): the moment's boxes in that view.
    """
    dataset_dir = Path(dataset_dir)
    rig = read_rig(dataset_dir)
    if rig is None and view is not None:
        raise DatasetError(f"{dataset_dir}: a single-camera dataset has no view {view!r}")
    if rig is not None and view not in rig.views:
        raise DatasetError(f"{dataset_dir}: a multi-view capture; name one of its views ({', '.join(rig.names)}), "
                           f"got {view!r}")
    files = frame_paths(dataset_dir / split, index, view=view)
    image = next((files.image.with_suffix(suffix) for suffix in IMAGE_SUFFIXES
                  if files.image.with_suffix(suffix).exists()), None)
    if image is None:
        raise DatasetError(f"{files.image.with_suffix('')}: no image ({', '.join(IMAGE_SUFFIXES)}) for frame {index}")
    from PIL import Image

    with Image.open(image) as img:  # reads the header only
        width, height = img.size
    camera = read_camera(dataset_dir, width, height) if rig is None else rig.rescaled(width, height).views[view]
    params = load_params(files.params)
    if params.intrinsics is not None:
        k = params.intrinsics
        camera = CameraSpec(width, height, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]),
                            camera.world_to_camera)
    return region_boxes(params.pose, params.scale, camera)


# ----------------------------------------------------------------------------------------------
# Motion and expression over time


def sample_motion(num_frames: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Smooth head motion: (poses (N, 6) axis-angle + translation, scales (N,)).

    Yaw, pitch and roll are sums of two sines with random periods and phases, bounded by 25, 12
    and 8 degrees; translation moves a few percent of the frame and the scale breathes by 3%.
    """
    rng = np.random.default_rng([seed, 1])
    t = np.arange(num_frames, dtype=np.float64)

    def wave(amplitude: float, shortest: float, longest: float) -> np.ndarray:
        periods = rng.uniform(shortest, longest, 2)
        phases = rng.uniform(0.0, 2.0 * np.pi, 2)
        mix = rng.uniform(0.55, 0.8)
        return amplitude * (mix * np.sin(2.0 * np.pi * t / periods[0] + phases[0])
                            + (1.0 - mix) * np.sin(2.0 * np.pi * t / periods[1] + phases[1]))

    yaw, pitch, roll = wave(np.radians(25.0), 50, 130), wave(np.radians(12.0), 40, 110), wave(np.radians(8.0), 60, 150)
    lift = HEAD_SCALE * 0.13  # centres hair top (y ~ 1.45) to neck bottom (y = -1.72) in the frame
    translation = np.stack([wave(0.008, 70, 160), lift + wave(0.006, 70, 160), wave(0.02, 70, 160)], axis=1)
    scales = HEAD_SCALE * (1.0 + wave(0.03, 80, 200))
    poses = np.zeros((num_frames, 6))
    for i in range(num_frames):
        rot = axis_angle_to_matrix([0.0, yaw[i], 0.0]) @ axis_angle_to_matrix([pitch[i], 0.0, 0.0]) \
            @ axis_angle_to_matrix([0.0, 0.0, roll[i]])
        poses[i, :3] = matrix_to_axis_angle(rot)
    poses[:, 3:] = translation
    return poses, scales


def _segments(num_frames: int, rng: np.random.Generator, start: np.ndarray,
              draw: Callable[[np.random.Generator], List[Tuple[np.ndarray, int, int]]]) -> np.ndarray:
    """A curve that eases (smoothstep over ``ramp`` frames) to each drawn value and holds it ``hold`` frames."""
    out = np.empty((num_frames, start.size))
    value, i = start.astype(np.float64), 0
    while i < num_frames:
        for target, ramp, hold in draw(rng):
            w = _smoothstep(0.0, 1.0, (np.arange(1, ramp + 1) / ramp))[:, None]
            block = np.concatenate([value + (target - value) * w, np.repeat(target[None], hold, axis=0)])
            take = min(len(block), num_frames - i)
            out[i:i + take] = block[:take]
            i += take
            value = target
            if i >= num_frames:
                break
    return out


@dataclass(frozen=True)
class _Repertoire:
    """How often and how far a sampled performance goes: the odds and ranges the draws below use."""

    jaw_modes: Tuple[float, float, float] = (0.35, 0.5, 0.15)
    """Chances of a silent, a talking and a wide-open phase."""
    talk_open: Tuple[float, float] = (0.25, 0.65)
    wide_open: Tuple[float, float] = (0.75, 1.0)
    smile_rest: float = 0.45
    """Chance that a smile phase is no smile."""
    smile_range: Tuple[float, float] = (0.3, 1.0)
    brow_rest: float = 0.6
    brow_range: Tuple[float, float] = (0.3, 1.0)
    gaze_centre: float = 0.4
    """Chance that a fixation is near the centre."""
    gaze_range: Tuple[float, float] = (0.85, 0.6)
    """Largest |gaze_x| and |gaze_y| of a fixation."""
    blink_gap: Tuple[int, int] = (25, 80)
    wink: float = 0.12
    """Chance that a blink closes one eye only."""
    wink_hold: Optional[Tuple[int, int]] = None
    """Frames a wink stays shut (None: it is as quick as a blink)."""
    first_wink: bool = False
    """Make the first blink a wink, so that even a short sequence has one."""


_NATURAL = _Repertoire()
_WIDE = _Repertoire(jaw_modes=(0.25, 0.45, 0.3), talk_open=(0.3, 0.85), wide_open=(0.85, 1.0), smile_rest=0.35,
                    smile_range=(0.4, 1.0), brow_rest=0.4, brow_range=(0.4, 1.0), gaze_centre=0.2,
                    gaze_range=(1.0, 0.85), blink_gap=(18, 55), wink=0.5, wink_hold=(2, 8), first_wink=True)
"""The detailed datasets' repertoire: wider mouth, brows and gaze, and frequent held winks, every
value still inside the clipping ranges of :class:`Expression` (what the geometry supports)."""


def _draw_jaw(rng: np.random.Generator, rep: _Repertoire) -> List[Tuple[np.ndarray, int, int]]:
    mode = rng.choice(3, p=rep.jaw_modes)
    if mode == 0:  # silent
        return [(np.array([rng.uniform(0.0, 0.05)]), int(rng.integers(3, 7)), int(rng.integers(6, 25)))]
    if mode == 1:  # talking: syllables alternating open and nearly closed
        steps = []
        for _ in range(int(rng.integers(2, 6))):
            steps.append((np.array([rng.uniform(*rep.talk_open)]), int(rng.integers(2, 4)), int(rng.integers(0, 3))))
            steps.append((np.array([rng.uniform(0.0, 0.15)]), int(rng.integers(2, 4)), int(rng.integers(0, 3))))
        return steps
    return [(np.array([rng.uniform(*rep.wide_open)]), int(rng.integers(4, 8)),
             int(rng.integers(6, 16)))]  # wide open


def _draw_smile(rng: np.random.Generator, rep: _Repertoire) -> List[Tuple[np.ndarray, int, int]]:
    value = 0.0 if rng.uniform() < rep.smile_rest else rng.uniform(*rep.smile_range)
    return [(np.array([value]), int(rng.integers(6, 13)), int(rng.integers(10, 45)))]


def _draw_brow(rng: np.random.Generator, rep: _Repertoire) -> List[Tuple[np.ndarray, int, int]]:
    value = 0.0 if rng.uniform() < rep.brow_rest else rng.uniform(*rep.brow_range)
    return [(np.array([value]), int(rng.integers(4, 9)), int(rng.integers(8, 30)))]


def _draw_gaze(rng: np.random.Generator, rep: _Repertoire) -> List[Tuple[np.ndarray, int, int]]:
    spread = 0.15 if rng.uniform() < rep.gaze_centre else 1.0  # often back near the centre
    reach_x, reach_y = rep.gaze_range
    target = np.array([rng.uniform(-reach_x, reach_x), rng.uniform(-reach_y, reach_y)]) * spread
    return [(target, 2, int(rng.integers(8, 40)))]  # saccade, then fixation


def _blinks(num_frames: int, rng: np.random.Generator, rep: _Repertoire) -> np.ndarray:
    """(N, 2) lid closure (right, left): short blinks of both eyes, some winks of one."""
    blinks = np.zeros((num_frames, 2))
    frame = first = int(rng.integers(3, 30))
    while frame < num_frames:
        length = int(rng.integers(5, 9))
        profile = np.sin(np.pi * np.arange(1, length + 1) / (length + 1)) ** 1.5
        wink = rng.uniform() < rep.wink or (rep.first_wink and frame == first)
        eyes = [int(rng.integers(2))] if wink else [0, 1]
        if len(eyes) == 1 and rep.wink_hold is not None:  # a held wink: shut at the middle of the blink
            middle = length // 2
            hold = np.full(int(rng.integers(*rep.wink_hold)), profile.max())
            profile = np.concatenate([profile[:middle], hold, profile[middle:]])
            length = profile.size
        take = min(length, num_frames - frame)
        blinks[frame:frame + take, eyes] = np.maximum(blinks[frame:frame + take, eyes], profile[:take, None])
        frame += length + int(rng.integers(*rep.blink_gap))
    return blinks


def sample_expressions(num_frames: int, seed: int, detail: bool = False) -> List[Expression]:
    """Smooth, natural expression sequences: short blinks (sometimes a wink), talking and wide-open
    mouth phases, smiles, raised brows (also when the mouth opens wide) and saccadic gaze.

    ``detail`` samples the wider repertoire of detailed datasets (an expressiveness benchmark needs
    the extremes): more and wider mouth opening, bigger smiles, brows and gaze, and frequent winks
    held shut for a few frames. Without it the sequences are exactly the natural ones.
    """
    rep = _WIDE if detail else _NATURAL
    rng = np.random.default_rng([seed, 2])

    def draw(fn: Callable[[np.random.Generator, _Repertoire], List[Tuple[np.ndarray, int, int]]]):
        return lambda generator: fn(generator, rep)

    jaw = _segments(num_frames, rng, np.zeros(1), draw(_draw_jaw))[:, 0]
    smile = _segments(num_frames, rng, np.zeros(1), draw(_draw_smile))[:, 0]
    brow = np.maximum(_segments(num_frames, rng, np.zeros(1), draw(_draw_brow))[:, 0],
                      0.9 * _smoothstep(0.6, 0.9, jaw))
    gaze = _segments(num_frames, rng, np.zeros(2), draw(_draw_gaze))
    blinks = _blinks(num_frames, rng, rep)
    values = np.stack([jaw, smile, blinks[:, 0], blinks[:, 1], brow, gaze[:, 0], gaze[:, 1]], axis=1)
    return [Expression.from_array(row) for row in np.round(values, 6)]


# ----------------------------------------------------------------------------------------------
# Datasets


@dataclass
class _Frame:
    split: str
    index: int
    """Index within the split (the file number)."""
    frame: int
    """Global frame index in the video."""
    pose: np.ndarray
    scale: float
    expression: Expression


def _dataset_seeds(seed: int, identity: int) -> Tuple[int, int, int]:
    """Motion, expression and background seeds: distinct people with one seed move differently."""
    a, b, c = np.random.SeedSequence([seed, identity]).generate_state(3)
    return int(a), int(b), int(c)


def _own_frames(num_frames: int, eval_fraction: float, motion_seed: int, expression_seed: int,
                detail: bool = False) -> List[_Frame]:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    num_eval = max(1, int(round(num_frames * eval_fraction))) if eval_fraction > 0 else 0
    if num_eval >= num_frames:
        raise ValueError(f"{num_frames} frames leave none to train on with eval_fraction={eval_fraction}")
    poses, scales = sample_motion(num_frames, motion_seed)
    expressions = sample_expressions(num_frames, expression_seed, detail=detail)
    num_train = num_frames - num_eval
    return [_Frame("train" if i < num_train else "eval", i if i < num_train else i - num_train, i,
                   poses[i], float(scales[i]), expressions[i]) for i in range(num_frames)]


def _driver_frames(driver: Path) -> Tuple[List[_Frame], CameraSpec]:
    """Every frame of another synthetic dataset (both splits, same numbering) and its camera."""
    if not driver.is_dir():
        raise DatasetError(f"{driver}: driving dataset not found")
    frames: List[_Frame] = []
    size: Optional[Tuple[int, int]] = None
    for split in SPLITS:
        if not (driver / split).is_dir():
            continue
        for files in list_frames(driver / split):
            params = load_params(files.params)
            if "expression" not in params.extra:
                raise DatasetError(f"{files.params}: no 'expression' key; drive_from needs a synthetic dataset")
            expression = Expression.from_array(params.extra["expression"])
            global_index = int(np.asarray(params.extra.get("frame", files.index)).reshape(-1)[0])
            frames.append(_Frame(split, files.index, global_index, params.pose, params.scale, expression))
            if size is None:
                from PIL import Image

                with Image.open(files.image) as image:
                    size = image.size
    if not frames or size is None:
        raise DatasetError(f"{driver}: no frames in {' or '.join(SPLITS)}/")
    return frames, read_camera(driver, size[0], size[1])


def _clear_output(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a directory")
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{output_dir} is not empty; pass overwrite=True (--overwrite) to replace it")
        for name in SPLITS:
            if (output_dir / name).exists():
                shutil.rmtree(output_dir / name)
        for name in ("camera.json", SYNTH_FILE):
            (output_dir / name).unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)


def view_yaws(num_views: int, layout: Literal["arc", "ring"] = "arc", spread: float = 120.0) -> np.ndarray:
    """Yaw angles (degrees) of the cameras of a synthetic capture around the head.

    ``arc``: evenly from -spread/2 to +spread/2 (a frontal camera when ``num_views`` is odd);
    ``ring``: all around, 360/num_views apart, starting in front of the face.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if layout == "ring":
        return np.arange(num_views) * 360.0 / num_views
    if layout != "arc":
        raise ValueError(f"view layout must be 'arc' or 'ring', got {layout!r}")
    if not 0.0 < spread <= 360.0:
        raise ValueError(f"view spread must be in (0, 360] degrees, got {spread}")
    return np.linspace(-spread / 2.0, spread / 2.0, num_views) if num_views > 1 else np.zeros(1)


def camera_rig(resolution: int, yaws_deg: Sequence[float], heldout: Sequence[int] = ()) -> CameraRig:
    """The official camera swung about the world's vertical axis through the head, one view per yaw.

    A yaw of +90 degrees looks at the subject's left side (+x). Views are named ``cam00``, ``cam01``, ...
    in the order of ``yaws_deg``; ``heldout`` lists the indices kept out of training.
    """
    official = CameraSpec.official(resolution)
    views = {}
    for i, yaw in enumerate(yaws_deg):
        swing = np.eye(4)
        swing[:3, :3] = axis_angle_to_matrix(np.array([0.0, np.radians(yaw), 0.0]))
        views[f"cam{i:02d}"] = CameraSpec(official.width, official.height, official.fx, official.fy, official.cx,
                                          official.cy, official.world_to_camera @ np.linalg.inv(swing))
    names = list(views)
    for i in heldout:
        if not 0 <= i < len(names):
            raise ValueError(f"held-out view {i} does not exist (views 0..{len(names) - 1})")
    if len(set(heldout)) >= len(names):
        raise ValueError(f"all {len(names)} views are held out; leave at least one for training")
    return CameraRig(views, None, tuple(names[i] for i in sorted(set(heldout))))


def make_dataset(
    output_dir: Path,
    identity: int = 0,
    num_frames: int = 120,
    resolution: int = 256,
    eval_fraction: float = 0.15,
    seed: int = 0,
    drive_from: Optional[Path] = None,
    overwrite: bool = False,
    image_format: Literal["jpg", "png"] = "jpg",
    progress: bool = True,
    num_views: int = 1,
    view_layout: Literal["arc", "ring"] = "arc",
    view_spread: float = 120.0,
    heldout_views: Sequence[int] = (),
    detail: bool = False,
) -> Path:
    """Render a synthetic dataset in the ``format`` layout and return its directory.

    The last ``eval_fraction`` of the frames form ``eval/`` (held-out later frames, at least one).
    Motion and expressions come from ``(seed, identity)``, as does the background, so one seed
    gives each person a different performance in front of their own backdrop. With ``drive_from``
    (another synthetic dataset) this person is rendered with exactly that dataset's poses, scales,
    expressions, camera, splits and numbering: the ground truth of cross-identity reenactment.

    ``num_views`` > 1 renders a synchronised multi-view capture instead: every moment seen by
    cameras on an arc (``view_spread`` degrees) or a ring around the head (:func:`camera_rig`),
    each with its own backdrop; ``heldout_views`` (indices) are marked in ``camera.json`` as
    never used for training.

    ``detail`` renders the detailed head (``render_head(..., detail=True)``) and, for its own
    performance, the wider expression repertoire (``sample_expressions(..., detail=True)``); a
    driven dataset keeps its driver's expressions. :func:`region_boxes_of_frame` gives any
    synthetic frame's mouth and eye boxes.
    """
    output_dir = Path(output_dir)
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8 pixels, got {resolution}")
    ident = HeadIdentity.preset(identity)
    motion_seed, expression_seed, background_seed = _dataset_seeds(seed, identity)
    rig: Optional[CameraRig] = None
    if num_views > 1:
        if drive_from is not None:
            raise ValueError("drive_from replays a single-camera dataset; it cannot be combined with num_views > 1")
        yaws = view_yaws(num_views, view_layout, view_spread)
        rig = camera_rig(resolution, yaws, heldout_views)
    elif num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    elif heldout_views:
        raise ValueError("held-out views need a multi-view capture (num_views > 1)")
    if drive_from is not None:
        drive_from = Path(drive_from)
        if drive_from.resolve() == output_dir.resolve():
            raise DatasetError(f"{output_dir}: a dataset cannot be driven by itself")
        frames, driver_camera = _driver_frames(drive_from)
        camera = driver_camera.rescaled(resolution, max(int(round(resolution * driver_camera.height
                                                                       / driver_camera.width)), 1))
    else:
        frames = _own_frames(num_frames, eval_fraction, motion_seed, expression_seed, detail)
        camera = CameraSpec.official(resolution)
    _clear_output(output_dir, overwrite)
    if rig is None:
        write_camera(output_dir, camera)
        views: Dict[Optional[str], CameraSpec] = {None: camera}
    else:
        write_rig(output_dir, rig)
        views = dict(rig.views)
    for split in SPLITS:
        (output_dir / split).mkdir(exist_ok=True)
    backgrounds = {name: make_background(camera.width, camera.height, background_seed + i)
                   for i, name in enumerate(views)}
    from PIL import Image
    from rich.progress import track

    shots = [(frame, name) for frame in frames for name in views]
    for frame, name in track(shots, description=f"Rendering {output_dir.name}", disable=not progress):
        rgb, mask = render_head(ident, frame.expression, frame.pose, frame.scale, views[name], backgrounds[name],
                                detail=detail)
        paths = frame_paths(output_dir / frame.split, frame.index, f".{image_format}", view=name)
        image = Image.fromarray(_to_uint8(rgb))
        image.save(paths.image, **({"quality": 95} if image_format == "jpg" else {}))
        Image.fromarray(_to_uint8(mask)).save(paths.mask)
        if paths.params.exists():  # a moment's params are written with its first view
            continue
        save_params(paths.params, FrameParams(pose=frame.pose, scale=frame.scale, extra={
            "expression": frame.expression.to_array(),
            "identity": np.array([identity], dtype=np.int64),
            "frame": np.array([frame.frame], dtype=np.int64),
        }))
    counts = {split: sum(f.split == split for f in frames) for split in SPLITS}
    info = {
        "identity": identity,
        "identity_params": asdict(ident),
        "seed": seed,
        "resolution": [camera.width, camera.height],
        "num_frames": len(frames),
        "num_train": counts["train"],
        "num_eval": counts["eval"],
        "image_format": image_format,
        "expression_keys": list(EXPRESSION_KEYS),
        "face_region": FACE_REGION,
        "drive_from": str(drive_from) if drive_from is not None else None,
        "detail": bool(detail),
    }
    if rig is not None:
        info.update({"num_views": num_views, "view_layout": view_layout, "view_spread": view_spread,
                     "view_yaws_deg": yaws.round(6).tolist(),
                     "views": rig.names, "heldout_views": list(rig.heldout_views)})
    (output_dir / SYNTH_FILE).write_text(json.dumps(info, indent=2))
    return output_dir


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Command line


@dataclass
class SynthConfig:
    """Render a procedural head dataset with exact ground-truth pose and expression.

    Render another identity with --drive-from pointing at a first dataset to get the ground truth of
    cross-identity reenactment: the second person making the first one's poses and expressions.
    """

    output_dir: Path
    """Where to write the dataset (must be empty unless --overwrite)."""
    identity: int = 0
    """Which person: 0-3 are hand-made presets, larger numbers are seeded random people."""
    num_frames: int = 120
    """Frames of synthetic video (ignored with --drive-from)."""
    resolution: int = 256
    """Image width and height in pixels."""
    eval_fraction: float = 0.15
    """Share of the last frames held out as eval/ (ignored with --drive-from)."""
    seed: int = 0
    """Seed of the motion, expressions and background, mixed with the identity (with --drive-from: the background)."""
    drive_from: Optional[Path] = None
    """Another synthetic dataset whose poses and expressions this identity replays exactly."""
    image_format: Literal["jpg", "png"] = "jpg"
    """Frame image format (masks are always png)."""
    overwrite: bool = False
    """Replace the dataset (train/, eval/, camera.json, synth.json) in a non-empty output directory."""
    num_views: int = 1
    """Synchronised cameras (more than 1: a multi-view capture, images named img_<moment>_camNN)."""
    view_layout: Literal["arc", "ring"] = "arc"
    """Where the cameras stand: an arc in front of the face or a ring all around the head."""
    view_spread: float = 120.0
    """Arc layout: degrees from the leftmost to the rightmost camera (the ring always spans 360)."""
    heldout_views: Tuple[int, ...] = ()
    """Indices of the views kept out of training for novel-view evaluation (e.g. --heldout-views 1 3)."""
    detail: bool = False
    """Render the detailed head, with the detail a real face has: textured skin and hair, white eyes with a
    dark limbal ring, outlined lips, separated teeth, a dark mouth and specular highlights, and sample
    wider expressions (winks, wide-open mouth). A smooth head is easy to fit, so a benchmark's PSNR on
    it says little about an avatar; on the detailed one it measures detail and expressiveness."""


def main() -> None:
    import tyro

    cfg = tyro.cli(SynthConfig)
    try:
        out = make_dataset(cfg.output_dir, identity=cfg.identity, num_frames=cfg.num_frames,
                           resolution=cfg.resolution, eval_fraction=cfg.eval_fraction, seed=cfg.seed,
                           drive_from=cfg.drive_from, overwrite=cfg.overwrite, image_format=cfg.image_format,
                           num_views=cfg.num_views, view_layout=cfg.view_layout, view_spread=cfg.view_spread,
                           heldout_views=cfg.heldout_views, detail=cfg.detail)
    except (DatasetError, FileExistsError, ValueError) as err:
        sys.exit(f"error: {err}")
    info = json.loads((out / SYNTH_FILE).read_text())
    source = f", driven by {cfg.drive_from}" if cfg.drive_from is not None else ""
    source += ", detailed head" if cfg.detail else ""
    if cfg.num_views > 1:
        heldout = ", ".join(info["heldout_views"]) or "none"
        source += f", {cfg.num_views} views ({cfg.view_layout}; held out: {heldout})"
    print(f"Wrote {out}: identity {cfg.identity}, {info['num_train']} train + {info['num_eval']} eval frames "
          f"at {info['resolution'][0]}x{info['resolution'][1]}{source}")


if __name__ == "__main__":
    main()
