"""Video and image writing with the ffmpeg binary that ships in the imageio-ffmpeg wheel."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _ffmpeg() -> None:
    import imageio_ffmpeg
    import mediapy

    mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 25.0) -> Path:
    """Write (H, W, 3) frames (float in [0, 1] or uint8) as an H.264 mp4; sides are padded to even."""
    import mediapy

    _ffmpeg()
    frames = [to_uint8(f) for f in frames]
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mediapy.write_video(path, np.stack(frames), fps=fps)
    return path


def read_video(path: Path) -> np.ndarray:
    """(N, H, W, 3) uint8 frames (read with imageio-ffmpeg: mediapy's reader passes flags newer ffmpeg dropped)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    return np.stack([np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3) for buf in reader])


def to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
