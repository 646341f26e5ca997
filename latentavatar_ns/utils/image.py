"""Image conversions shared by every writer of png, jpg and video frames."""

from __future__ import annotations

import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit pixels of an image in [0, 1] (clipped, rounded half up); uint8 input is returned as it is."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
