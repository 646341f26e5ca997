"""The expression panel in nerfstudio's viewer, and ns-render camera-path / interpolate on a trained avatar."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import List

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from clitools import BIN, free_port, run_cli

pytestmark = pytest.mark.slow  # every test here views a trained avatar or runs ns-render


@pytest.fixture(scope="module")
def viewer(tiny_trained_run: Path, tmp_path_factory):
    """A real nerfstudio Viewer (viser server on a free port) on the trained pipeline."""
    from nerfstudio.configs.base_config import ViewerConfig
    from nerfstudio.utils.eval_utils import eval_setup
    from nerfstudio.viewer.viewer import Viewer

    _, pipeline, _, _ = eval_setup(tiny_trained_run, test_mode="test")
    assert not pipeline.expression.active  # no viewer yet: camera-only renders use the camera's frame
    log = tmp_path_factory.mktemp("viewer") / "viewer_log.txt"
    state = Viewer(ViewerConfig(websocket_port=None, websocket_port_default=free_port()), log_filename=log,
                   datapath=pipeline.datamanager.get_datapath(), pipeline=pipeline)
    yield state, pipeline
    state.viser_server.stop()


def viewer_camera(pipeline, size: int = 48, time_value: float = 0.0):
    """The camera the viewer's render thread makes (nerfstudio's get_camera), at the first training view."""
    from nerfstudio.cameras.cameras import CameraType
    from nerfstudio.viewer.utils import CameraState, get_camera

    c2w = pipeline.datamanager.train_dataset.cameras.camera_to_worlds[0].double()
    return get_camera(CameraState(fov=np.radians(6.0), aspect=1.0, c2w=c2w, time=time_value,
                                  camera_type=CameraType.PERSPECTIVE, idx=0), size, size)


def frame_camera(pipeline, code_idx: int, size: int = 48):
    """The same view, naming a frame of the code table (as dataset cameras do)."""
    cam = viewer_camera(pipeline, size)
    cam.metadata = {"code_idx": torch.tensor([[code_idx]])}
    return cam


def render(pipeline, camera) -> torch.Tensor:
    return pipeline.model.get_outputs_for_camera(camera)["rgb"]


def test_panel_elements_are_installed_in_the_viewer(viewer):
    state, pipeline = viewer
    names = {element.name for _, element in state.viewer_elements}
    assert {"Training frame", "Held-out frame", "Blend with frame", "Blend", "Play"} <= names
    assert pipeline.expression.active
    # The panel replaces the control tab's time slider; the render panel keeps per-keyframe time.
    assert state.include_time and not state.control_panel._time_enabled
    # The preview resolution is capped at the training frames' size.
    assert state.control_panel.max_res == int(pipeline.datamanager.train_dataset.cameras.height.max())


def test_panel_choice_drives_viewer_renders(viewer):
    state, pipeline = viewer
    panel, model = pipeline.expression, pipeline.model
    last = model.num_train_frames - 1
    panel.choose_frame.value = 0
    first = render(pipeline, viewer_camera(pipeline))
    assert torch.allclose(first, render(pipeline, frame_camera(pipeline, 0)), atol=1e-5)
    panel.choose_frame.value = last
    time.sleep(0.2)  # viser runs element callbacks on its own threads
    moved = render(pipeline, viewer_camera(pipeline))
    assert (moved - first).abs().max() > 1e-4  # ten times the tolerance of equal renders below
    assert torch.allclose(moved, render(pipeline, frame_camera(pipeline, last)), atol=1e-5)

    # A held-out frame, then back to the slider.
    panel.choose_heldout.value = "held-out 1"
    time.sleep(0.2)
    heldout = render(pipeline, viewer_camera(pipeline))
    assert torch.allclose(heldout, render(pipeline, frame_camera(pipeline, model.num_train_frames + 1)), atol=1e-5)
    panel.choose_frame.value = 0
    time.sleep(0.2)
    assert panel.choose_heldout.value == "none"
    assert torch.allclose(render(pipeline, viewer_camera(pipeline)), first, atol=1e-5)

    # Blend: 0 is the chosen frame, 1 the other one, halfway something else.
    panel.mix_other.value = last
    panel.mix_weight.value = 1.0
    assert torch.allclose(render(pipeline, viewer_camera(pipeline)), moved, atol=1e-3)
    panel.mix_weight.value = 0.5
    half = render(pipeline, viewer_camera(pipeline))
    assert (half - first).abs().max() > 1e-4 and (half - moved).abs().max() > 1e-4
    panel.mix_weight.value = 0.0

    # Cameras that name their frame (dataset, eval) ignore the panel; so do renders with an image.
    item = pipeline.datamanager.eval_dataset.get_data(0)
    eval_cam = pipeline.datamanager.eval_dataset.cameras[0:1]
    from_image = pipeline.model.get_outputs_for_camera(eval_cam, batch=item)["rgb"]
    assert torch.allclose(from_image, pipeline.model.get_outputs_for_camera(eval_cam)["rgb"], atol=1e-5)


def test_render_panel_preview_follows_keyframe_time(viewer):
    state, pipeline = viewer
    panel, last = pipeline.expression, pipeline.model.num_train_frames - 1
    panel.choose_frame.value = 0
    state.render_tab_state.preview_render = True
    try:
        at_end = render(pipeline, viewer_camera(pipeline, time_value=1.0))
    finally:
        state.render_tab_state.preview_render = False
    assert torch.allclose(at_end, render(pipeline, frame_camera(pipeline, last)), atol=1e-5)


def test_play_advances_frames_and_depth_outputs_exist(viewer):
    state, pipeline = viewer
    panel = pipeline.expression
    panel.choose_frame.value = 0
    panel.play_fps.value = 30
    panel.play.value = True
    time.sleep(0.6)
    panel.play.value = False
    time.sleep(0.1)
    assert int(panel.choose_frame.value) >= 3
    out = pipeline.model.get_outputs_for_camera(viewer_camera(pipeline))
    assert out["depth"].shape == (48, 48, 1) and out["accumulation"].shape == (48, 48, 1)


# ----------------------------------------------------------------------------------------------
# ns-render


def camera_path_json(config: Path, times: List[float], size: int = 48) -> dict:
    """A render-panel camera path (nerfstudio's JSON) holding the first training view at each keyframe."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config, test_mode="inference")
    cam = pipeline.datamanager.train_dataset.cameras[0]
    c2w = torch.eye(4)
    c2w[:3] = cam.camera_to_worlds
    fov = float(np.degrees(2 * np.arctan(float(cam.cy) / float(cam.fy))))
    keyframes = [{"camera_to_world": c2w.reshape(-1).tolist(), "fov": fov, "aspect": 1.0, "render_time": t}
                 for t in times]
    return {"render_height": size, "render_width": size, "seconds": len(times) / 4.0, "camera_type": "perspective",
            "camera_path": keyframes}


def test_ns_render_camera_path_expression_from_time_or_chosen_frame(tiny_trained_run: Path, tmp_path: Path):
    from nerfstudio.cameras.camera_paths import get_path_from_json

    path = camera_path_json(tiny_trained_run, [0.0, 0.0, 1.0, 1.0])
    assert get_path_from_json(path).times is not None  # nerfstudio reads the keyframe times
    (tmp_path / "path.json").write_text(json.dumps(path))
    args = ["ns-render", "camera-path", "--load-config", str(tiny_trained_run), "--camera-path-filename",
            str(tmp_path / "path.json")]
    # Lossless frames: expressions of a briefly trained avatar differ by a few grey levels only.
    images = ["--output-format", "images", "--image-format", "png"]
    result = run_cli(args + images + ["--output-path", str(tmp_path / "timed"),
                                      "--rendered-output-names", "rgb", "depth", "accumulation"])
    assert result.returncode == 0, result.stderr[-3000:]
    timed = [imageio.imread(f) for f in sorted((tmp_path / "timed").glob("*.png"))]
    assert len(timed) == 4 and timed[0].shape == (48, 48 * 3, 3)  # rgb | depth | accumulation side by side
    # Same pose throughout: time 0 shows the first training frame, time 1 the last.
    assert np.array_equal(timed[0], timed[1]) and np.array_equal(timed[2], timed[3])
    assert not np.array_equal(timed[0][:, :48], timed[3][:, :48])

    result = run_cli(args + images + ["--output-path", str(tmp_path / "chosen"), "--camera-idx", "3"])
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = [imageio.imread(f) for f in sorted((tmp_path / "chosen").glob("*.png"))]
    assert np.array_equal(chosen[0], chosen[3])  # one chosen frame's expression throughout


def test_ns_render_interpolate(tiny_trained_run: Path, synthetic_dataset: Path, tmp_path: Path):
    from latentavatar_ns.utils.video import read_video

    # Video through ffmpeg, with no system ffmpeg on PATH: the bundled imageio-ffmpeg one is found.
    result = subprocess.run([str(BIN / "ns-render"), "interpolate", "--load-config", str(tiny_trained_run),
                             "--pose-source", "eval", "--interpolation-steps", "2",
                             "--output-path", str(tmp_path / "interp.mp4")], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    video = read_video(tmp_path / "interp.mp4")
    num_eval = len(list((synthetic_dataset / "eval").glob("img_*")))
    assert video.shape[1:] == (64, 64, 3) and len(video) >= num_eval
    assert video.std() > 5.0  # a head, not a blank frame
