"""Novel-view videos of a trained avatar around its head (``ns-latentavatar-render``).

nerfstudio's ``ns-render spiral`` only accepts ray-based datamanagers; these paths circle the
canonical head (the avatar's own centre) instead of a point in front of the first camera. The
expression plays through the training frames over the video, or stays at ``--frame``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from latentavatar_ns.utils.errors import LatentAvatarError


class RenderError(LatentAvatarError, ValueError):
    """Bad arguments; printed as one ``error:`` line."""


@dataclass
class _RenderPath:
    load_config: Path
    """config.yml of a trained latentavatar run."""
    output_path: Path = Path("turntable.mp4")
    """The video to write (mp4)."""
    seconds: float = 4.0
    """Length of the video."""
    fps: float = 24.0
    """Frames per second."""
    degrees: float = 30.0
    """How far the view turns from frontal, in degrees."""
    frame: Optional[int] = None
    """Show this frame's expression throughout (an index into the stored codes: training frames, then held-out
    frames); by default the training frames play over the video."""
    overwrite: bool = False
    """Replace an existing output file."""

    def angles(self, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(yaw, pitch) in degrees at times t in [0, 1)."""
        raise NotImplementedError


@dataclass
class Turntable(_RenderPath):
    """The head turns left and right (yaw = degrees * sin(2 pi t))."""

    def angles(self, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return self.degrees * np.sin(2 * np.pi * t), np.zeros_like(t)


@dataclass
class Spiral(_RenderPath):
    """The view spirals out from frontal to ``degrees`` and back in (pitch at half the yaw's reach)."""

    output_path: Path = Path("spiral.mp4")
    rotations: int = 2
    """Turns around the head over the video."""

    def angles(self, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        reach = self.degrees * np.sin(np.pi * t)
        phase = 2 * np.pi * self.rotations * t
        return reach * np.sin(phase), 0.5 * reach * np.cos(phase)


def render_path(cfg: _RenderPath) -> Path:
    """Render the video of a path (a :class:`Turntable` or a :class:`Spiral`) and return where it was written."""
    import torch
    from nerfstudio.utils.eval_utils import eval_setup
    from rich.progress import track

    from latentavatar_ns.utils.video import write_video
    from latentavatar_ns.utils.views import frontal_camera, orbit, with_codes

    if not Path(cfg.load_config).is_file():
        raise RenderError(f"{cfg.load_config}: avatar config not found (pass the config.yml of a latentavatar run)")
    if Path(cfg.output_path).exists() and not cfg.overwrite:
        raise RenderError(f"{cfg.output_path} already exists; pass --overwrite to replace it")
    if cfg.seconds <= 0 or cfg.fps <= 0:
        raise RenderError(f"--seconds and --fps must be positive (got {cfg.seconds}, {cfg.fps})")
    _, pipeline, _, _ = eval_setup(Path(cfg.load_config), test_mode="test")
    model = pipeline.model
    total = model.frame_codes.shape[0]
    if cfg.frame is not None and not 0 <= cfg.frame < total:
        raise RenderError(f"--frame {cfg.frame} is out of range: the avatar stores {total} frames (0..{total - 1})")
    steps = max(int(round(cfg.seconds * cfg.fps)), 1)
    t = np.arange(steps) / steps
    yaws, pitches = cfg.angles(t)
    codes = (np.full(steps, cfg.frame) if cfg.frame is not None
             else np.linspace(0, model.num_train_frames - 1, steps).round().astype(int))
    parser = pipeline.datamanager.dataparser
    cameras = with_codes(orbit(frontal_camera(parser), yaws, pitches), codes)  # type: ignore[arg-type]

    def frames():
        with torch.no_grad():
            for i in track(range(steps), description="Rendering", transient=True):
                yield model.get_outputs_for_camera(cameras[i:i + 1])["rgb"].cpu().numpy()

    return write_video(cfg.output_path, frames(), fps=cfg.fps)

