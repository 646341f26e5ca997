"""A driver's face video read for driving by blendshapes: each frame's 52 weights and head pose, in memory.

No dataset is written: the frames are decoded once, MediaPipe's landmarker gives the blendshapes
and landmarks, and the head pose is fitted to the landmarks as ``ns-latentavatar-process`` fits it
(the same template, field of view and virtual camera), so that reenactment can move the avatar's
head by the driver's motion relative to the driver's mean pose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import numpy as np
from jaxtyping import Float

from latentavatar_ns.process import geometry as geo
from latentavatar_ns.process.decode import FrameSource, InputError


@dataclass
class VideoTrack:
    """What the landmarker found in the frames that have a face (frames without one are left out)."""

    weights: Float[np.ndarray, "T 52"]
    poses: Float[np.ndarray, "T 6"]
    """Dataset poses (axis-angle and translation in metres, the virtual camera of ns-latentavatar-process)."""
    scale: float
    """The head scale those poses go with."""
    source_frames: List[int]
    """Index of each kept frame in the video."""
    frames: List[np.ndarray] = field(default_factory=list)
    """The kept frames, when asked for (``keep_frames_height``), resized to that height."""
    decoded: int = 0
    landmarker_ms: float = 0.0
    """Mean landmarker time per decoded frame."""

    def __len__(self) -> int:
        return len(self.weights)


def track_video(path: Path, detect: Callable, template_cm: np.ndarray, rigid_ids: np.ndarray,
                stride: int = 1, max_frames: Optional[int] = None, fov_degrees: float = 60.0,
                keep_frames_height: int = 0, progress: Callable[[Iterable, int], Iterable] = lambda it, n: it
                ) -> VideoTrack:
    """Decode ``path`` (a video or an image folder) and track every frame with ``detect`` (a landmarker's
    ``detect``: an (H, W, 3) uint8 image to a detection with ``landmarks`` and ``blendshapes``, or None)."""
    import cv2

    source = FrameSource(path, stride=stride, max_frames=max_frames)
    weights, fits, indices, frames = [], [], [], []
    decoded, seconds, size = 0, 0.0, None
    for frame in progress(source, len(source)):
        decoded += 1
        size = frame.rgb.shape[1], frame.rgb.shape[0]
        start = time.perf_counter()
        found = detect(frame.rgb)
        seconds += time.perf_counter() - start
        if found is None:
            continue
        K = geo.source_intrinsics(size[0], size[1], fov_degrees)
        fit = geo.fit_head_pose(template_cm[rigid_ids], found.landmarks[rigid_ids], K)
        if fit is None:
            continue
        weights.append(np.asarray(found.blendshapes, dtype=np.float64))
        fits.append(fit)
        indices.append(frame.index)
        if keep_frames_height > 0:
            h, w = frame.rgb.shape[:2]
            frames.append(cv2.resize(frame.rgb, (max(round(w * keep_frames_height / h), 1), keep_frames_height),
                                     interpolation=cv2.INTER_AREA))
    if decoded == 0:
        raise InputError(f"{path}: no frames could be decoded")
    if not fits:
        raise InputError(f"{path}: no face found in any of its {decoded} frames")
    mean_depth = float(np.mean([geo.head_origin_in_camera(r, t)[2] for r, t in fits])) * 0.01
    w2c = geo.virtual_world_to_camera(mean_depth)
    poses = np.stack([geo.dataset_pose(r, t, w2c) for r, t in fits])
    return VideoTrack(np.stack(weights), poses, geo.HEAD_SCALE_M, indices, frames, decoded,
                      1000 * seconds / decoded)
