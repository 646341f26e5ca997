"""Nothing lost, nothing crashes: atomic checkpoints, resume after kill -9, non-finite steps, no overwrites."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import malformed_inputs
import pytest
import torch
from clitools import BIN

from latentavatar_ns.method.configs import tiny_config
from latentavatar_ns.method.trainer import LatentAvatarTrainer
from latentavatar_ns.utils.checkpoints import NonFiniteGuard, TrainingError, checkpoints_in, load_newest, prune
from latentavatar_ns.utils.io import atomic_write


def tiny_trainer_config(data: Path, out: Path, **overrides):
    config = tiny_config()
    config.pipeline.datamanager.data = data
    config.output_dir = out
    config.experiment_name = "x"
    config.vis = "tensorboard"
    config.machine.device_type = "cpu"
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**6
    config.timestamp = "run"
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def ns_train(data: Path, out: Path, *extra: str) -> List[str]:
    return [str(BIN / "ns-train"), "latentavatar-tiny", "--data", str(data), "--output-dir", str(out),
            "--experiment-name", "x", "--vis", "tensorboard", "--machine.device-type", "cpu", *extra]


# ----------------------------------------------------------------------------------------------
# Checkpoint files


class _FailsHalfway:
    """Pickles into a few bytes, then fails: a save interrupted mid-write."""

    def __reduce__(self):
        raise OSError("disk full")


def save(payload, path: Path, tmp_dir: Optional[Path] = None) -> None:
    with atomic_write(path, tmp_dir=tmp_dir) as tmp:
        torch.save(payload, tmp)


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path: Path):
    folder = tmp_path / "models"
    save({"step": 1, "w": torch.ones(3)}, folder / "step-000000001.ckpt", tmp_dir=tmp_path)
    with pytest.raises(OSError, match="disk full"):
        save({"step": 2, "w": torch.ones(3), "bad": _FailsHalfway()}, folder / "step-000000002.ckpt", tmp_dir=tmp_path)
    assert [p.name for p in folder.iterdir()] == ["step-000000001.ckpt"]
    assert [p.name for p in tmp_path.iterdir()] == ["models"]  # no temporary left behind
    assert torch.load(folder / "step-000000001.ckpt", weights_only=True)["step"] == 1


def test_prune_keeps_the_newest_and_ignores_other_files(tmp_path: Path):
    for step in (5, 10, 100, 20):
        (tmp_path / f"step-{step:09d}.ckpt").write_bytes(b"x")
    (tmp_path / ".step-000000200.123-0a1b2c3d.tmp.ckpt").write_bytes(b"partial")  # an atomic_write temporary
    prune(tmp_path, ".ckpt", keep=2)
    assert [p.name for p in checkpoints_in(tmp_path, ".ckpt")] == ["step-000000020.ckpt", "step-000000100.ckpt"]


def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path: Path):
    for step in (1, 2):
        save({"step": step}, tmp_path / f"step-{step:09d}.ckpt")
    newest = tmp_path / "step-000000002.ckpt"
    newest.write_bytes(newest.read_bytes()[:20])
    with pytest.warns(UserWarning, match="step-000000002.ckpt: cannot read checkpoint"):
        path, state = load_newest(checkpoints_in(tmp_path, ".ckpt"), lambda p: torch.load(p, weights_only=True))
    assert path.name == "step-000000001.ckpt" and state["step"] == 1
    (tmp_path / "step-000000001.ckpt").write_bytes(b"")
    with pytest.raises(TrainingError, match="no readable checkpoint"):
        load_newest(checkpoints_in(tmp_path, ".ckpt"), lambda p: torch.load(p, weights_only=True))


def test_non_finite_guard():
    guard = NonFiniteGuard(max_consecutive=3)
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, float("inf")])
    assert not guard.finite(torch.tensor(1.0), [p])
    assert not guard.finite(torch.tensor(float("nan")))
    p.grad = torch.ones(2)
    assert guard.finite(torch.tensor(1.0), [p])
    with pytest.warns(UserWarning, match="step 7: non-finite"):
        guard.record(False, 7)
    guard.record(True, 8)
    with pytest.warns(UserWarning), pytest.raises(TrainingError, match="3 steps in a row"):
        for step in range(9, 12):
            guard.record(False, step)


# ----------------------------------------------------------------------------------------------
# The trainer


@pytest.mark.slow
def test_kill_9_then_resume_restores_step_optimiser_and_codes(synthetic_dataset: Path, tmp_path: Path):
    out = tmp_path / "out"
    # Static planes from the first step, so that every parameter group has optimiser state to restore.
    proc = subprocess.Popen(ns_train(synthetic_dataset, out, "--timestamp", "a", "--steps-per-save", "4",
                                     "--max-num-iterations", "100000",
                                     "--pipeline.model.static-planes-start-step", "0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    models = out / "x" / "latentavatar-tiny" / "a" / "nerfstudio_models"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            found = checkpoints_in(models, ".ckpt")
            if found and found[-1].name >= "step-000000016.ckpt":
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    found = checkpoints_in(models, ".ckpt")
    assert found, err.decode()[-3000:]
    assert len(found) <= 3  # the newest few are kept
    assert sorted(models.iterdir()) == found  # temporaries live outside this folder
    newest = found[-1]
    saved = torch.load(newest, map_location="cpu", weights_only=True)

    config = tiny_trainer_config(synthetic_dataset, out, timestamp="b", resume=True)
    config.pipeline.model.static_planes_start_step = 0
    config.save_config()  # --resume finds the killed run
    assert Path(config.load_dir).resolve() == models.resolve()
    trainer = config.setup()
    trainer.setup()
    assert trainer._start_step == saved["step"] + 1
    codes = trainer.pipeline.model.frame_codes
    num_train = trainer.pipeline.model.num_train_frames
    assert torch.equal(codes[:num_train], saved["pipeline"]["_model.frame_codes"][:num_train])
    assert codes[:num_train].abs().sum() > 0
    for name, optimizer in trainer.optimizers.optimizers.items():
        ours, theirs = optimizer.state_dict()["state"], saved["optimizers"][name]["state"]
        assert ours.keys() == theirs.keys() and ours, name
        for key in ours:
            assert ours[key]["step"] == theirs[key]["step"]
            assert torch.equal(ours[key]["exp_avg"], theirs[key]["exp_avg"])


def _model_params(trainer) -> List[torch.Tensor]:
    return [p.detach().clone() for p in trainer.pipeline.model.parameters()]


def test_non_finite_steps_are_skipped_then_training_stops_with_the_last_good_state(synthetic_dataset: Path,
                                                                                   tmp_path: Path):
    torch.manual_seed(0)
    config = tiny_trainer_config(synthetic_dataset, tmp_path, max_nonfinite_steps=3)
    trainer: LatentAvatarTrainer = config.setup()
    trainer.setup()
    trainer.train_iteration(0)
    good = _model_params(trainer)
    codes = trainer.pipeline.model.frame_codes.clone()

    real = trainer.pipeline.get_train_loss_dict

    def nan_loss(step):
        model_outputs, loss_dict, metrics = real(step)
        return model_outputs, {**loss_dict, "rgb_loss": loss_dict["rgb_loss"] * float("nan")}, metrics

    trainer.pipeline.get_train_loss_dict = nan_loss
    with pytest.warns(UserWarning, match="step 1: non-finite"):
        trainer.train_iteration(1)
    assert all(torch.equal(a, b) for a, b in zip(good, _model_params(trainer)))
    assert torch.equal(codes, trainer.pipeline.model.frame_codes)

    # A finite loss with a NaN gradient is skipped too.
    trainer.pipeline.get_train_loss_dict = real
    param = next(trainer.pipeline.model.superres.parameters())
    handle = param.register_hook(lambda grad: grad * float("nan"))
    with pytest.warns(UserWarning, match="step 2: non-finite"):
        trainer.train_iteration(2)
    handle.remove()
    assert all(torch.equal(a, b) for a, b in zip(good, _model_params(trainer)))

    trainer.train_iteration(3)  # a good step resets the count
    assert trainer.nonfinite.consecutive == 0 and trainer.last_good_step == 3
    after_good = _model_params(trainer)
    trainer.pipeline.get_train_loss_dict = nan_loss
    with pytest.warns(UserWarning), pytest.raises(TrainingError, match="3 steps in a row"):
        for step in range(4, 10):
            trainer.train_iteration(step)
    saved = checkpoints_in(trainer.checkpoint_dir, ".ckpt")
    assert [p.name for p in saved] == ["step-000000003.ckpt"]
    state = torch.load(saved[0], weights_only=True)["pipeline"]
    names = [n for n, _ in trainer.pipeline.model.named_parameters()]
    assert all(torch.equal(state[f"_model.{n}"], p) for n, p in zip(names, after_good))


def test_a_run_folder_with_checkpoints_is_not_overwritten(synthetic_dataset: Path, tmp_path: Path):
    config = tiny_trainer_config(synthetic_dataset, tmp_path)
    models = config.get_checkpoint_dir()
    models.mkdir(parents=True)
    (models / "step-000000010.ckpt").write_bytes(b"precious")
    (models.parent / "config.yml").write_text("mine")
    with pytest.raises(TrainingError, match="already holds checkpoints; pass --load-dir"):
        config.save_config()
    assert (models.parent / "config.yml").read_text() == "mine"
    tiny_trainer_config(synthetic_dataset, tmp_path, load_dir=models).save_config()  # continuing it is fine
    tiny_trainer_config(synthetic_dataset, tmp_path, overwrite=True).save_config()
    assert (models / "step-000000010.ckpt").read_bytes() == b"precious"
    with pytest.raises(TrainingError, match="nothing to resume"):
        tiny_trainer_config(synthetic_dataset, tmp_path / "elsewhere", resume=True).save_config()
    with pytest.raises(TrainingError, match="would be written inside the dataset"):
        tiny_trainer_config(synthetic_dataset, synthetic_dataset / "runs").save_config()
    assert not (synthetic_dataset / "runs").exists()


@pytest.mark.slow
def test_ns_train_bad_data_leaves_no_run_folder(official_dataset: Path, tmp_path: Path):
    image = official_dataset / "train" / "img_00001.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 2 // 3])  # header intact, pixels cut: fails when decoded
    out = tmp_path / "out"
    result = subprocess.run(ns_train(official_dataset, out), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {image}: cannot decode image")
    assert not out.exists() or not any(out.rglob("*"))


# ----------------------------------------------------------------------------------------------
# Malformed input (the catalogue bench_robustness.py runs through every command)


def _load_everything(root: Path) -> None:
    """What ns-train does to a dataset before its first step: parse both splits, decode every frame."""
    from latentavatar_ns.data.dataparser import LatentAvatarDataParserConfig
    from latentavatar_ns.data.dataset import LatentAvatarDataset

    parser = LatentAvatarDataParserConfig(data=root).setup()
    for split in ("train", "test"):
        dataset = LatentAvatarDataset(parser.get_dataparser_outputs(split), crop_size=16)
        for i in range(len(dataset)):
            dataset.get_data(i)


@pytest.mark.parametrize("breaker", sorted(malformed_inputs.DATASET_BREAKERS))
def test_every_broken_dataset_is_one_error_naming_the_file(official_dataset: Path, tmp_path: Path, breaker: str):
    from latentavatar_ns.data.format import DatasetError

    _load_everything(official_dataset)  # the intact copy loads
    named = malformed_inputs.broken_dataset(official_dataset, tmp_path / "broken", breaker)
    with pytest.raises(DatasetError) as exc:
        _load_everything(tmp_path / "broken")
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(named)), message


def test_classify_sorts_endings():
    assert malformed_inputs.classify(1, "", "noise\nerror: /d/img.jpg: cannot read image\n", "/d/img.jpg") == \
        ("error", "error: /d/img.jpg: cannot read image")
    assert malformed_inputs.classify(1, "", "error: something else\n", "/d/img.jpg")[0] == "unclear-error"
    assert malformed_inputs.classify(1, "", "Traceback (most recent call last):\nKeyError: 1\n", "/d")[0] == "traceback"
    assert malformed_inputs.classify(0, "skipped 3 frames without a face\n", "", "/d")[0] == "skip"
    assert malformed_inputs.classify(0, "done\n", "", "/d")[0] == "accepted"
    assert malformed_inputs.classify(None, "", "", "/d")[0] == "timeout"


@pytest.fixture(scope="module")
def fixtures(synthetic_dataset: Path, tiny_trained_run: Path) -> malformed_inputs.Fixtures:
    from latentavatar_ns.assets.cache import asset_path

    return malformed_inputs.Fixtures(dataset=synthetic_dataset, avatar_config=tiny_trained_run,
                                     face_video=asset_path("single_face.mp4"),
                                     face_noface_video=asset_path("face_noface.mov"),
                                     face_image=asset_path("single_face.jpg"))


# The dataset cases run in-process above; through the commands, a sample of every other kind (all of them
# run in scripts/bench_robustness.py).
CLI_CASES = ["ns-train: NaN pose", "ns-train: run folder already holds checkpoints",
             "ns-train: --load-dir with only a damaged checkpoint", "synth: output folder not empty",
             "reenact: config points at missing checkpoints", "reenact: config is not YAML",
             "reenact: empty driving dataset", "ynet: output inside the actor dataset"]
CLI_CASES += [c.name for c in malformed_inputs.all_cases() if c.command == "ns-latentavatar-process"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_CASES)
def test_commands_refuse_malformed_input_with_one_line(fixtures: malformed_inputs.Fixtures, tmp_path: Path, name: str):
    case = next(c for c in malformed_inputs.all_cases() if c.name == name)
    outcome = malformed_inputs.run_case(case, tmp_path / "case", fixtures)
    assert outcome.ok, outcome
