"""Multi-view captures: views grouped by moment, one frontal encoder crop and one code per moment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentavatar_ns import synthetic as synth
from latentavatar_ns.data.dataparser import LatentAvatarDataParserConfig
from latentavatar_ns.data.dataset import LatentAvatarDataset, read_rgb
from latentavatar_ns.data.face_crop import crop_affine_from_pose, extract_crop
from latentavatar_ns.data.format import (
    CameraRig,
    DatasetError,
    DatasetWarning,
    FrameParams,
    frame_paths,
    load_params,
    read_camera,
    save_params,
    write_rig,
)
from latentavatar_ns.data.poses import canonical_camera_to_world, opencv_to_opengl
from latentavatar_ns.scripts.synth import entrypoint
from latentavatar_ns.synthetic import camera_rig, make_dataset, view_yaws
from latentavatar_ns.synthetic.writer import _dataset_seeds


def parser_for(root: Path, **kw):
    return LatentAvatarDataParserConfig(data=root, **kw).setup()


def write_multiview_dataset(root: Path, moments=None, yaws=(-45.0, 0.0, 45.0), heldout=(), size=32, seed=0) -> Path:
    """Random images on a rig of cameras; head poses near frontal so the middle view is the frontal one."""
    rng = np.random.default_rng(seed)
    rig = camera_rig(size, yaws, heldout)
    root.mkdir(parents=True, exist_ok=True)
    write_rig(root, rig)
    for split, n in (moments or {"train": 3, "eval": 2}).items():
        split_dir = root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            for view in rig.names:
                files = frame_paths(split_dir, i, ".png", view=view)
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(files.image)
                Image.fromarray((rng.random((size, size)) > 0.5).astype(np.uint8) * 255).save(files.mask)
            pose = np.concatenate([rng.normal(0, 0.05, 3), rng.normal(0, 0.01, 3)])
            save_params(frame_paths(split_dir, i).params, FrameParams(pose=pose, scale=0.1))
    return root


@pytest.fixture
def multiview(tmp_path: Path) -> Path:
    return write_multiview_dataset(tmp_path / "mv", heldout=(0,))


def test_dataparser_groups_views_by_moment(multiview: Path):
    parser = parser_for(multiview)
    train, val = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("val")
    # cam00 is held out: training sees cam01 and cam02 of each of the 3 moments, moment by moment.
    assert train.metadata["image_views"] == ["cam01", "cam02"] * 3
    assert train.cameras.metadata["code_idx"][:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert [p.name for p in train.image_filenames[:2]] == ["img_00000_cam01.png", "img_00000_cam02.png"]
    assert [p.name for p in train.mask_filenames[:2]] == ["mask_00000_cam01.png", "mask_00000_cam02.png"]
    # Codes are per moment: the model's table has one row per moment, eval moments after train ones.
    assert train.metadata["num_train_frames"] == 3 and train.metadata["num_eval_frames"] == 2
    assert val.metadata["image_views"] == ["cam00", "cam01", "cam02"] * 2  # eval: every view
    assert val.cameras.metadata["code_idx"][:, 0].tolist() == [3, 3, 3, 4, 4, 4]
    # Each image has its own view's camera with the moment's head pose folded in.
    parsed = parser.parse_split("train")
    for i, (view, code) in enumerate(zip(train.metadata["image_views"], [0, 0, 1, 1, 2, 2])):
        p = parsed.params[code]
        expected = opencv_to_opengl(canonical_camera_to_world(parsed.rig.views[view].world_to_camera, p.pose, p.scale))
        np.testing.assert_allclose(train.cameras.camera_to_worlds[i].numpy(), expected, atol=1e-5)
    assert not torch.allclose(train.cameras.camera_to_worlds[0], train.cameras.camera_to_worlds[1])
    # Chosen views: the frontal view alone (the single-view baseline), or the held-out views to score.
    frontal_only = parser_for(multiview, train_views=("cam01",)).get_dataparser_outputs("train")
    assert frontal_only.metadata["image_views"] == ["cam01"] * 3
    held_out = parser_for(multiview, eval_views=("cam00",)).get_dataparser_outputs("val")
    assert set(held_out.metadata["image_views"]) == {"cam00"}


def test_every_view_of_a_moment_gets_the_frontal_crop_and_code(multiview: Path):
    parser = parser_for(multiview)
    outputs = parser.get_dataparser_outputs("train")
    assert outputs.metadata["encoder_view"] == "cam01"  # the most frontal of -45, 0, +45 degrees
    dataset = LatentAvatarDataset(outputs, crop_size=16)
    items = [dataset.get_data(i) for i in range(len(dataset))]
    parsed, rig = parser.parse_split("train"), parser.parse_split("train").rig
    frontal = rig.views["cam01"]
    for moment in range(3):
        a, b = items[2 * moment], items[2 * moment + 1]
        assert a["code_idx"] == b["code_idx"] == moment
        assert torch.equal(a["encoder_crop"], b["encoder_crop"])
        assert not torch.equal(a["image"], b["image"])
        # The crop is cut from the frontal image with the face square projected through the frontal camera.
        p = parsed.params[moment]
        affine = crop_affine_from_pose(frontal.K, frontal.world_to_camera, p.pose, p.scale)
        image = read_rgb(multiview / "train" / f"img_{moment:05d}_cam01.png")
        np.testing.assert_allclose(a["encoder_crop"].permute(1, 2, 0).numpy(), extract_crop(image, affine, 16),
                                   atol=1e-5)
    assert not torch.equal(items[0]["encoder_crop"], items[2]["encoder_crop"])
    # The encoder view can be named (config or camera.json) instead.
    named = parser_for(multiview, encoder_view="cam02").get_dataparser_outputs("train")
    assert named.metadata["encoder_view"] == "cam02"


def test_most_frontal_view_follows_the_face(tmp_path: Path):
    """A head turned 40 degrees toward +x faces the +45 degree camera most directly."""
    root = write_multiview_dataset(tmp_path / "turned")
    for split in ("train", "eval"):
        for params in (root / split).glob("params_*.npz"):
            save_params(params, FrameParams(pose=np.array([0.0, np.radians(40.0), 0.0, 0.0, 0.0, 0.0]), scale=0.1))
    assert parser_for(root).get_dataparser_outputs("train").metadata["encoder_view"] == "cam02"


def test_monocular_dataset_loads_exactly_as_before(official_dataset: Path):
    outputs = parser_for(official_dataset).get_dataparser_outputs("train")
    assert set(outputs.metadata) == {"crop_affines", "background_color", "num_train_frames", "num_eval_frames",
                                     "image_code_idx"}
    assert outputs.metadata["image_code_idx"].tolist() == [0, 1, 2, 3]
    assert list(outputs.cameras.metadata) == ["code_idx"]
    assert outputs.cameras.metadata["code_idx"][:, 0].tolist() == [0, 1, 2, 3]
    assert [p.name for p in outputs.image_filenames] == [f"img_{i:05d}.jpg" for i in range(4)]
    parsed = parser_for(official_dataset).parse_split("train")
    assert parsed.rig is None and parsed.moments == []
    spec = read_camera(official_dataset, 32, 32)
    dataset = LatentAvatarDataset(outputs, crop_size=16)
    for i in range(4):
        p = load_params(official_dataset / "train" / f"params_{i:05d}.npz")
        expected = opencv_to_opengl(canonical_camera_to_world(spec.world_to_camera, p.pose, p.scale))
        np.testing.assert_allclose(outputs.cameras.camera_to_worlds[i].numpy(), expected, atol=1e-5)
        # Each frame's crop is cut from its own image.
        own = extract_crop(read_rgb(outputs.image_filenames[i]), crop_affine_from_pose(spec.K, spec.world_to_camera,
                                                                                       p.pose, p.scale), 16)
        np.testing.assert_allclose(dataset.get_data(i)["encoder_crop"].permute(1, 2, 0).numpy(), own, atol=1e-5)


def _expect(root: Path, fragment: str, **kw) -> str:
    with pytest.raises(DatasetError) as err:
        parser_for(root, **kw).get_dataparser_outputs("train")
    message = str(err.value)
    assert "\n" not in message and fragment in message, message
    return message


def test_bad_multiview_input_is_one_line(multiview: Path):
    rig = json.loads((multiview / "camera.json").read_text())
    source = (multiview / "train" / "img_00001_cam01.png").read_bytes()
    (multiview / "train" / "img_00001_cam07.png").write_bytes(source)
    assert "img_00001_cam07.png" in _expect(multiview, "view 'cam07' is not in camera.json")
    (multiview / "train" / "img_00001_cam07.png").unlink()
    _expect(multiview, "encoder view 'side' is not one of the views", encoder_view="side")
    _expect(multiview, "train view 'cam09' is not one of the views", train_views=("cam09",))
    (multiview / "train" / "img_00002_cam01.png").unlink()
    (multiview / "train" / "mask_00002_cam01.png").unlink()
    assert "img_00002_cam01.png" in _expect(multiview, "the encoder view's image is missing for moment 2")
    (multiview / "camera.json").write_text(json.dumps({**rig, "heldout_views": ["cam00", "cam01", "cam02"]}))
    _expect(multiview, "every view is held out")
    (multiview / "camera.json").write_text(json.dumps({**rig, "encoder_view": "nope"}))
    _expect(multiview, "encoder_view 'nope' is not one of the views")
    (multiview / "camera.json").write_text(json.dumps({"views": {"cam_0": rig["views"]["cam00"]}}))
    _expect(multiview, "must be letters, digits and hyphens")


def test_intrinsics_in_params_are_refused(multiview: Path):
    path = multiview / "train" / "params_00001.npz"
    params = load_params(path)
    params.intrinsics = np.eye(3)
    save_params(path, params)
    assert "params_00001.npz" in _expect(multiview, "'intrinsics' is not allowed in a multi-view capture")


def test_views_whose_head_is_out_of_sight_are_named(multiview: Path):
    def lift(moment: int) -> None:
        path = multiview / "train" / f"params_{moment:05d}.npz"
        params = load_params(path)
        params.pose[3:] = (0.0, 100.0, 0.0)  # far above every camera of the ring
        save_params(path, params)

    lift(1)
    with pytest.warns(DatasetWarning) as record:
        parser_for(multiview).parse_split("train")
    assert [str(w.message) for w in record] == [
        f"{multiview / 'train'}: in 3 of 9 frames the head box or face crop lies wholly outside the image, so they "
        "teach nothing of the head: " + ", ".join(f"img_00001_{view}.png (head box and face crop)"
                                                  for view in ("cam00", "cam01", "cam02"))]
    lift(0), lift(2)
    assert _expect(multiview, "in all 9 frames the head box or face crop lies wholly outside the image").startswith(
        f"{multiview / 'train'}: ")


# ---------------------------------------------------------------------------------------------
# Synthetic captures


def test_synthetic_capture_has_views_and_heldout_views(tmp_path: Path):
    out = make_dataset(tmp_path / "mv", num_frames=5, resolution=32, eval_fraction=0.2, num_views=4,
                       view_layout="ring", heldout_views=(2,), image_format="png", progress=False)
    np.testing.assert_allclose(view_yaws(4, "ring"), [0, 90, 180, 270])
    np.testing.assert_allclose(view_yaws(3, "arc", 90.0), [-45, 0, 45])
    camera = json.loads((out / "camera.json").read_text())
    assert list(camera["views"]) == ["cam00", "cam01", "cam02", "cam03"] and camera["heldout_views"] == ["cam02"]
    assert len(list((out / "train").glob("img_*_cam*.png"))) == 16 and len(list((out / "train").glob("params_*"))) == 4
    info = json.loads((out / synth.SYNTH_FILE).read_text())
    assert info["views"] == list(camera["views"]) and info["heldout_views"] == ["cam02"]
    rig = CameraRig.from_json(camera, out / "camera.json")
    # Each view is exactly the head rendered through its own camera; the back view sees no face.
    params = load_params(out / "train" / "params_00001.npz")
    expression = synth.Expression.from_array(params.extra["expression"])
    background_seed = _dataset_seeds(0, 0)[2]
    for i, name in enumerate(rig.names):
        rgb, mask = synth.render_head(synth.HeadIdentity.preset(0), expression, params.pose, params.scale,
                                      rig.views[name], synth.make_background(32, 32, background_seed + i))
        # (params are stored as float32: edge pixels may move by a hair)
        assert np.abs(np.asarray(Image.open(out / "train" / f"img_00001_{name}.png"), dtype=np.float32) / 255
                      - rgb).mean() <= 1 / 255
    front = np.asarray(Image.open(out / "train" / "img_00001_cam00.png"), dtype=np.float32)
    back = np.asarray(Image.open(out / "train" / "img_00001_cam02.png"), dtype=np.float32)
    assert np.abs(front - back).mean() > 5
    parser = parser_for(out)
    assert parser.get_dataparser_outputs("train").metadata["encoder_view"] == "cam00"
    assert parser.views_of("train") == ["cam00", "cam01", "cam03"] and parser.views_of("eval") == rig.names


def test_synth_cli_multiview_and_refuses_a_nonempty_directory(tmp_path: Path, monkeypatch, capsys):
    out = tmp_path / "cli"
    argv = ["ns-latentavatar-synth", "--output-dir", str(out), "--num-frames", "2", "--resolution", "16",
            "--num-views", "3", "--view-spread", "60", "--heldout-views", "0"]
    monkeypatch.setattr(sys, "argv", argv)
    entrypoint()
    assert "3 views (arc; held out: cam00)" in capsys.readouterr().out
    assert len(list(out.glob("*/img_*_cam0?.jpg"))) == 6
    with pytest.raises(SystemExit) as err:
        entrypoint()
    assert str(err.value) == f"error: {out} is not empty; pass overwrite=True (--overwrite) to replace it"
    monkeypatch.setattr(sys, "argv", argv + ["--overwrite"])
    entrypoint()
    monkeypatch.setattr(sys, "argv", argv[:-1] + ["7", "--overwrite"])
    with pytest.raises(SystemExit, match="held-out view 7 does not exist"):
        entrypoint()


# ---------------------------------------------------------------------------------------------
# Training


def multiview_trainer(data: Path, out: Path):
    """A set-up CPU trainer of the tiny config on ``data``, two views of one moment per batch."""
    from latentavatar_ns.method.configs import tiny_config
    from nerfstudio.engine.trainer import Trainer

    torch.manual_seed(0)
    config = tiny_config()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.views_per_moment = 2
    config.output_dir = out
    config.vis = "tensorboard"
    config.machine.device_type = "cpu"
    config.set_timestamp()
    trainer = Trainer(config)
    trainer.setup()
    return trainer


def test_batches_share_a_moment_and_one_code(tmp_path: Path):
    """views_per_moment=2: each batch is two views of one moment; the model encodes the moment once."""
    data = write_multiview_dataset(tmp_path / "mv", moments={"train": 4, "eval": 1}, heldout=(0,), size=32)
    pipeline = multiview_trainer(data, tmp_path / "runs").pipeline
    manager = pipeline.datamanager
    seen = []
    for step in range(4):  # one epoch: 4 moments x 2 training views
        cameras, batch = manager.next_train(step)
        codes = batch["code_idx"].tolist()
        assert codes[0] == codes[1], codes
        assert batch["image_idx"][0] != batch["image_idx"][1]
        seen += batch["image_idx"].tolist()
    assert sorted(seen) == list(range(8)), "every image once per epoch"
    pipeline.train()
    model = pipeline.model
    assert model.field.view_dependent, "latentavatar-tiny's auto setting keeps the direction for several views"
    codes = []
    original = model.mapping.forward
    model.mapping.forward = lambda code: codes.append(code) or original(code)  # type: ignore[method-assign]
    model(cameras, batch)
    model.mapping.forward = original  # type: ignore[method-assign]
    assert torch.equal(codes[0][0], codes[0][1]), "one code per moment, even with the encoder's training noise"
    # A training camera of the viewer (cam_idx counts images) shows its moment's code.
    image_codes = manager.train_dataset.cameras.metadata["code_idx"][:, 0]
    assert torch.equal(model.train_image_codes, image_codes)
    last = len(image_codes) - 1
    viewer_camera = manager.train_dataset.cameras[last:last + 1]
    viewer_camera.metadata = {"cam_idx": last}
    assert torch.equal(model.code_table.lookup(viewer_camera)[0], model.frame_codes[image_codes[last]])


@pytest.mark.slow
def test_short_multiview_training_loss_falls(tmp_path: Path):
    data = make_dataset(tmp_path / "mv", num_frames=8, resolution=48, eval_fraction=0.25, num_views=3,
                        view_spread=90.0, heldout_views=(0,), progress=False)
    trainer = multiview_trainer(data, tmp_path / "runs")
    pipeline = trainer.pipeline
    losses = []
    for step in range(120):
        trainer.optimizers.zero_grad_all()
        _, loss_dict, _ = pipeline.get_train_loss_dict(step)
        loss = sum(loss_dict.values())
        loss.backward()
        trainer.optimizers.optimizer_step_all()
        losses.append(float(loss.detach()))
    first, last = np.mean(losses[:15]), np.mean(losses[-15:])
    assert last < 0.7 * first, (first, last)
    # One stored code per train moment, all filled.
    assert pipeline.model.frame_codes.shape[0] == 8
    assert (pipeline.model.frame_codes[:6].abs().sum(dim=1) > 0).all()
