"""Ray casting's building blocks: rays, convex primitives, and the vector and noise maths of the paint.

Everything here works in canonical head space on flat float arrays, one row per ray or point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np


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


def _box_corners(lo: Union[Sequence[float], np.ndarray], hi: Union[Sequence[float], np.ndarray]) -> np.ndarray:
    """(8, 3) corners of the axis-aligned box [lo, hi]."""
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
