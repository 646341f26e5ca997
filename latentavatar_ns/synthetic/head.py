"""The synthetic person: identity and expression parameters, and where the face's features sit.

Canonical head space is the official one: x right, y up, z toward the camera (the face looks
along +z), everything inside ``format.OFFICIAL_BOX`` with a margin. A world point is
``R (S x) + T`` (``poses.head_to_world``); the camera is ``CameraSpec.official``.

Because a head's expression is a handful of parameters (:class:`Expression`), a synthetic dataset
can render "avatar A making actor B's expression" exactly, which gives cross-identity reenactment a
real error figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple, Union

import numpy as np

from latentavatar_ns.data.face_crop import DEFAULT_FACE_CENTER, DEFAULT_FACE_HALF_SIZE

Vec3 = Tuple[float, float, float]

EXPRESSION_KEYS = ("jaw_open", "smile", "blink_left", "blink_right", "brow_raise", "gaze_x", "gaze_y")
"""The order of :meth:`Expression.to_array` and of the ``expression`` key in params files."""

FACE_REGION: Dict[str, object] = {"center": DEFAULT_FACE_CENTER, "half_width": DEFAULT_FACE_HALF_SIZE,
                                  "half_height": DEFAULT_FACE_HALF_SIZE}
"""Canonical square facing +z (x in [-1, 1], y in [-1.25, 0.75] at z = 0.85) whose projection is
the encoder's face crop: raised brows to dropped chin, cheek to cheek; the square of ``face_crop``'s defaults."""

# Where the features sit in canonical space (geometry, paint and tests share them).
EYE_X, EYE_Y = 0.30, 0.25
MOUTH_Y = -0.55
NOSE_TIP = (0.0, -0.27, 0.97)
"""Front-most point of the nose, the same for every identity (handy for checking projections)."""
NECK_BOTTOM = -1.72
HEAD_SCALE = 0.1
"""Mean head scale S: head and neck fill about 80% of the frame height of the official camera."""


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

    def to_blendshapes(self) -> np.ndarray:
        """The ARKit blendshape weights (52, MediaPipe's order) this expression is, exactly: what a perfect
        face tracker would report for the synthetic head. Gaze toward +x is the subject's left."""
        from latentavatar_ns.blendshapes.names import index

        weights = np.zeros(52, dtype=np.float32)
        clip = lambda v: float(np.clip(v, 0.0, 1.0))  # noqa: E731
        pairs = {"jawOpen": self.jaw_open, "mouthSmileLeft": self.smile, "mouthSmileRight": self.smile,
                 "eyeBlinkLeft": self.blink_left, "eyeBlinkRight": self.blink_right, "browInnerUp": self.brow_raise,
                 "browOuterUpLeft": self.brow_raise, "browOuterUpRight": self.brow_raise,
                 "eyeLookOutLeft": self.gaze_x, "eyeLookInRight": self.gaze_x,
                 "eyeLookInLeft": -self.gaze_x, "eyeLookOutRight": -self.gaze_x,
                 "eyeLookUpLeft": self.gaze_y, "eyeLookUpRight": self.gaze_y,
                 "eyeLookDownLeft": -self.gaze_y, "eyeLookDownRight": -self.gaze_y}
        for name, value in pairs.items():
            weights[index(name)] = clip(value)
        return weights

    @classmethod
    def from_array(cls, values: Union[Sequence[float], np.ndarray]) -> "Expression":
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size != len(EXPRESSION_KEYS):
            raise ValueError(f"an expression has {len(EXPRESSION_KEYS)} values {EXPRESSION_KEYS}, got {arr.size}")
        return cls(**{k: float(v) for k, v in zip(EXPRESSION_KEYS, arr)})


CANONICAL_REGIONS: Dict[str, Tuple[Vec3, Vec3]] = {
    "mouth": ((-0.37, MOUTH_Y - 0.3, 0.53), (0.37, MOUTH_Y + 0.11, 0.84)),
    "eyes": ((-EYE_X - 0.15, EYE_Y - 0.1, 0.58), (EYE_X + 0.15, EYE_Y + 0.14, 0.81)),
}
"""Canonical boxes (lo, hi) around the surfaces where expressions show, for every identity and
expression. ``mouth``: the lips (with their outline) at the widest smile and the jaw fully open,
and so everything seen through the opening (teeth, tongue); the chin moving down is outside it.
``eyes``: both eyes with their lids, lashes and creases, below the brows. Depths span the
front surfaces of all identities, so the projected box holds the region in any head pose."""

