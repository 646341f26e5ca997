"""Training through nerfstudio's own trainer and CLI: the loss falls, held-out PSNR rises, checkpoints reload."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from clitools import run_cli
from trainers import tiny_trainer

from latentavatar_ns.method.configs import tiny_config


def heldout_psnr(pipeline) -> float:
    return pipeline.get_average_eval_image_metrics()["psnr"]


@pytest.mark.slow
def test_short_training_loss_falls_and_heldout_psnr_rises(synthetic_dataset: Path, tmp_path: Path):
    from nerfstudio.engine.trainer import Trainer

    torch.manual_seed(0)
    config = tiny_config()
    config.pipeline.datamanager.data = synthetic_dataset
    config.output_dir = tmp_path
    config.vis = "tensorboard"
    config.machine.device_type = "cpu"
    config.max_num_iterations = 300
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**6
    config.steps_per_save = 10**6
    config.set_timestamp()
    trainer = Trainer(config)
    trainer.setup()
    pipeline = trainer.pipeline
    before = heldout_psnr(pipeline)

    losses = []
    for step in range(config.max_num_iterations):
        for optimizer in trainer.optimizers.optimizers.values():
            optimizer.zero_grad()
        _, loss_dict, _ = pipeline.get_train_loss_dict(step)
        loss = sum(loss_dict.values())
        loss.backward()
        for optimizer in trainer.optimizers.optimizers.values():
            optimizer.step()
        losses.append(float(loss.detach()))
    after = heldout_psnr(pipeline)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)
    assert after > before + 4.0, (before, after)
    # Codes of every training frame were stored along the way.
    num_train = pipeline.model.num_train_frames
    assert (pipeline.model.frame_codes[:num_train].abs().sum(dim=1) > 0).all()


@pytest.fixture(scope="module")
def trained_run(synthetic_dataset: Path, tmp_path_factory) -> Path:
    """A short real ``ns-train latentavatar-tiny`` run; returns its config.yml.

    No ``--machine.device-type``: without CUDA the method's default is the CPU.
    """
    out = tmp_path_factory.mktemp("runs")
    result = run_cli(["ns-train", "latentavatar-tiny", "--data", str(synthetic_dataset), "--output-dir", str(out),
                      "--experiment-name", "t", "--timestamp", "a", "--vis", "tensorboard",
                      "--max-num-iterations", "40", "--steps-per-save", "20"])
    assert result.returncode == 0, result.stderr[-3000:]
    config = out / "t" / "latentavatar-tiny" / "a" / "config.yml"
    assert config.exists()
    return config


@pytest.mark.slow
def test_ns_train_help_lists_the_methods():
    result = run_cli(["ns-train", "--help"], timeout=300)
    assert result.returncode == 0
    assert "latentavatar-tiny" in result.stdout and "latentavatar " in result.stdout.replace("\n", " ")


@pytest.mark.slow
def test_checkpoint_reloads_with_eval_setup(trained_run: Path):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, ckpt, step = eval_setup(trained_run, test_mode="test")
    assert step == 39 and ckpt.name == "step-000000039.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # no numpy objects inside
    assert not any(key.startswith("_model._lpips") for key in state["pipeline"])
    # The held-out frames were encoded on load: camera-only renders show their own expressions.
    model = pipeline.model
    num_train = model.num_train_frames
    eval_codes = model.frame_codes[num_train:]
    assert (eval_codes.abs().sum(dim=1) > 0).all()
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    item = pipeline.datamanager.eval_dataset.get_data(0)
    from_camera = model.get_outputs_for_camera(camera)["rgb"]
    from_image = model.get_outputs_for_camera(camera, batch=item)["rgb"]
    assert torch.allclose(from_camera, from_image, atol=1e-5)
    assert from_camera.shape == (64, 64, 3)


@pytest.mark.slow
def test_expression_gain_is_zero_for_an_avatar_that_ignores_its_code(trained_run: Path, monkeypatch):
    from nerfstudio.utils.eval_utils import eval_setup

    from latentavatar_ns.evaluation.metrics import expression_gain

    _, pipeline, _, _ = eval_setup(trained_run, test_mode="test")
    gain = expression_gain(pipeline)
    assert set(gain) == {"face_box_db", "mouth_db"}
    assert all(torch.isfinite(torch.tensor(v)) and v != 0.0 for v in gain.values())  # own codes render differently
    model = pipeline.model
    average = model.code_table.mean()  # an encoder that gives every crop the mean training code
    monkeypatch.setattr(model, "encode", lambda crops: average.expand(len(crops), -1))
    model.clear_plane_cache()
    assert expression_gain(pipeline) == {"face_box_db": 0.0, "mouth_db": 0.0}


@pytest.mark.slow
def test_resume_with_load_dir(trained_run: Path, synthetic_dataset: Path):
    models = trained_run.parent / "nerfstudio_models"
    result = run_cli(["ns-train", "latentavatar-tiny", "--data", str(synthetic_dataset), "--output-dir",
                      str(trained_run.parents[3] / "resumed"), "--experiment-name", "t", "--timestamp", "b",
                      "--vis", "tensorboard", "--machine.device-type", "cpu", "--max-num-iterations", "50",
                      "--load-dir", str(models)])
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = trained_run.parents[3] / "resumed" / "t" / "latentavatar-tiny" / "b"
    saved = sorted((resumed / "nerfstudio_models").glob("*.ckpt"))
    # nerfstudio resumes at the loaded step + 1 and runs --max-num-iterations more steps.
    assert saved and saved[-1].name == "step-000000089.ckpt"
    assert "Resuming at step 40 from" in result.stdout + result.stderr


@pytest.mark.slow
def test_ns_eval_reports_heldout_metrics(trained_run: Path, tmp_path: Path):
    out = tmp_path / "eval.json"
    result = run_cli(["ns-eval", "--load-config", str(trained_run), "--output-path", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(out.read_text())["results"]
    assert {"psnr", "ssim", "lpips"} <= set(metrics) or {"psnr", "ssim"} <= set(metrics)
    assert 5.0 < metrics["psnr"] < 60.0


@pytest.mark.slow
def test_ns_render_dataset_renders_heldout_frames(trained_run: Path, synthetic_dataset: Path, tmp_path: Path):
    out = tmp_path / "renders"
    result = run_cli(["ns-render", "dataset", "--load-config", str(trained_run), "--split", "test",
                      "--output-path", str(out), "--rendered-output-names", "rgb", "gt-rgb"])
    assert result.returncode == 0, result.stderr[-3000:]
    rendered = sorted(out.rglob("*.jpg")) + sorted(out.rglob("*.png"))
    num_eval = len(list((synthetic_dataset / "eval").glob("img_*")))
    assert len([p for p in rendered if "gt" not in str(p)]) == num_eval


@pytest.mark.slow
def test_ns_train_bad_data_is_one_line(tmp_path: Path):
    result = run_cli(["ns-train", "latentavatar-tiny", "--data", str(tmp_path / "missing"), "--output-dir",
                      str(tmp_path / "out"), "--vis", "tensorboard", "--machine.device-type", "cpu"], timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing'}: dataset folder does not exist"


@pytest.mark.slow
def test_ns_train_bad_heap_threshold_is_one_line(synthetic_dataset: Path, tmp_path: Path):
    result = run_cli(["ns-train", "latentavatar-tiny", "--data", str(synthetic_dataset), "--output-dir",
                      str(tmp_path / "out"), "--vis", "tensorboard", "--machine.device-type", "cpu",
                      "--cpu-heap-threshold-mib", "4096"], timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --cpu-heap-threshold-mib: the heap threshold must be below 2048 MiB, got 4096")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("config.yml"))  # no run folder left


@pytest.mark.slow
def test_saved_config_is_plain_yaml(trained_run: Path):
    text = trained_run.read_text()
    assert "latentavatar-tiny" in text
    assert yaml.load(text, Loader=yaml.Loader).pipeline.model.sr_scale == 4


def test_lr_final_factor_gives_every_group_the_late_fall_and_bad_values_are_refused(synthetic_dataset: Path,
                                                                                       tmp_path: Path):
    from latentavatar_ns.method.trainer import TrainingError
    from trainers import tiny_trainer_config

    config = tiny_trainer_config(synthetic_dataset, tmp_path)
    config.max_num_iterations, config.lr_final_factor, config.lr_decay_start = 200, 0.1, 0.5
    trainer = config.setup()
    trainer.setup()
    optimizers = trainer.optimizers
    assert set(optimizers.schedulers) == set(optimizers.optimizers) and "encoder" in optimizers.schedulers
    for name, scheduler in optimizers.schedulers.items():
        lr = optimizers.config[name]["optimizer"].lr
        assert scheduler.lr_lambdas[0](100) == 1.0 and scheduler.lr_lambdas[0](200) == pytest.approx(0.1)
        assert optimizers.optimizers[name].param_groups[0]["lr"] == lr
    config = tiny_trainer_config(synthetic_dataset, tmp_path / "bad")
    config.lr_final_factor = 1.5
    with pytest.raises(TrainingError, match="--lr-final-factor"):
        config.setup().setup()


def test_patch_wise_training_renders_a_window_of_the_frame(synthetic_dataset: Path, tmp_path: Path):
    from latentavatar_ns.model.rendering import cropped_cameras, resized_cameras
    from latentavatar_ns.model.rendering import camera_rays

    trainer = tiny_trainer(synthetic_dataset, tmp_path, train_patch_size=8)
    model = trainer.pipeline.model
    cameras, batch = trainer.pipeline.datamanager.next_train(0)
    model.train()
    outputs = model.get_outputs(cameras, batch)
    top, left, size = (int(v) for v in outputs["window"])
    assert size == 8 and outputs["rgb"].shape == (2, 32, 32, 3) and outputs["rgb_low"].shape == (2, 8, 8, 3)
    losses = model.get_loss_dict(outputs, batch)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # (the residual head's last layer starts at zero, so at the first step only it receives a gradient)
    assert model.superres.out.weight.grad.abs().sum() > 0

    # The window's rays are exactly the full frame's rays there, so its low-res render is the same.
    low = model.low_res_size(64, 64)
    full_cams = trainer.pipeline.datamanager.train_dataset.cameras[0:1]
    full = camera_rays(resized_cameras(full_cams, *low)).directions.reshape(*low, 3)
    cropped = cropped_cameras(resized_cameras(full_cams, *low), top, left, size)
    part = camera_rays(cropped).directions.reshape(size, size, 3)
    assert torch.allclose(part, full[top:top + size, left:left + size], atol=1e-6)
    model.eval()
    with torch.no_grad():
        planes = model.triplanes(model.code_table.lookup(full_cams))
        whole = model.render(planes, full_cams)
        window = model.render(planes, full_cams, (top, left, size))
    assert torch.allclose(window["rgb_low"], whole["rgb_low"][:, top:top + size, left:left + size], atol=1e-5)
    assert "window" not in whole and whole["rgb"].shape == (1, 64, 64, 3)


@pytest.mark.slow  # torch.compile from a cold cache: about two minutes on two cores
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_networks_match_eager_and_share_checkpoints(synthetic_dataset: Path, tmp_path: Path):
    eager, compiled = (tiny_trainer(synthetic_dataset, tmp_path / str(c), compile_networks=c).pipeline
                       for c in (False, True))
    assert compiled.model.superres._compiled_call_impl is not None  # the option really compiles
    assert eager.model.superres._compiled_call_impl is None
    assert compiled.model.state_dict().keys() == eager.model.state_dict().keys()
    compiled.model.load_state_dict(eager.model.state_dict())
    cameras, batch = eager.datamanager.next_train(0)
    grads = []
    for pipeline in (eager, compiled):
        pipeline.model.train()
        torch.manual_seed(1)
        outputs = pipeline.model.get_outputs(cameras, batch)
        sum(pipeline.model.get_loss_dict(outputs, batch).values()).backward()
        grads.append((outputs["rgb"].detach(), next(pipeline.model.superres.parameters()).grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-3, atol=1e-6)
    view = eager.datamanager.train_dataset.cameras[0:1]
    eager.model.eval()
    compiled.model.eval()
    renders = [p.model.get_outputs_for_camera(view)["rgb"] for p in (eager, compiled)]
    assert torch.allclose(renders[0], renders[1], atol=1e-5)
