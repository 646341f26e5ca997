"""Video and image writing with the ffmpeg binary that ships in the imageio-ffmpeg wheel."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable

import numpy as np

from latentavatar_ns.utils.image import to_uint8
from latentavatar_ns.utils.io import atomic_write


def _ffmpeg() -> None:
    import imageio_ffmpeg
    import mediapy

    mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = 25.0) -> Path:
    """Stream (H, W, 3) frames (float in [0, 1] or uint8) into an H.264 mp4; sides are padded to even.

    Frames are encoded as they come (a generator keeps memory flat over long videos), into a
    temporary file renamed into place at the end, so a crash never leaves half a video at ``path``.
    """
    import mediapy

    _ffmpeg()
    frames = iter(frames)
    try:
        first = to_uint8(next(frames))
    except StopIteration:
        raise ValueError(f"{path}: no frames to write") from None
    h, w = first.shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    path = Path(path)
    with atomic_write(path) as tmp:
        with mediapy.VideoWriter(tmp, shape=(h + h % 2, w + w % 2), fps=fps) as writer:
            for frame in itertools.chain([first], frames):
                frame = to_uint8(frame)
                writer.add_image(np.pad(frame, pad, mode="edge") if h % 2 or w % 2 else frame)
    return path


def read_video(path: Path) -> np.ndarray:
    """(N, H, W, 3) uint8: every decoded frame of a video (the process command's ``FrameSource``, all at once)."""
    from latentavatar_ns.process.decode import FrameSource

    return np.stack([frame.rgb for frame in FrameSource(path)])
