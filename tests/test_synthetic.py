"""The procedural head: determinism, identities, expressions in the right places, datasets, driving."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentavatar_ns import synthetic as synth
from latentavatar_ns.data.format import (
    OFFICIAL_BOX,
    OFFICIAL_W2C,
    CameraSpec,
    DatasetError,
    list_frames,
    load_params,
    read_camera,
)
from latentavatar_ns.data.poses import axis_angle_to_matrix
from latentavatar_ns.scripts.synth import entrypoint
from latentavatar_ns.synthetic import (
    EXPRESSION_KEYS,
    FACE_REGION,
    Expression,
    HeadIdentity,
    canonical_to_pixel,
    make_background,
    make_dataset,
    region_boxes,
    region_boxes_of_frame,
    render_head,
    sample_expressions,
    sample_motion,
)
from latentavatar_ns.synthetic.scene import _Scene
from latentavatar_ns.synthetic.writer import _dataset_seeds

FRONT = np.array([0.0, 0.0, 0.0, 0.0, 0.013, 0.0])
SCALE = 0.1


def render(identity: int = 0, size: int = 96, pose: np.ndarray = FRONT, detail: bool = False, **expression) -> tuple:
    camera = CameraSpec.official(size)
    return render_head(HeadIdentity.preset(identity), Expression(**expression), pose, SCALE, camera,
                       make_background(size, size, seed=3), detail=detail)


def region(points: np.ndarray, size: int = 96, pad: int = 2) -> tuple:
    """Pixel slices (rows, cols) around canonical points seen in the frontal pose."""
    uv = canonical_to_pixel(np.asarray(points, dtype=np.float64), FRONT, SCALE, CameraSpec.official(size))
    (u0, v0), (u1, v1) = np.floor(uv.min(0)).astype(int) - pad, np.ceil(uv.max(0)).astype(int) + pad
    return slice(max(v0, 0), v1), slice(max(u0, 0), u1)


def test_rendering_and_sampling_are_deterministic():
    a, b = render(jaw_open=0.4, gaze_x=0.3), render(jaw_open=0.4, gaze_x=0.3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].dtype == np.float32 and a[0].shape == (96, 96, 3) and a[1].shape == (96, 96)
    assert a[0].min() >= 0.0 and a[0].max() <= 1.0
    poses, scales = sample_motion(30, seed=5)
    poses2, scales2 = sample_motion(30, seed=5)
    assert np.array_equal(poses, poses2) and np.array_equal(scales, scales2)
    assert not np.allclose(poses, sample_motion(30, seed=6)[0])
    assert sample_expressions(30, seed=5) == sample_expressions(30, seed=5)
    assert sample_expressions(30, seed=5) != sample_expressions(30, seed=6)
    assert HeadIdentity.preset(9) == HeadIdentity.preset(9) != HeadIdentity.preset(10)


def test_identities_differ():
    images = [render(i, size=64)[0] for i in range(5)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 0.02, (i, j)
    with pytest.raises(ValueError):
        HeadIdentity.preset(-1)


def test_expression_array_round_trip():
    e = Expression(jaw_open=0.5, smile=0.25, blink_left=1.0, blink_right=0.0, brow_raise=0.75, gaze_x=-0.5, gaze_y=0.5)
    arr = e.to_array()
    assert arr.dtype == np.float32 and arr.shape == (len(EXPRESSION_KEYS),)
    assert arr[EXPRESSION_KEYS.index("blink_left")] == 1.0
    assert Expression.from_array(arr) == e
    with pytest.raises(ValueError):
        Expression.from_array(np.zeros(6))


def test_expressions_change_their_own_region_only():
    neutral = render()[0]
    mouth = region([[-0.35, synth.MOUTH_Y + 0.1, 0.85], [0.35, -1.25, 0.85]])
    above_eyes = (slice(0, region([[0, synth.EYE_Y + 0.2, 0.8]], pad=0)[0].start), slice(None))
    left_eye = region([[synth.EYE_X - 0.18, synth.EYE_Y - 0.12, 0.8], [synth.EYE_X + 0.18, synth.EYE_Y + 0.14, 0.8]])
    right_eye = region([[-synth.EYE_X - 0.18, synth.EYE_Y - 0.12, 0.8], [-synth.EYE_X + 0.18, synth.EYE_Y + 0.14, 0.8]])
    brows = region([[-0.6, 0.45, 0.8], [0.6, 0.7, 0.8]])
    hair = (slice(0, region([[0, 1.0, 0.5]], pad=0)[0].start), slice(None))

    def changed(img, where):
        return np.abs(img - neutral)[where].max()

    jaw = render(jaw_open=1.0)[0]
    assert changed(jaw, mouth) > 0.3
    assert changed(jaw, above_eyes) < 1e-6
    blink = render(blink_left=1.0)[0]
    assert changed(blink, left_eye) > 0.3
    assert changed(blink, right_eye) < 1e-6 and changed(blink, mouth) < 1e-6 and changed(blink, hair) < 1e-6
    brow = render(brow_raise=1.0)[0]
    assert changed(brow, brows) > 0.2
    assert changed(brow, mouth) < 1e-6 and changed(brow, hair) < 1e-6
    gaze = render(gaze_x=1.0)[0]
    assert changed(gaze, left_eye) > 0.2 and changed(gaze, right_eye) > 0.2 and changed(gaze, mouth) < 1e-6
    smile = render(smile=1.0)[0]
    assert changed(smile, mouth) > 0.2 and changed(smile, hair) < 1e-6


def test_mask_covers_the_head_and_rgb_is_composited():
    size = 96
    rgb, mask = render(size=size)
    background = make_background(size, size, seed=3)
    assert 0.2 < mask.mean() < 0.6
    assert np.all(mask[:, :5] == 0) and np.all(mask[:, -5:] == 0)
    assert np.any((mask > 0.05) & (mask < 0.95)), "edges should be antialiased"
    bg_only = mask == 0
    assert np.allclose(rgb[bg_only], background[bg_only], atol=1e-6)
    assert np.all(background < 0.9), "the background must not be white"
    # Head and neck fill most of the frame height.
    rows = np.flatnonzero(mask.max(axis=1) > 0.5)
    assert 0.7 <= (rows[-1] - rows[0] + 1) / size <= 0.9


def test_canonical_points_land_on_the_right_pixels():
    """The nose tip, put through format's pose convention and the camera, is where the nose is drawn."""
    size = 160
    pose = np.array([0.12, 0.3, -0.05, 0.01, 0.015, 0.02])
    camera = CameraSpec.official(size)
    red = dataclasses.replace(HeadIdentity.preset(0), skin=(1.0, 0.0, 0.0))
    rgb, mask = render_head(red, Expression(), pose, SCALE, camera, np.zeros((size, size, 3)))
    u, v = canonical_to_pixel(np.array([synth.NOSE_TIP]), pose, SCALE, camera)[0]
    pixel = rgb[int(v), int(u)]
    assert mask[int(v), int(u)] == 1.0
    assert pixel[0] > 0.5 and pixel[1] < 0.05 and pixel[2] < 0.05
    # The eyes (white sclera, not skin) project where format says they are too.
    sclera = canonical_to_pixel(np.array([[synth.EYE_X + 0.1, synth.EYE_Y, 0.75]]), pose, SCALE, camera)[0]
    assert rgb[int(sclera[1]), int(sclera[0])][1] > 0.3
    # And the projection agrees with the world transform written by hand.
    world = axis_angle_to_matrix(pose[:3]) @ (SCALE * np.array(synth.NOSE_TIP)) + pose[3:]
    cam = camera.world_to_camera[:3, :3] @ world + camera.world_to_camera[:3, 3]
    assert np.allclose([u, v], (camera.K @ cam)[:2] / cam[2])


def test_head_stays_inside_the_canonical_box():
    lo, hi = np.array(OFFICIAL_BOX[0]), np.array(OFFICIAL_BOX[1])
    extreme = Expression(jaw_open=1.0, smile=1.0, brow_raise=1.0, gaze_x=1.0, gaze_y=1.0)
    for i in range(8):
        for expression in (Expression(), extreme):
            b_lo, b_hi = _Scene(HeadIdentity.preset(i), expression).bounds()
            assert np.all(b_lo > lo + 0.05) and np.all(b_hi < hi - 0.05), (i, b_lo, b_hi)
    centre = np.array(FACE_REGION["center"])
    assert centre.shape == (3,) and FACE_REGION["half_width"] > 0 and FACE_REGION["half_height"] > 0


def test_sequences_are_smooth_and_in_range():
    poses, scales = sample_motion(150, seed=1)
    angles = np.degrees(np.linalg.norm(poses[:, :3], axis=1))
    assert poses.shape == (150, 6) and scales.shape == (150,)
    assert angles.max() < 30.0 and np.abs(np.diff(poses, axis=0)).max() < 0.08
    assert np.all(np.abs(scales / synth.HEAD_SCALE - 1.0) <= 0.031)
    values = np.stack([e.to_array() for e in sample_expressions(150, seed=1)])
    assert np.all(values[:, :5] >= 0) and np.all(values[:, :5] <= 1) and np.all(np.abs(values[:, 5:]) <= 1)
    blink = values[:, 2:4].max(axis=1)
    assert blink.max() > 0.9 and (blink > 0.5).mean() < 0.2, "blinks are short events"
    assert values[:, 0].max() > 0.2 and values[:, 0].min() < 0.1, "the mouth opens and closes"


def test_dataset_layout_loads(tmp_path: Path):
    out = make_dataset(tmp_path / "a", identity=1, num_frames=10, resolution=48, eval_fraction=0.2, seed=4,
                       progress=False)
    train, evals = list_frames(out / "train"), list_frames(out / "eval")
    assert [f.index for f in train] == list(range(8)) and [f.index for f in evals] == [0, 1]
    camera = read_camera(out, 48, 48)
    assert np.isclose(camera.fx, 5000 * 48 / 512) and np.allclose(camera.world_to_camera, OFFICIAL_W2C)
    frames = []
    for f in train + evals:
        assert f.image.suffix == ".jpg" and f.mask.suffix == ".png" and f.mask.exists()
        params = load_params(f.params)
        assert params.extra["expression"].shape == (7,) and int(params.extra["identity"][0]) == 1
        frames.append(int(params.extra["frame"][0]))
        assert Image.open(f.image).size == (48, 48) and Image.open(f.mask).mode == "L"
    assert frames == list(range(10)), "eval holds the last frames"
    info = json.loads((out / synth.SYNTH_FILE).read_text())
    assert (info["num_train"], info["num_eval"], info["identity"], info["seed"]) == (8, 2, 1, 4)
    assert list_frames(make_dataset(tmp_path / "b", num_frames=3, resolution=32, eval_fraction=0.01,
                                    progress=False) / "eval")[0].index == 0


def test_synthetic_background_is_the_backdrop_the_frames_were_rendered_on(tmp_path: Path):
    out = make_dataset(tmp_path / "a", identity=2, num_frames=4, resolution=48, eval_fraction=0.25, seed=3,
                       image_format="png", progress=False)
    frame = list_frames(out / "train")[1]
    params = load_params(frame.params)
    expression = synth.Expression.from_array(params.extra["expression"])
    rgb, coverage = synth.render_head(synth.HeadIdentity.preset(2), expression, params.pose, params.scale,
                                      read_camera(out, 48, 48), synth.synthetic_background(out))
    stored = np.asarray(Image.open(frame.image), dtype=np.float32) / 255
    background = (coverage == 0) & (np.asarray(Image.open(frame.mask)) == 0)
    assert background.mean() > 0.3 and np.abs(rgb - stored)[background].max() <= 1 / 255 + 1e-6
    assert np.abs(rgb - stored).mean() < 2 / 255, "re-rendered on its backdrop, the frame is the stored one"
    other = make_dataset(tmp_path / "b", identity=2, num_frames=4, resolution=48, eval_fraction=0.25, seed=4,
                         progress=False)
    assert not np.allclose(synth.synthetic_background(other), synth.synthetic_background(out))
    with pytest.raises(DatasetError, match="synth.json"):
        synth.synthetic_background(tmp_path)


def test_drive_from_replays_the_driver_exactly(tmp_path: Path, official_dataset: Path):
    driver = make_dataset(tmp_path / "actor", identity=0, num_frames=6, resolution=48, eval_fraction=0.34,
                          progress=False)
    driven = make_dataset(tmp_path / "avatar", identity=2, resolution=48, drive_from=driver, image_format="png",
                          progress=False)
    for split in ("train", "eval"):
        a, b = list_frames(driver / split), list_frames(driven / split)
        assert [f.index for f in a] == [f.index for f in b] and len(a) > 0
        for fa, fb in zip(a, b):
            pa, pb = load_params(fa.params), load_params(fb.params)
            assert np.array_equal(pa.pose, pb.pose) and pa.scale == pb.scale
            assert np.array_equal(pa.extra["expression"], pb.extra["expression"])
            assert np.array_equal(pa.extra["frame"], pb.extra["frame"])
            assert int(pb.extra["identity"][0]) == 2
            # The driven frame is exactly identity 2 rendered with the driver's pose and expression.
            seed = _dataset_seeds(0, 2)[2]
            rgb, _ = render_head(HeadIdentity.preset(2), Expression.from_array(pa.extra["expression"]), pb.pose,
                                 pb.scale, CameraSpec.official(48), make_background(48, 48, seed))
            assert np.abs(np.asarray(Image.open(fb.image), dtype=np.float32) / 255 - rgb).max() <= 1 / 255
            assert np.abs(np.asarray(Image.open(fa.image), dtype=np.float32)
                          - np.asarray(Image.open(fb.image), dtype=np.float32)).mean() > 5
    with pytest.raises(DatasetError, match="expression"):  # a real dataset has no ground-truth expressions
        make_dataset(tmp_path / "x", drive_from=official_dataset, progress=False)
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite_unless_asked(tmp_path: Path):
    out = make_dataset(tmp_path / "ds", num_frames=6, resolution=32, progress=False)
    with pytest.raises(FileExistsError, match=re.escape(str(out))):
        make_dataset(out, num_frames=4, resolution=32, progress=False)
    (out / "notes.txt").write_text("kept")
    make_dataset(out, num_frames=4, resolution=32, eval_fraction=0.25, overwrite=True, progress=False)
    assert len(list_frames(out / "train")) == 3 and len(list(out.glob("train/params_*"))) == 3
    assert (out / "notes.txt").read_text() == "kept"
    with pytest.raises(ValueError):
        make_dataset(tmp_path / "bad", num_frames=1, eval_fraction=0.5, progress=False)


def test_options_are_stated_once(tmp_path: Path):
    """make_dataset's options are DatasetOptions' fields, which are also the command's flags."""
    from latentavatar_ns.scripts.synth import SynthConfig

    options = [f.name for f in dataclasses.fields(synth.DatasetOptions)]
    assert [f.name for f in dataclasses.fields(SynthConfig)] == options
    with pytest.raises(TypeError, match="num_frame"):
        make_dataset(tmp_path / "typo", num_frame=3, progress=False)
    assert not (tmp_path / "typo").exists()


def test_cli_writes_a_dataset(tmp_path: Path, monkeypatch, capsys):
    out = tmp_path / "cli"
    monkeypatch.setattr(sys, "argv", ["ns-latentavatar-synth", "--output-dir", str(out), "--num-frames", "3",
                                      "--resolution", "32", "--identity", "3", "--image-format", "png"])
    entrypoint()
    assert str(out) in capsys.readouterr().out and len(list(out.glob("*/img_*.png"))) == 3
    with pytest.raises(SystemExit, match="not empty"):
        entrypoint()


# ----------------------------------------------------------------------------------------------
# Detailed heads and region boxes


@pytest.fixture(scope="module")
def detailed_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("detail") / "head", identity=1, num_frames=4, resolution=48,
                        eval_fraction=0.25, seed=3, image_format="png", progress=False, detail=True)


def images_of(dataset: Path) -> list:
    return [np.asarray(Image.open(f.image), dtype=np.float32) / 255
            for split in ("train", "eval") for f in list_frames(dataset / split)]


def test_detailed_dataset_is_deterministic_and_not_smooth(tmp_path: Path, detailed_dataset: Path, monkeypatch):
    # The same dataset again, through the command line's --detail flag.
    again = tmp_path / "again"
    monkeypatch.setattr(sys, "argv", ["ns-latentavatar-synth", "--output-dir", str(again), "--identity", "1",
                                      "--num-frames", "4", "--resolution", "48", "--eval-fraction", "0.25",
                                      "--seed", "3", "--image-format", "png", "--detail"])
    entrypoint()
    detailed = images_of(detailed_dataset)
    assert len(detailed) == 4 and all(np.array_equal(a, b) for a, b in zip(detailed, images_of(again)))
    assert json.loads((detailed_dataset / synth.SYNTH_FILE).read_text())["detail"] is True
    smooth = make_dataset(tmp_path / "smooth", identity=1, num_frames=4, resolution=48, eval_fraction=0.25, seed=3,
                          image_format="png", progress=False)
    assert json.loads((smooth / synth.SYNTH_FILE).read_text())["detail"] is False
    for a, b, f in zip(detailed, images_of(smooth), list_frames(smooth / "train") + list_frames(smooth / "eval")):
        head = np.asarray(Image.open(f.mask)) > 127
        assert np.abs(a - b)[head].mean() > 0.005
    # Same expression, same geometry: the detailed paint differs on the head, the silhouette does not.
    (rgb, mask), (rgb_d, mask_d) = render(jaw_open=0.6), render(jaw_open=0.6, detail=True)
    assert np.abs(mask - mask_d).mean() < 1e-3
    assert np.abs(rgb - rgb_d)[mask == 1].mean() > 0.02


def test_detailed_head_has_highlights():
    """A red head under white light: Lambert shading of a pure red albedo leaves green at exactly 0,
    so green on the detailed head's pure-red skin can only be a specular highlight."""
    size = 96
    camera = CameraSpec.official(size)
    red = dataclasses.replace(HeadIdentity.preset(0), skin=(1.0, 0.0, 0.0))
    black = np.zeros((size, size, 3))
    for pose in (FRONT, np.array([0.1, 0.4, 0.0, 0.0, 0.013, 0.0])):
        smooth, mask = render_head(red, Expression(), pose, SCALE, camera, black)
        detailed, _ = render_head(red, Expression(), pose, SCALE, camera, black, detail=True)
        lambert_red = (mask == 1) & (smooth[..., 1] == 0)
        assert lambert_red.sum() > 500
        assert (detailed[..., 1][lambert_red] > 0.02).mean() > 0.03, "no sheen on the skin"
        assert detailed[..., 1][lambert_red].max() < 0.2, "skin highlights should stay mild"
    # The cornea: a near-white glint in the eye (at 160 px it covers a whole pixel).
    rgb = render(size=160, detail=True)[0]
    eye = region([[synth.EYE_X - 0.1, synth.EYE_Y - 0.08, 0.8], [synth.EYE_X + 0.1, synth.EYE_Y + 0.1, 0.8]], size=160)
    assert rgb[eye].min(axis=-1).max() > 0.95


def test_detailed_mouth_has_bright_teeth_and_a_dark_inside():
    size = 96
    x0, y0, x1, y1 = region_boxes(FRONT, SCALE, CameraSpec.official(size))["mouth"]
    for identity in (0, 1):
        smooth = render(identity, size, jaw_open=1.0)[0][y0:y1, x0:x1]
        detailed = render(identity, size, jaw_open=1.0, detail=True)[0][y0:y1, x0:x1]
        assert detailed.max(axis=-1).min() < 0.15 and detailed.max(axis=-1).min() < smooth.max(axis=-1).min()
        assert detailed.min(axis=-1).max() > 0.85


def test_smooth_expressions_are_unchanged_and_detailed_ones_are_wider():
    values = np.stack([e.to_array() for e in sample_expressions(150, seed=1)])
    assert np.allclose(values[0], [0.209, 0.025353, 0.0, 0.0, 0.03177, 0.079172, -0.25413], atol=1e-6)
    assert np.allclose(values[148], [0.006391, 0.968521, 0.962629, 0.962629, 0.717089, 0.26867, -0.464395],
                       atol=1e-6)
    assert sample_expressions(60, seed=4, detail=False) == sample_expressions(60, seed=4)
    for seed in range(4):
        v = np.stack([e.to_array() for e in sample_expressions(60, seed, detail=True)])
        right, left = v[:, 2], v[:, 3]
        winks = ((right > 0.9) & (left < 0.1)) | ((left > 0.9) & (right < 0.1))
        assert winks.any(), f"seed {seed}: no wink in 60 frames"
    assert sample_expressions(60, 0, detail=True) == sample_expressions(60, 0, detail=True)
    stats = {}
    for detail in (False, True):
        v = np.concatenate([np.stack([e.to_array() for e in sample_expressions(400, seed, detail=detail)])
                            for seed in range(4)])
        assert np.all(v[:, :5] >= 0) and np.all(v[:, :5] <= 1) and np.all(np.abs(v[:, 5:]) <= 1)
        stats[detail] = np.array([(v[:, 0] > 0.7).mean(), (v[:, 4] > 0.5).mean(),
                                  (np.abs(v[:, 5:]) > 0.6).any(axis=1).mean()])
    assert np.all(stats[True] > 1.3 * stats[False]), "wide mouth, raised brows and far gaze are more frequent"


def test_region_boxes_hold_the_mouth_and_the_eyes():
    size = 96
    camera = CameraSpec.official(size)
    poses, scales = sample_motion(120, seed=2)
    for i in (0, 40, 80):
        boxes = region_boxes(poses[i], scales[i], camera)
        assert set(boxes) == {"mouth", "eyes"}
        for name, points in (("mouth", [[0.0, synth.MOUTH_Y, 0.8]]),
                             ("eyes", [[-synth.EYE_X, synth.EYE_Y, 0.75], [synth.EYE_X, synth.EYE_Y, 0.75]])):
            x0, y0, x1, y1 = boxes[name]
            assert all(isinstance(c, int) for c in boxes[name])
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            uv = canonical_to_pixel(np.array(points), poses[i], scales[i], camera)
            assert np.all((uv[:, 0] > x0) & (uv[:, 0] < x1) & (uv[:, 1] > y0) & (uv[:, 1] < y1)), name
        assert boxes["eyes"][3] <= boxes["mouth"][1], "the eyes are above the mouth"

        def change_inside_vs_outside(name, **expression):
            before = render(1, size, poses[i], detail=True)[0]
            after = render(1, size, poses[i], detail=True, **expression)[0]
            change = np.abs(after - before).sum(axis=-1)
            x0, y0, x1, y1 = boxes[name]
            inside = np.zeros(change.shape, dtype=bool)
            inside[y0:y1, x0:x1] = True
            return change[inside].mean() / max(change[~inside].mean(), 1e-9)

        assert change_inside_vs_outside("mouth", jaw_open=1.0) > 10
        assert change_inside_vs_outside("eyes", blink_left=1.0, blink_right=1.0) > 10
    # Clipped to the image when the head leaves the frame.
    off = poses[0].copy()
    off[3] = 0.3
    assert all(0 <= c <= size for box in region_boxes(off, scales[0], camera).values() for c in box)


def test_region_boxes_of_a_dataset_frame(detailed_dataset: Path):
    camera = read_camera(detailed_dataset, 48, 48)
    for split, count in (("train", 3), ("eval", 1)):
        for f in list_frames(detailed_dataset / split)[:count]:
            params = load_params(f.params)
            boxes = region_boxes_of_frame(detailed_dataset, split, f.index)
            assert boxes == region_boxes(params.pose, params.scale, camera)
            assert boxes["mouth"][0] < boxes["mouth"][2]
    with pytest.raises(DatasetError, match="view"):
        region_boxes_of_frame(detailed_dataset, "train", 0, view="cam00")
    with pytest.raises(DatasetError, match="no image"):
        region_boxes_of_frame(detailed_dataset, "train", 99)
