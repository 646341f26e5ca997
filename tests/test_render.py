"""``ns-latentavatar-render``: turntable and spiral videos around the head, streamed video writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentavatar_ns.render.novel_views import Spiral, Turntable
from latentavatar_ns.scripts.render import entrypoint
from latentavatar_ns.utils.video import read_video, write_video


def test_write_video_streams_a_generator_and_leaves_no_partial_file(tmp_path: Path):
    out = tmp_path / "v.mp4"
    frames = (np.full((30, 41, 3), i * 20, dtype=np.uint8) for i in range(5))  # odd width: padded to even
    write_video(out, frames, fps=10)
    video = read_video(out)
    assert video.shape == (5, 30, 42, 3)
    assert abs(float(video[4].mean()) - 80.0) < 3.0

    def failing():
        yield np.zeros((8, 8, 3), dtype=np.uint8)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "w.mp4", failing())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.mp4", [])


def test_paths_start_frontal_and_turn():
    t = np.arange(8) / 8
    yaw, pitch = Turntable(Path("c.yml"), degrees=30).angles(t)
    assert yaw[0] == 0 and np.isclose(yaw.max(), 30) and not pitch.any()
    yaw, pitch = Spiral(Path("c.yml"), degrees=20).angles(np.arange(64) / 64)
    assert yaw[0] == 0 and pitch[0] == 0 and np.abs(yaw).max() <= 20 and np.abs(pitch).max() > 5


@pytest.mark.slow
def test_turntable_and_spiral_videos(tiny_trained_run: Path, tmp_path: Path):
    out = tmp_path / "turn.mp4"
    entrypoint(["turntable", "--load-config", str(tiny_trained_run), "--output-path", str(out), "--seconds", "1",
          "--fps", "6", "--degrees", "40"])
    video = read_video(out)
    assert video.shape == (6, 64, 64, 3)
    assert np.abs(video[0].astype(float) - video[1].astype(float)).mean() > 1.0  # the view turned
    entrypoint(["spiral", "--load-config", str(tiny_trained_run), "--output-path", str(tmp_path / "s.mp4"), "--seconds",
          "0.5", "--fps", "8", "--frame", "3"])
    assert read_video(tmp_path / "s.mp4").shape[0] == 4
    with pytest.raises(SystemExit, match=r"s.mp4 already exists; pass --overwrite"):
        entrypoint(["spiral", "--load-config", str(tiny_trained_run), "--output-path", str(tmp_path / "s.mp4")])
    with pytest.raises(SystemExit, match=r"--frame 999 is out of range"):
        entrypoint(["spiral", "--load-config", str(tiny_trained_run), "--output-path", str(tmp_path / "t.mp4"),
              "--frame", "999"])
    assert not (tmp_path / "t.mp4").exists()
