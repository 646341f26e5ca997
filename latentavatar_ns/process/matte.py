"""Foreground mattes: MediaPipe's selfie (person) segmentation, or Robust Video Matting, clipped to
the canonical box.

The person segmenter also keeps shoulders and torso, which the avatar's field cannot hold (it
lives in the canonical head box). The matte written is the segmentation times the set of pixels
whose rays pass through the box for that frame's pose, so the mask loss never asks the field for
a body it has no room for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jaxtyping import Float

from latentavatar_ns.process.face import MissingDependencyError, import_mediapipe


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


ONNXRUNTIME_INSTALL = "pip install 'onnxruntime==1.20.1' (or: pip install -e '.[matting]')"


class RobustVideoMatting:
    """Robust Video Matting (Lin et al. 2021, MobileNetV3, ONNX): a soft alpha with hair detail.

    It is recurrent, so frames must come in video order; its state carries over between calls.
    The network runs at ``max_side`` pixels on the longer side internally (its downsample ratio).
    """

    def __init__(self, model_path: Path, max_side: int = 512, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise MissingDependencyError(f"onnxruntime is not installed ({err}); run: {ONNXRUNTIME_INSTALL}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._max_side = max_side
        self._state = [np.zeros((1, 1, 1, 1), dtype=np.float32)] * 4

    def __call__(self, rgb: np.ndarray) -> Float[np.ndarray, "H W"]:
        h, w = rgb.shape[:2]
        ratio = np.array([min(1.0, self._max_side / max(h, w))], dtype=np.float32)
        src = (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        _, pha, *self._state = self._session.run(None, {
            "src": src, "r1i": self._state[0], "r2i": self._state[1], "r3i": self._state[2],
            "r4i": self._state[3], "downsample_ratio": ratio})
        return np.clip(pha[0, 0], 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> "RobustVideoMatting":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
