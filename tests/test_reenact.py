"""Cross-identity reenactment: the Y-network and mapping, their trainer, and the reenactment renderer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli

from latentavatar_ns.reenact.ynet import YNetSpec, YNetwork, ssim

NUM_ACTOR_FRAMES = 24


def one_line_error(exc: pytest.ExceptionInfo) -> str:
    """The message of a command that stopped with sys.exit("error: ...")."""
    message = str(exc.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def actor_dataset(tmp_path_factory) -> Path:
    """Person B: another synthetic identity with its own performance (64 px)."""
    from latentavatar_ns.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("actor") / "bob", identity=1, num_frames=NUM_ACTOR_FRAMES,
                        resolution=64, eval_fraction=0.25, seed=0, progress=False)


@pytest.fixture(scope="module")
def avatar_run(synthetic_dataset: Path, tmp_path_factory) -> Path:
    """A short real ``ns-train latentavatar-tiny`` run of person A; returns its config.yml."""
    out = tmp_path_factory.mktemp("avatar_runs")
    result = run_cli(["ns-train", "latentavatar-tiny", "--data", str(synthetic_dataset), "--output-dir", str(out),
                      "--experiment-name", "r", "--timestamp", "a", "--vis", "tensorboard",
                      "--machine.device-type", "cpu", "--max-num-iterations", "30", "--steps-per-save", "30"],
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "r" / "latentavatar-tiny" / "a" / "config.yml"


@pytest.fixture(scope="module")
def ynet_run(avatar_run: Path, actor_dataset: Path, tmp_path_factory):
    """A short Y-network training for (A, B); returns (output folder, result)."""
    from latentavatar_ns.reenact.train_ynet import YNetTrainConfig, train_ynet

    out = tmp_path_factory.mktemp("ynet") / "a_b"
    cfg = YNetTrainConfig(load_config=avatar_run, actor_data=actor_dataset, output_dir=out, steps=160, batch_size=8,
                          learning_rate=1e-3, steps_per_log=5, steps_per_save=80, device="cpu")
    return out, train_ynet(cfg)


def relative_error(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over frames of |theta_pred - theta| / |theta|."""
    return float(((pred - target).norm(dim=1) / target.norm(dim=1)).mean())


# ----------------------------------------------------------------------------------------------
# Networks


def test_ynet_shapes_paper_configuration():
    ynet = YNetwork(YNetSpec()).requires_grad_(False)  # 128^2 crops, 256-d shared code, theta 128
    crops = torch.rand(2, 3, 128, 128)
    code = ynet.encode(crops)
    assert code.shape == (2, 256)
    for decoder in (ynet.decoder_avatar, ynet.decoder_actor):
        out = decoder(code)
        assert out.shape == (2, 3, 128, 128) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert ynet.theta(crops).shape == (2, 128)
    linears = [m for m in ynet.mapping.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 256), (256, 256), (256, 128)]
    # E_shared is the avatar's encoder architecture: the same parameter names and shapes.
    from latentavatar_ns.model.encoder import ExpressionEncoder

    reference = ExpressionEncoder(128, (32, 64, 128, 256), 256).state_dict()
    assert {k: v.shape for k, v in ynet.encoder.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    # Crops of another size are resampled to the encoder's.
    assert ynet.encode(torch.rand(1, 3, 256, 256)).shape == (1, 256)


def test_ssim_matches_the_reference_implementation():
    from torchmetrics.functional import structural_similarity_index_measure

    torch.manual_seed(0)
    target = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 70, 70), 7, 1)
    pred = (target + 0.08 * torch.randn_like(target)).clamp(0, 1)
    expected = float(structural_similarity_index_measure(pred, target, data_range=1.0))
    assert abs(float(ssim(pred, target)) - expected) < 2e-3
    assert float(ssim(target, target)) == pytest.approx(1.0, abs=1e-5)


def test_follow_poses_keep_own_motion_and_normalise_scale():
    from latentavatar_ns.data.poses import axis_angle_to_matrix
    from latentavatar_ns.reenact.reenact import HeadPoses, follow_poses

    rng = np.random.default_rng(0)
    rots = np.stack([axis_angle_to_matrix(rng.normal(0, 0.2, 3)) for _ in range(10)])
    poses = HeadPoses(rots, rng.normal(0, 0.01, (10, 3)), rng.uniform(0.09, 0.11, 10))
    # Driven by itself: exactly its own poses.
    same = follow_poses(poses, poses.mean(), poses.mean())
    assert np.allclose(same.rotations, poses.rotations, atol=1e-9)
    assert np.allclose(same.translations, poses.translations) and np.allclose(same.scales, poses.scales)
    # A driver with a twice larger head, shifted and turned: its motion lands on the avatar's mean pose and size.
    turn = axis_angle_to_matrix(np.array([0.0, 0.3, 0.0]))
    driver = HeadPoses(rots @ turn, poses.translations * 2 + 0.5, poses.scales * 2)
    out = follow_poses(driver, driver.mean(), poses.mean())
    assert np.allclose(out.scales, poses.scales) and np.allclose(out.translations, poses.translations)
    assert np.allclose(out.rotations @ np.swapaxes(out.rotations[:1], 1, 2),
                       driver.rotations @ np.swapaxes(driver.rotations[:1], 1, 2), atol=1e-9)
    assert np.allclose(out.mean()[0], poses.mean()[0], atol=1e-6)
    # Smoothing keeps rotations orthonormal.
    smooth = driver.smoothed(5).rotations
    assert np.allclose(smooth @ np.swapaxes(smooth, 1, 2), np.eye(3), atol=1e-9)


# ----------------------------------------------------------------------------------------------
# Training


@pytest.mark.slow
def test_ynet_losses_fall(ynet_run):
    _, result = ynet_run
    rows = result.history
    assert rows[0]["step"] == 0 and rows[-1]["step"] == 159
    for key in ("avatar/image", "actor/image", "avatar/code"):
        first = np.mean([r[key] for r in rows[:3]])
        last = np.mean([r[key] for r in rows[-3:]])
        assert last < 0.75 * first, (key, first, last)


@pytest.mark.slow
def test_mapping_reproduces_the_avatar_theta(ynet_run, avatar_run: Path, synthetic_dataset: Path):
    from latentavatar_ns.reenact.avatar import load_avatar, load_crops, open_splits, parser_for
    from latentavatar_ns.reenact.train_ynet import load_ynet

    out, _ = ynet_run
    avatar = load_avatar(avatar_run)
    crop = avatar.spec.crop_size
    crops = load_crops(open_splits(parser_for(avatar.parser_config, synthetic_dataset), "train", crop), crop)
    target = avatar.theta(crops)
    trained, _ = load_ynet(out)
    with torch.no_grad():
        err_trained = relative_error(trained.theta(crops.float() / 255), target)
        torch.manual_seed(0)
        err_untrained = relative_error(YNetwork(avatar.spec).eval().theta(crops.float() / 255), target)
    assert err_trained < 0.05, err_trained
    assert err_untrained > 0.5, err_untrained


@pytest.mark.slow
def test_init_from_avatar_starts_as_the_direct_path(avatar_run: Path, actor_dataset: Path, synthetic_dataset: Path,
                                                    tmp_path: Path):
    """--init-from-avatar copies the teacher's encoder and mapping: before any update the Y-network's theta is
    the avatar's own, for its own crops and for the actor's."""
    from latentavatar_ns.reenact.avatar import load_avatar, load_crops, open_splits, parser_for
    from latentavatar_ns.reenact.train_ynet import YNetTrainConfig, load_ynet, train_ynet

    avatar = load_avatar(avatar_run)
    crop = avatar.spec.crop_size
    crops = torch.cat([load_crops(open_splits(parser_for(avatar.parser_config, data), "train", crop), crop)
                       for data in (synthetic_dataset, actor_dataset)])
    target = avatar.theta(crops)
    for init in (True, False):
        out = tmp_path / f"init_{init}"
        train_ynet(YNetTrainConfig(load_config=avatar_run, actor_data=actor_dataset, output_dir=out, steps=1,
                                   batch_size=2, learning_rate=0.0, device="cpu", init_from_avatar=init))
        with torch.no_grad():
            err = relative_error(load_ynet(out)[0].theta(crops.float() / 255), target)
        assert (err < 1e-5) if init else (err > 0.5), (init, err)


@pytest.mark.slow
def test_ynet_outputs_checkpoints_preview_and_logs(ynet_run, avatar_run: Path):
    from PIL import Image

    from latentavatar_ns.reenact.train_ynet import read_checkpoint

    out, result = ynet_run
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-000000079.pt", "step-000000159.pt"]  # no temporary files left behind
    assert result.checkpoint == out / "checkpoints" / "step-000000159.pt"
    data = read_checkpoint(out)
    assert data["step"] == 159 and data["avatar"]["config_path"] == str(avatar_run)
    assert {"teacher_sha256", "code_dim", "theta_dim", "crop_size"} <= set(data["avatar"]["fingerprint"])
    with Image.open(out / "preview.png") as preview:  # input | D_ava | D_act, 4 avatar then 4 actor rows
        assert preview.size == (3 * 64, 8 * 64)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_ynet_refuses_non_empty_output_and_resumes(avatar_run: Path, actor_dataset: Path, tmp_path: Path):
    from latentavatar_ns.reenact.train_ynet import read_checkpoint
    from latentavatar_ns.scripts.ynet import entrypoint

    out = tmp_path / "ynet"
    args = ["--load-config", str(avatar_run), "--actor-data", str(actor_dataset), "--output-dir", str(out),
            "--batch-size", "4", "--steps-per-save", "2", "--device", "cpu"]
    entrypoint(args + ["--steps", "2"])
    with pytest.raises(SystemExit) as exc:
        entrypoint(args + ["--steps", "2"])
    assert "is not empty; pass --resume" in one_line_error(exc)
    entrypoint(args + ["--steps", "4", "--resume"])
    assert read_checkpoint(out)["step"] == 3
    entrypoint(args + ["--steps", "2", "--overwrite"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000000001.pt"]


@pytest.mark.slow
def test_ynet_resume_skips_a_damaged_checkpoint_and_stops_on_non_finite_losses(avatar_run: Path,
                                                                               actor_dataset: Path, tmp_path: Path,
                                                                               monkeypatch):
    import latentavatar_ns.reenact.train_ynet as train_ynet_module
    from latentavatar_ns.reenact.train_ynet import read_checkpoint
    from latentavatar_ns.scripts.ynet import entrypoint

    out = tmp_path / "ynet"
    args = ["--load-config", str(avatar_run), "--actor-data", str(actor_dataset), "--output-dir", str(out),
            "--batch-size", "4", "--steps-per-save", "2", "--keep-checkpoints", "3", "--device", "cpu"]
    entrypoint(args + ["--steps", "4"])
    newest = out / "checkpoints" / "step-000000003.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # as if the disk failed under it
    with pytest.warns(UserWarning, match="step-000000003.pt: cannot read checkpoint"):
        assert read_checkpoint(out)["step"] == 1

    real = train_ynet_module._pass_losses
    calls = {"n": 0}

    def diverging(*a, **kw):  # finite for the first resumed step, NaN from then on
        calls["n"] += 1
        losses = real(*a, **kw)
        return {k: v * float("nan") for k, v in losses.items()} if calls["n"] > 2 else losses

    monkeypatch.setattr(train_ynet_module, "_pass_losses", diverging)
    with pytest.warns(UserWarning), pytest.raises(SystemExit) as exc:
        entrypoint(args + ["--steps", "20", "--resume", "--max-nonfinite-steps", "3"])
    assert "training diverged: 3 steps in a row with a non-finite" in one_line_error(exc)
    saved = read_checkpoint(out)
    assert saved["step"] == 2  # resumed at 2 from step 1, the last good step saved before stopping
    assert all(torch.isfinite(v).all() for v in saved["ynet"].values())


# ----------------------------------------------------------------------------------------------
# Reenactment


@pytest.mark.slow
def test_reenact_writes_one_frame_per_driving_frame(ynet_run, avatar_run: Path, actor_dataset: Path,
                                                    tmp_path: Path):
    from latentavatar_ns.scripts.reenact import entrypoint
    from latentavatar_ns.utils.video import read_video

    out, _ = ynet_run
    video = tmp_path / "out.mp4"
    entrypoint(["--load-config", str(avatar_run), "--ynet", str(out), "--driving", str(actor_dataset),
          "--output-path", str(video), "--side-by-side", "--smooth", "3", "--frames-dir", str(tmp_path / "frames")])
    frames = read_video(video)
    assert frames.shape == (NUM_ACTOR_FRAMES, 64, 128, 3)  # driver | avatar, one per driving frame
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == NUM_ACTOR_FRAMES
    # The avatar half moves with the driver: not the same image every frame.
    assert np.abs(frames[:, :, 64:].astype(float) - frames[:1, :, 64:]).mean() > 0.5


@pytest.mark.slow
def test_self_reenactment_fixed_pose_and_camera_path(avatar_run: Path, synthetic_dataset: Path, tmp_path: Path):
    from latentavatar_ns.scripts.reenact import entrypoint
    from latentavatar_ns.utils.video import read_video

    num_eval = len(list((synthetic_dataset / "eval").glob("img_*")))
    entrypoint(["--load-config", str(avatar_run), "--self", "--output-path", str(tmp_path / "self.mp4")])
    assert read_video(tmp_path / "self.mp4").shape == (num_eval, 64, 64, 3)

    entrypoint(["--load-config", str(avatar_run), "--self", "--pose", "fixed", "--split", "train",
          "--output-path", str(tmp_path / "fixed.mp4")])
    assert len(read_video(tmp_path / "fixed.mp4")) == len(list((synthetic_dataset / "train").glob("img_*")))

    # A viewer camera path (nerfstudio's render-panel JSON), stretched over the driving frames.
    eye = np.eye(4)
    eye[2, 3] = 40.0  # canonical units: the official camera distance over the head scale
    path = {"render_height": 48, "render_width": 48, "seconds": 1.0, "camera_path": [
        {"camera_to_world": eye.reshape(-1).tolist(), "fov": 6.0, "aspect": 1.0},
        {"camera_to_world": eye.reshape(-1).tolist(), "fov": 7.0, "aspect": 1.0}]}
    (tmp_path / "path.json").write_text(json.dumps(path))
    entrypoint(["--load-config", str(avatar_run), "--self", "--camera-path", str(tmp_path / "path.json"),
          "--output-path", str(tmp_path / "path.mp4")])
    assert read_video(tmp_path / "path.mp4").shape == (num_eval, 48, 48, 3)


@pytest.mark.slow
def test_ynet_of_another_avatar_is_refused(ynet_run, avatar_run: Path, actor_dataset: Path, tmp_path: Path):
    from latentavatar_ns.scripts.reenact import entrypoint

    # Another avatar: the same run moved elsewhere with different encoder weights.
    other = tmp_path / "other_run"
    shutil.copytree(avatar_run.parent, other)
    ckpt = sorted((other / "nerfstudio_models").glob("*.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["pipeline"]["_model.encoder.fc.bias"] += 0.01
    torch.save(state, ckpt)
    out, _ = ynet_run
    with pytest.raises(SystemExit) as exc:
        entrypoint(["--load-config", str(other / "config.yml"), "--ynet", str(out), "--driving", str(actor_dataset),
              "--output-path", str(tmp_path / "x.mp4")])
    assert "trained for another avatar" in one_line_error(exc)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_empty_driving_set_is_refused(ynet_run, avatar_run: Path, tmp_path: Path):
    from latentavatar_ns.scripts.reenact import entrypoint

    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "eval").mkdir()
    out, _ = ynet_run
    with pytest.raises(SystemExit) as exc:
        entrypoint(["--load-config", str(avatar_run), "--ynet", str(out), "--driving", str(empty),
              "--output-path", str(tmp_path / "x.mp4")])
    assert f"{empty / 'train'}: split is empty" in one_line_error(exc)


@pytest.mark.slow
def test_bad_command_lines_fail_with_one_line(avatar_run: Path, actor_dataset: Path, tmp_path: Path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 64)
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"\x00")
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("keep")
    cases = [
        (["ns-latentavatar-reenact", "--load-config", str(avatar_run), "--ynet", str(tmp_path), "--driving",
          str(clip), "--output-path", str(tmp_path / "o.mp4")],
         f"error: {clip}: driving dataset is a video file; run ns-latentavatar-process on it first"),
        (["ns-latentavatar-reenact", "--load-config", str(avatar_run), "--self", "--output-path", str(existing)],
         f"error: {existing} already exists; pass --overwrite to replace it"),
        (["ns-latentavatar-reenact", "--load-config", str(avatar_run), "--self", "--output-path",
          str(tmp_path / "o.mp4"), "--frames-dir", str(user_dir)],
         f"error: {user_dir} already holds files; pass --overwrite to replace them"),
        (["ns-latentavatar-reenact", "--load-config", str(tmp_path / "missing.yml"), "--self", "--output-path",
          str(tmp_path / "o.mp4")], f"error: {tmp_path / 'missing.yml'}: avatar config not found"),
        (["ns-latentavatar-ynet", "--load-config", str(avatar_run), "--actor-data", str(clip), "--output-dir",
          str(tmp_path / "y")], f"error: {clip}: actor dataset is a video file; run ns-latentavatar-process"),
    ]
    for args, expected in cases:
        result = run_cli(args, timeout=120)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith(expected), (args[0], result.stderr[-2000:])
    assert existing.read_bytes() == b"\x00" and (user_dir / "notes.txt").read_text() == "keep"
