"""One synthetic head with one expression: the geometry of its primitives and the paint on them.

The head is a union of convex primitives (ellipsoids, a clipped cylinder). Hair, eyelids and the
mouth are "shells with holes": where a primitive's entry point falls in its hole the primitive is
skipped and the ray goes on to what lies behind it (scalp, eyeball, mouth interior). Every colour
is a function of the canonical surface point and the light is fixed to the head, so each frame is a
view of one static canonical radiance field per expression: what the avatar models, with no
lighting changes it could not learn.

``detail=True`` paints the harder head a real face is: skin and hair texture (procedural noise in
canonical coordinates, so it moves rigidly with the head), crisp eyes with white sclera and a dark
limbal ring, outlined lips, separated teeth, a very dark mouth and Blinn-Phong highlights of the
same head-fixed light. Highlights are the one view-dependent part of the radiance: still a static
canonical field per expression, but one a view-independent colour cannot fit exactly.

Over 400 lines because it is one class: the paint reads the same feature curves (mouth opening,
eyelid edges) and primitives the geometry cuts its holes with, so splitting it would scatter them.
"""

from __future__ import annotations

import zlib
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from latentavatar_ns.synthetic.head import EYE_X, EYE_Y, MOUTH_Y, NECK_BOTTOM, NOSE_TIP, Expression, HeadIdentity
from latentavatar_ns.synthetic.primitives import (
    _Cylinder,
    _Ellipsoid,
    _normalize,
    _Rays,
    _smoothstep,
    _sqnorm,
    _tilt,
    _value_noise,
)

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


def _lambert(n: np.ndarray) -> np.ndarray:
    return (_AMBIENT + (1.0 - _AMBIENT) * np.clip(n @ _LIGHT, 0.0, 1.0))[:, None]



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
        parts: Tuple[Union[_Ellipsoid, _Cylinder], ...] = (self.hair, self.lower_face, self.chin, self.neck,
                                                            self.nose_tip, *self.ears)
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

        skin_parts: List[Union[_Ellipsoid, _Cylinder]] = [self.skull, self.lower_face, self.chin, *self.ears,
                                                          self.neck]
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
            # (mypy cannot infer lambdas with default arguments)
            add(self._shell(sub, self.lids[side], lambda p, s=side: ~self._in_lid_opening(s, p)),  # type: ignore[misc]
                lambda p, s=side: self._lid_color(s, p), near)  # type: ignore[misc]
            add(self.eyeballs[side].entry(sub), lambda p, s=side: self._eye_color(s, p), near)  # type: ignore[misc]
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
