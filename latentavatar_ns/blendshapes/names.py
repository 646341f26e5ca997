"""The 52 blendshape weights this project stores and reads, and what other tools call them."""

from __future__ import annotations

from typing import Dict, Tuple

BLENDSHAPE_NAMES: Tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
"""MediaPipe FaceLandmarker's blendshape categories in its output order: the ARKit names, with MediaPipe's
``_neutral`` where ARKit has ``tongueOut``. A params file's ``blendshapes`` (52,) follows this order."""

ARKIT_NAMES: Tuple[str, ...] = BLENDSHAPE_NAMES[1:]
"""The 51 that ARKit, Live Link Face and animation tools share with MediaPipe."""

LIVELINK_COLUMNS: Dict[str, str] = {name[0].upper() + name[1:]: name for name in ARKIT_NAMES}
"""Live Link Face's CSV column (``JawOpen``) of each shared blendshape (``jawOpen``)."""

SCORED: Dict[str, Tuple[str, ...]] = {
    "jaw_open": ("jawOpen",),
    "smile": ("mouthSmileLeft", "mouthSmileRight"),
    "blink_left": ("eyeBlinkLeft",),
    "blink_right": ("eyeBlinkRight",),
    "brow_raise": ("browInnerUp",),
}
"""The expressions the expression score compares (several blendshapes are averaged)."""


def index(name: str) -> int:
    """Position of a blendshape in :data:`BLENDSHAPE_NAMES`."""
    return BLENDSHAPE_NAMES.index(name)
