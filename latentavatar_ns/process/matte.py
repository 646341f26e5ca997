"""Foreground mattes: MediaPipe's selfie (person) segmentation, clipped to the canonical box.

The person segmenter also keeps shoulders and torso, which the avatar's field cannot hold (it
lives in the canonical head box). The matte written is the segmentation times the set of pixels
whose rays pass through the box for that frame's pose, so the mask loss never asks the field for
a body it has no room for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jaxtyping import Float

from latentavatar_ns.process.face import import_mediapipe


class SelfieSegmenter:
    """Person confidence in [0, 1] per source pixel."""

    def __init__(self, model_path: Path):
        mp, BaseOptions, vision = import_mediapipe()
        self._mp = mp
        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        self._segmenter = vision.ImageSegmenter.create_from_options(options)

    def __call__(self, rgb: np.ndarray) -> Float[np.ndarray, "H W"]:
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._segmenter.segment(image)
        conf = np.asarray(result.confidence_masks[-1].numpy_view(), dtype=np.float32)
        return np.clip(conf.reshape(rgb.shape[:2]), 0.0, 1.0)

    def close(self) -> None:
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None

    def __enter__(self) -> "SelfieSegmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
