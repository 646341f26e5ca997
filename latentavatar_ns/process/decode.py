"""Frame sources: any video ffmpeg can read, or a folder of images, streamed with a stride."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
from jaxtyping import UInt8

from latentavatar_ns.utils.errors import LatentAvatarError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class InputError(LatentAvatarError, ValueError):
    """Unreadable or unusable input; the message names the file and the problem, on one line."""


@dataclass
class Frame:
    index: int
    """Position in the source (before the stride)."""
    rgb: UInt8[np.ndarray, "H W 3"]


@dataclass
class FrameSource:
    """A video file or an image folder, read lazily (a long video never sits in memory)."""

    path: Path
    stride: int = 1
    max_frames: Optional[int] = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.exists():
            raise InputError(f"{self.path}: input does not exist")
        if self.stride < 1:
            raise InputError(f"{self.path}: frame stride must be at least 1, got {self.stride}")
        if self.path.is_dir():
            self._images: List[Path] = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise InputError(f"{self.path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            self.fps = 0.0
            self._count = len(self._images)
        else:
            self.fps, self._count = self._probe()

    @property
    def is_video(self) -> bool:
        return not self.path.is_dir()

    def _probe(self) -> Tuple[float, int]:
        import imageio_ffmpeg

        try:
            reader = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")
            meta = next(reader)
            reader.close()
        except (RuntimeError, OSError, StopIteration) as err:
            first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise InputError(f"{self.path}: cannot decode as a video ({first})") from None
        fps = float(meta.get("fps") or 0.0)
        duration = float(meta.get("duration") or 0.0)
        return fps, int(math.ceil(fps * duration)) if fps > 0 and duration > 0 else 0

    def __len__(self) -> int:
        """Frames this source yields (an estimate from the container's duration for videos)."""
        n = math.ceil(self._count / self.stride) if self._count else 0
        return min(n, self.max_frames) if self.max_frames else n

    def __iter__(self) -> Iterator[Frame]:
        """The kept frames, decoded afresh on every iteration; nothing past ``max_frames`` is decoded."""
        for index, rgb in itertools.islice(self._strided(), self.max_frames):
            yield Frame(index, rgb)

    def _strided(self) -> Iterator[Tuple[int, np.ndarray]]:
        if not self.is_video:
            from PIL import Image

            for i, path in enumerate(self._images):
                if i % self.stride:  # skipped images are never read
                    continue
                try:
                    with Image.open(path) as img:
                        yield i, np.asarray(img.convert("RGB"))
                except Exception as err:
                    raise InputError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None
            return
        import imageio_ffmpeg

        # Every decoded frame once: ffmpeg's default constant-rate output duplicates frames of
        # variable-frame-rate phone videos (one sample .mov decodes to 765 frames instead of 169).
        reader = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24",
                                            output_params=["-fps_mode", "passthrough"])
        try:
            w, h = next(reader)["size"]
            for i, buf in enumerate(reader):
                if i % self.stride == 0:
                    yield i, np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
        except RuntimeError as err:
            raise InputError(f"{self.path}: decoding failed ({str(err).strip().splitlines()[-1]})") from None
        finally:
            reader.close()
