"""The dataparser on the official layout, pose folding, encoder crops and every bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentavatar_ns.data.dataparser import LatentAvatarDataParserConfig
from latentavatar_ns.data.dataset import LatentAvatarDataset
from latentavatar_ns.data.face_crop import crop_affine_from_pose, extract_crop
from latentavatar_ns.data.format import (
    OFFICIAL_W2C,
    CameraSpec,
    DatasetError,
    DatasetWarning,
    FrameParams,
    list_frames,
    load_params,
    save_params,
    write_camera,
)
from latentavatar_ns.data.poses import axis_angle_to_matrix, head_to_world, matrix_to_axis_angle, project_points


def parse(root: Path, split: str = "train"):
    return LatentAvatarDataParserConfig(data=root).setup().get_dataparser_outputs(split=split)


def test_official_layout_is_read(official_dataset: Path):
    train, val = parse(official_dataset, "train"), parse(official_dataset, "val")
    assert len(train.image_filenames) == 4 and len(val.image_filenames) == 2
    cams = train.cameras
    # No camera.json: the official camera scaled from 512 px to 32 px.
    assert torch.allclose(cams.fx, torch.full_like(cams.fx, 5000.0 * 32 / 512))
    assert torch.allclose(cams.cx, torch.full_like(cams.cx, 16.0))
    assert int(cams.width[0]) == 32 and int(cams.height[0]) == 32
    # Codes: train frames first, then eval frames.
    assert cams.metadata["code_idx"][:, 0].tolist() == [0, 1, 2, 3]
    assert val.cameras.metadata["code_idx"][:, 0].tolist() == [4, 5]
    assert train.metadata["num_train_frames"] == 4 and train.metadata["num_eval_frames"] == 2
    assert train.metadata["crop_affines"].shape == (4, 2, 3)
    assert [p.name for p in train.mask_filenames] == [f"mask_{i:05d}.png" for i in range(4)]


def test_camera_json_overrides_and_rescales(official_dataset: Path):
    spec = CameraSpec(64, 64, fx=100.0, fy=110.0, cx=30.0, cy=34.0)
    write_camera(official_dataset, spec)
    cams = parse(official_dataset).cameras  # images are 32 px: everything halves
    assert cams.fx[0].item() == pytest.approx(50.0) and cams.fy[0].item() == pytest.approx(55.0)
    assert cams.cx[0].item() == pytest.approx(15.0) and cams.cy[0].item() == pytest.approx(17.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pose_folding_matches_official_projection(official_dataset: Path, seed: int):
    """A canonical point seen through the folded camera lands where the official world transform puts it."""
    outputs = parse(official_dataset)
    frames = list_frames(official_dataset / "train")
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.0, 1.0, (5, 3))
    for i, frame in enumerate(frames):
        params = load_params(frame.params)
        spec = CameraSpec.official(32)
        world = points @ head_to_world(params.pose, params.scale)[:3, :3].T + params.pose[3:]
        expected = project_points(world, OFFICIAL_W2C, spec.K)
        # Folded camera (OpenGL c2w in canonical space) back to OpenCV world-to-camera.
        c2w = np.eye(4)
        c2w[:3] = outputs.cameras.camera_to_worlds[i].double().numpy()
        c2w[:3, 1:3] *= -1.0
        got = project_points(points, np.linalg.inv(c2w), spec.K)
        np.testing.assert_allclose(got, expected, atol=1e-3)
        # And nerfstudio's rays through those pixels pass through the canonical points.
        coords = torch.tensor(expected[:, ::-1].copy(), dtype=torch.float32)  # (y, x)
        rays = outputs.cameras[i : i + 1].generate_rays(camera_indices=0, coords=coords)
        o, d = rays.origins.double().numpy(), rays.directions.double().numpy()
        t = ((points - o) * d).sum(-1, keepdims=True)
        np.testing.assert_allclose(o + t * d, points, atol=1e-3)


def test_axis_angle_round_trip():
    rotvec = np.array([0.3, -0.2, 0.1])
    np.testing.assert_allclose(matrix_to_axis_angle(axis_angle_to_matrix(rotvec)), rotvec, atol=1e-9)


def test_crop_follows_the_head():
    """The face square's centre lands at the crop centre, whatever the head pose."""
    spec = CameraSpec.official(256)
    for pose in (np.zeros(6), np.array([0.0, 0.4, 0.1, 0.02, -0.01, 0.0])):
        affine = crop_affine_from_pose(spec.K, spec.world_to_camera, pose, 0.1, center=(0.0, 0.0, 1.0), half_size=0.5)
        world = head_to_world(pose, 0.1) @ np.array([0.0, 0.0, 1.0, 1.0])
        pixel = project_points(world[None, :3], spec.world_to_camera, spec.K)[0]
        # The affine is fitted to three corners of a (nearly orthographic) perspective view.
        np.testing.assert_allclose(affine @ np.append(pixel, 1.0), [0.5, 0.5], atol=5e-3)


def test_crop_is_black_outside_the_face():
    image = np.ones((64, 64, 3), dtype=np.float32)
    crop = extract_crop(image, np.array([[1 / 64, 0, 0], [0, 1 / 64, 0]]), 32)
    assert crop.shape == (32, 32, 3)
    assert crop[0, 0].sum() == 0 and crop[16, 16].min() == pytest.approx(1.0)


def test_dataset_items_are_composited(official_dataset: Path):
    outputs = parse(official_dataset)
    item = LatentAvatarDataset(outputs, crop_size=16).get_data(0)
    assert item["image"].shape == (32, 32, 3) and item["mask"].shape == (32, 32, 1)
    assert item["encoder_crop"].shape == (3, 16, 16) and item["code_idx"] == 0
    background = item["mask"][..., 0] < 0.5
    assert torch.allclose(item["image"][background], torch.ones(3))  # white background by default


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error naming the file, before training starts.


def _frame(root: Path, kind: str, idx: int = 1, split: str = "train") -> Path:
    suffix = {"img": ".jpg", "mask": ".png", "params": ".npz"}[kind]
    return root / split / f"{kind}_{idx:05d}{suffix}"


def _expect(root: Path, fragment: str, split: str = "train") -> str:
    with pytest.raises(DatasetError) as err:
        parse(root, split)
    message = str(err.value)
    assert "\n" not in message
    assert fragment in message
    return message


def test_missing_mask(official_dataset: Path):
    _frame(official_dataset, "mask").unlink()
    assert "mask_00001" in _expect(official_dataset, "mask file is missing")


def test_missing_params(official_dataset: Path):
    _frame(official_dataset, "params").unlink()
    assert "params_00001.npz" in _expect(official_dataset, "params file is missing")


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_unreadable_image(official_dataset: Path, content: bytes):
    _frame(official_dataset, "img").write_bytes(content)
    assert "img_00001.jpg" in _expect(official_dataset, "cannot read image")


def test_truncated_image_fails_when_decoded(official_dataset: Path):
    path = _frame(official_dataset, "img")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # header intact, pixel data cut
    dataset = LatentAvatarDataset(parse(official_dataset), crop_size=16)
    with pytest.raises(DatasetError, match="img_00001.jpg: cannot decode image"):
        dataset.get_data(1)


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"scale": np.ones(1)}, "no 'pose' key"),
        ({"pose": np.zeros((1, 6))}, "no 'scale' key"),
        ({"pose": np.zeros((1, 5)), "scale": np.ones(1)}, "'pose' must have 6 values"),
        ({"pose": np.zeros((1, 6)), "scale": np.ones(2)}, "'scale' must have 1 value"),
        ({"pose": np.full((1, 6), np.nan), "scale": np.ones(1)}, "not finite"),
        ({"pose": np.zeros((1, 6)), "scale": np.zeros(1)}, "'scale' must be positive"),
        ({"pose": np.zeros((1, 6)), "scale": np.ones(1), "crop_affine": np.eye(3)}, "'crop_affine' must be"),
        ({"pose": np.zeros((1, 6)), "scale": np.ones(1), "crop_affine": np.zeros((2, 3))}, "'crop_affine' is singular"),
        ({"pose": np.array([["a", "b", "c", "d", "e", "f"]]), "scale": np.ones(1)},
         "'pose' must hold numbers, but holds text"),
        ({"pose": np.full((1, 6), "0.1"), "scale": np.ones(1)}, "'pose' must hold numbers"),
        ({"pose": np.zeros((1, 6)), "scale": np.array([b"1"])}, "'scale' must hold numbers, but holds bytes"),
        ({"pose": np.zeros((1, 6)), "scale": np.ones(1), "intrinsics": np.full((3, 3), 1j)},
         "'intrinsics' must hold numbers, but holds complex numbers"),
    ],
)
def test_bad_params(official_dataset: Path, arrays, fragment):
    np.savez(_frame(official_dataset, "params"), **arrays)
    assert "params_00001.npz" in _expect(official_dataset, fragment)


def test_corrupt_params(official_dataset: Path):
    _frame(official_dataset, "params").write_bytes(b"garbage")
    _expect(official_dataset, "cannot read params file")


def test_images_of_different_sizes(official_dataset: Path):
    Image.new("RGB", (48, 48)).save(_frame(official_dataset, "img"))
    Image.new("L", (48, 48)).save(_frame(official_dataset, "mask"))
    assert "img_00001.jpg" in _expect(official_dataset, "all frames must have one size")


def test_mask_of_other_size(official_dataset: Path):
    Image.new("L", (16, 16)).save(_frame(official_dataset, "mask"))
    _expect(official_dataset, "mask is 16x16 but its image is 32x32")


def test_empty_split(official_dataset: Path):
    for path in (official_dataset / "eval").iterdir():
        path.unlink()
    _expect(official_dataset, "split is empty", split="val")


def test_missing_split(official_dataset: Path):
    for path in (official_dataset / "eval").iterdir():
        path.unlink()
    (official_dataset / "eval").rmdir()
    _expect(official_dataset, "split folder is missing", split="val")


def test_missing_data_path(tmp_path: Path):
    _expect(tmp_path / "nowhere", "dataset folder does not exist")


def test_malformed_camera_json(official_dataset: Path):
    (official_dataset / "camera.json").write_text(json.dumps({"width": 32}))
    _expect(official_dataset, "camera file is malformed")


def test_params_round_trip(tmp_path: Path):
    path = tmp_path / "params_00000.npz"
    affine = np.array([[0.01, 0, 0.1], [0, 0.01, 0.2]])
    save_params(path, FrameParams(pose=np.arange(6) / 10, scale=0.1, crop_affine=affine, extra={"view": np.array(2)}))
    params = load_params(path)
    np.testing.assert_allclose(params.pose, np.arange(6) / 10, atol=1e-6)
    np.testing.assert_allclose(params.crop_affine, affine, atol=1e-6)
    assert params.extra["view"] == 2


# ---------------------------------------------------------------------------------------------
# Frames that would train but teach nothing of the head: named in a warning; all of them, refused.


def _parse_quietly(root: Path) -> None:
    """Both splits parse with no DatasetWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)
        parse(root, "train"), parse(root, "val")


def _move_head(root: Path, idx: int, translation=None, crop_affine=None, split: str = "train") -> None:
    params = load_params(_frame(root, "params", idx, split))
    if translation is not None:
        params.pose[3:] = translation
    params.crop_affine = crop_affine
    save_params(_frame(root, "params", idx, split), params)


def test_intact_dataset_parses_without_warnings(official_dataset: Path):
    _parse_quietly(official_dataset)


def test_some_empty_masks_are_named_in_a_warning(official_dataset: Path):
    Image.new("L", (32, 32), 0).save(_frame(official_dataset, "mask", 1))
    Image.new("L", (32, 32), 1).save(_frame(official_dataset, "mask", 2))  # a 0/1 mask reads as empty too
    with pytest.warns(DatasetWarning) as record:
        parse(official_dataset)
    message = str(record[0].message)
    assert message.startswith(f"{official_dataset / 'train'}: 2 of 4 masks are empty") and "\n" not in message
    assert message.endswith("mask_00001.png, mask_00002.png")
    Image.new("L", (32, 32), 127).save(_frame(official_dataset, "mask", 1, "eval"))
    Image.new("L", (32, 32), 128).save(_frame(official_dataset, "mask", 0, "eval"))  # half foreground is enough
    with pytest.warns(DatasetWarning) as record:
        parse(official_dataset, "val")  # the train split is read again (its frame count)
    assert sorted(str(w.message)[len(str(official_dataset)):] for w in record) == [
        "/eval: 1 of 2 masks are empty (no pixel is even half foreground), so those frames teach only background: "
        "mask_00001.png", message[len(str(official_dataset)):]]


def test_every_mask_empty_is_refused_naming_the_folder(official_dataset: Path):
    for idx in range(2):
        Image.new("RGBA", (32, 32), (255, 255, 255, 0)).save(_frame(official_dataset, "mask", idx, "eval"))  # alpha 0
    message = _expect(official_dataset, "all 2 masks are empty", split="val")
    assert message.startswith(f"{official_dataset / 'eval'}: ")


def test_heads_outside_the_image_are_named_in_a_warning(official_dataset: Path):
    _move_head(official_dataset, 1, translation=(5.0, 0.0, 0.0))  # beside the image
    _move_head(official_dataset, 2, translation=(0.0, 0.0, 10.0))  # behind the camera (it sits at z = 4)
    _move_head(official_dataset, 3, crop_affine=np.array([[1 / 32, 0.0, 0.0], [0.0, 1 / 32, 2.0]]))  # crop below it
    with pytest.warns(DatasetWarning) as record:
        outputs = parse(official_dataset)
    message = str(record[0].message)
    assert message.startswith(f"{official_dataset / 'train'}: in 3 of 4 frames the head box or face crop lies wholly "
                              "outside the image") and "\n" not in message
    assert message.endswith(": img_00001.jpg (head box and face crop), img_00002.jpg (head box), "
                            "img_00003.jpg (face crop)")
    assert len(outputs.image_filenames) == 4  # they still train


def test_head_outside_every_frame_is_refused(official_dataset: Path):
    for idx in range(2):
        _move_head(official_dataset, idx, translation=(0.0, -5.0, 0.0), split="eval")
    message = _expect(official_dataset, "in all 2 frames the head box or face crop lies wholly outside the image",
                      split="val")
    assert message.startswith(f"{official_dataset / 'eval'}: ")


def test_a_head_partly_in_view_is_not_flagged(official_dataset: Path):
    # The head box (x from -0.15 to 0.15 at scale 0.1) reaches 12 px past the centre: at x = 0.2 its left edge
    # is still inside the 32 px image, and its face crop is cut off but not gone.
    for idx in range(4):
        _move_head(official_dataset, idx, translation=(0.2, 0.0, 0.0))
    _parse_quietly(official_dataset)

