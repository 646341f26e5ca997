"""ns-latentavatar-process on the real sample clips: every frame kept, plausible mattes, smooth poses,
landmarks re-projected through the stored camera and pose land on the detected ones, no-face frames
skipped and listed, and the output loads with the project's dataparser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from latentavatar_ns.assets.cache import AssetMissingError, asset_path, asset_status
from latentavatar_ns.data.format import SPLITS, list_frames, load_params, read_camera
from latentavatar_ns.data.poses import axis_angle_to_matrix, head_to_world, project_points
from latentavatar_ns.process import geometry as geo
from latentavatar_ns.process.face import load_template

NEEDED = ("face_landmarker.task", "selfie_segmentation.tflite")


def _require(*names: str) -> None:
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        pytest.skip("mediapipe not installed; run: make setup")
    for name in NEEDED + names:
        if asset_status(name) != "ok":
            pytest.skip(f"asset {name} not fetched; run: ns-latentavatar-assets fetch {name}")


def _run(tmp_path_factory, video: str, **kw) -> Dict:
    from latentavatar_ns.process.video_to_dataset import ProcessConfig, process

    _require(video)
    out = tmp_path_factory.mktemp("process") / Path(video).stem
    summary = process(ProcessConfig(input=asset_path(video), output_dir=out, sheet_tiles=4, **kw))
    return {"out": out, "summary": summary}


@pytest.fixture(scope="module")
def single_face(tmp_path_factory) -> Dict:
    return _run(tmp_path_factory, "single_face.mp4", resolution=128, stride=2)


@pytest.fixture(scope="module")
def carphone(tmp_path_factory) -> Dict:
    return _run(tmp_path_factory, "carphone_pristine.mp4", resolution=96, stride=3)


def _frames(out: Path):
    camera = None
    for split in SPLITS:
        for f in list_frames(out / split):
            p = load_params(f.params)
            if camera is None:
                camera = read_camera(out, *Image.open(f.image).size)
            yield split, f, p, camera


@pytest.mark.parametrize("name", ["single_face", "carphone"])
def test_every_frame_kept_and_split_at_the_end(name: str, request) -> None:
    run = request.getfixturevalue(name)
    s, out = run["summary"], run["out"]
    assert s["frames_decoded"] > 20 and s["frames_kept"] == s["frames_decoded"] and s["skipped"] == []
    frames = list(_frames(out))
    assert len(frames) == s["frames_kept"] == s["num_train"] + s["num_eval"] and s["num_eval"] >= 2
    sources = {split: [int(p.extra["source_frame"]) for sp, _, p, _ in frames if sp == split] for split in SPLITS}
    assert max(sources["train"]) < min(sources["eval"])  # held-out frames are the end of the video
    assert (out / "contact_sheet.png").is_file() and (out / "camera.json").is_file()
    assert Image.open(frames[0][1].image).size == (s["resolution"], s["resolution"])


@pytest.mark.parametrize("name", ["single_face", "carphone"])
def test_masks_cover_the_head(name: str, request) -> None:
    out = request.getfixturevalue(name)["out"]
    nose = geo.template_to_canonical(load_template(asset_path("face_landmarker.task")).vertices[4])
    for _, f, p, camera in _frames(out):
        mask = np.asarray(Image.open(f.mask).convert("L"), dtype=np.float32) / 255.0
        assert 0.2 < mask.mean() < 0.85, f"{f.mask}: coverage {mask.mean():.2f}"
        u, v = project_points((head_to_world(p.pose, p.scale) @ np.append(nose, 1.0))[None, :3],
                              camera.world_to_camera, p.intrinsics)[0]
        assert mask[int(v), int(u)] > 0.9  # the nose tip is foreground
        assert mask[0].mean() < 0.5 or mask[-1].mean() < 0.5  # not the whole frame


@pytest.mark.parametrize("name", ["single_face", "carphone"])
def test_poses_change_smoothly(name: str, request) -> None:
    """Small steps between processed frames (10-15 per second here), and steps that follow a trend
    rather than jitter: the stored poses' second differences are well below their first differences,
    unlike the per-frame fits they were smoothed from."""
    out = request.getfixturevalue(name)["out"]
    params = [p for _, _, p, _ in _frames(out)]
    assert len({round(p.scale, 6) for p in params}) == 1
    for a, b in zip(params[:-1], params[1:]):
        rel = axis_angle_to_matrix(a.pose[:3]).T @ axis_angle_to_matrix(b.pose[:3])
        angle = np.degrees(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1)))
        assert angle < 6.0 and np.linalg.norm(a.pose[3:] - b.pose[3:]) < 0.03  # degrees, metres per step
    jerk = {}
    for key in ("pose", "raw_pose"):
        rot = np.array([p.pose[:3] if key == "pose" else p.extra["raw_pose"][:3] for p in params])
        first = np.linalg.norm(np.diff(rot, axis=0), axis=1).mean()
        jerk[key] = np.linalg.norm(np.diff(rot, n=2, axis=0), axis=1).mean() / first
        assert first > 1e-4  # the head does move: poses are not a constant
    assert jerk["pose"] < 0.6 and jerk["pose"] < 0.6 * jerk["raw_pose"], jerk


@pytest.mark.parametrize("name", ["single_face", "carphone"])
def test_landmarks_reproject_through_stored_camera_and_pose(name: str, request) -> None:
    """The rigid template points, put through the format's own maths (pose, scale, camera.json, per-frame
    intrinsics), land within a few pixels of the landmarks the detector found in the written frame."""
    out = request.getfixturevalue(name)["out"]
    template = load_template(asset_path("face_landmarker.task"))
    rigid = template.rigid_ids
    points = geo.template_to_canonical(template.vertices[rigid])
    errors = []
    for _, f, p, camera in _frames(out):
        m = head_to_world(p.pose, p.scale)
        uv = project_points(points @ m[:3, :3].T + m[:3, 3], camera.world_to_camera, p.intrinsics)
        errors.append(np.linalg.norm(uv - p.extra["landmarks"][rigid], axis=1).mean())
    res = Image.open(f.image).size[0]
    assert np.mean(errors) < 0.02 * res and np.max(errors) < 0.04 * res, (np.mean(errors), np.max(errors))


def test_loads_with_dataparser(single_face: Dict) -> None:
    from latentavatar_ns.data.dataparser import LatentAvatarDataParserConfig

    out, s = single_face["out"], single_face["summary"]
    parser = LatentAvatarDataParserConfig(data=out).setup()
    train = parser.get_dataparser_outputs("train")
    evals = parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == s["num_train"] and len(evals.image_filenames) == s["num_eval"]
    first = load_params(list_frames(out / "train")[0].params)
    assert float(train.cameras.fx[0]) == pytest.approx(first.intrinsics[0, 0], rel=1e-5)
    assert np.allclose(train.metadata["crop_affines"][0].numpy(), first.crop_affine, atol=1e-5)
    # The encoder's face square sits on the face: the nose tip maps into the middle of the crop.
    nose = first.extra["landmarks"][4]
    q = first.crop_affine @ np.append(nose, 1.0)
    assert np.all(np.abs(q - 0.5) < 0.2)


def test_no_face_frames_are_skipped_and_listed(tmp_path_factory) -> None:
    run = _run(tmp_path_factory, "face_noface.mov", resolution=64, stride=3)
    s, out = run["summary"], run["out"]
    skipped = [x["source_frame"] for x in s["skipped"]]
    kept = [int(p.extra["source_frame"]) for _, _, p, _ in _frames(out)]
    # The clip shows a face for its first 72 frames, then titles over sky.
    assert len(skipped) > 20 and min(skipped) >= 72 and max(kept) < 72
    assert len(kept) + len(skipped) == s["frames_decoded"] == len(set(kept) | set(skipped))
    assert all(x["reason"] for x in s["skipped"])


def test_image_folder_and_refusals(tmp_path: Path) -> None:
    from latentavatar_ns.process.video_to_dataset import ProcessConfig, process
    from latentavatar_ns.utils.video import read_video

    _require("single_face.mp4")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, rgb in enumerate(read_video(asset_path("single_face.mp4"))[:3]):
        Image.fromarray(rgb).save(frames / f"frame_{i:03d}.png")
    out = tmp_path / "ds"
    s = process(ProcessConfig(input=frames, output_dir=out, resolution=48, eval_fraction=0.34))
    assert (s["num_train"], s["num_eval"], s["frames_skipped"]) == (2, 1, 0)
    with pytest.raises(FileExistsError, match="--overwrite"):
        process(ProcessConfig(input=frames, output_dir=out, resolution=48))


@pytest.mark.slow
def test_no_face_anywhere_is_one_clear_error(tmp_path: Path) -> None:
    from latentavatar_ns.utils.video import write_video

    _require()
    rng = np.random.default_rng(0)
    video = write_video(tmp_path / "wall.mp4", [np.full((64, 96, 3), 0.5) + rng.normal(0, 0.05, (64, 96, 3))
                                               for _ in range(6)], fps=10)
    cmd = [str(Path(sys.executable).parent / "ns-latentavatar-process"), "--input", str(video),
           "--output-dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {video}: no face found in any of 6 frames"


def test_missing_model_says_what_to_run(tmp_path: Path, monkeypatch) -> None:
    from latentavatar_ns.process.video_to_dataset import ProcessConfig, process

    monkeypatch.setenv("LATENTAVATAR_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(AssetMissingError, match="ns-latentavatar-assets fetch face_landmarker.task"):
        process(ProcessConfig(input=tmp_path, output_dir=tmp_path / "out"))


def test_crop_warp_matches_its_intrinsics() -> None:
    """A bright source pixel lands where the crop's mapping (and so its intrinsics) says, zooming in and out."""
    image = np.zeros((120, 160), dtype=np.float32)
    image[70, 41] = 1.0  # pixel centre (41.5, 70.5) in continuous coordinates
    K_src = geo.source_intrinsics(160, 120, 60.0)
    for side, res in ((40.0, 80), (100.0, 20)):
        crop = geo.Crop(20.0, 50.0, side, res)
        warped = crop.warp(image)
        v, u = np.unravel_index(np.argmax(warped), warped.shape)
        expected = crop.to_crop(np.array([[41.5, 70.5]]))[0]
        assert abs(u + 0.5 - expected[0]) <= 1.0 and abs(v + 0.5 - expected[1]) <= 1.0
        # The crop's K is the source K followed by the same mapping.
        ray = np.linalg.solve(K_src, [41.5, 70.5, 1.0])
        uv = crop.intrinsics(K_src) @ ray
        assert np.allclose(uv[:2] / uv[2], expected)


def test_dataset_pose_reproduces_the_fitted_pose() -> None:
    """A template pose in the source camera and its dataset form (pose, S, virtual camera) project alike."""
    rng = np.random.default_rng(1)
    points_cm = rng.normal(0, 5, (20, 3))
    rot = axis_angle_to_matrix(np.array([0.1, -0.3, 0.05]))
    t_cm = np.array([3.0, -2.0, 45.0])
    K = geo.source_intrinsics(640, 360, 60.0)
    direct = (points_cm @ rot.T + t_cm) @ K.T
    direct = direct[:, :2] / direct[:, 2:]
    w2c = geo.virtual_world_to_camera(0.42)
    pose = geo.dataset_pose(rot, t_cm, w2c)
    via_dataset = geo.project_canonical(geo.template_to_canonical(points_cm), pose, geo.HEAD_SCALE_M, w2c, K)
    assert np.allclose(direct, via_dataset, atol=1e-6)


def test_rvm_matting_agrees_with_the_segmenter(tmp_path_factory) -> None:
    """The optional Robust Video Matting model and the default segmenter find the same person."""
    pytest.importorskip("onnxruntime", reason="optional: pip install -e '.[matting]'")
    if asset_status("rvm_mobilenetv3_fp32.onnx") != "ok":
        pytest.skip("asset not fetched; run: ns-latentavatar-assets fetch rvm_mobilenetv3_fp32.onnx")
    runs = {m: _run(tmp_path_factory, "carphone_pristine.mp4", resolution=64, stride=10, matting=m)["out"]
            for m in ("selfie", "rvm")}
    ious = []
    for (_, a, _, _), (_, b, _, _) in zip(_frames(runs["selfie"]), _frames(runs["rvm"])):
        ma = np.asarray(Image.open(a.mask)) > 127
        mb = np.asarray(Image.open(b.mask)) > 127
        ious.append((ma & mb).sum() / (ma | mb).sum())
    assert len(ious) == 12 and min(ious) > 0.8, ious
