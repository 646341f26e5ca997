"""A ``latentavatar-tiny`` trainer set up in-process, for tests that drive steps and renders themselves."""

from __future__ import annotations

from pathlib import Path

import torch

from latentavatar_ns.method.configs import tiny_config
from latentavatar_ns.method.trainer import LatentAvatarTrainerConfig


def tiny_trainer_config(data: Path, out: Path, device: str = "cpu", mixed_precision: bool = False,
                        **model_options) -> LatentAvatarTrainerConfig:
    """``latentavatar-tiny`` on ``data``, written under ``out``, noise-free (density and encoder noise off)
    unless ``model_options`` say otherwise."""
    config = tiny_config()
    config.mixed_precision = mixed_precision
    config.pipeline.datamanager.data = data
    for key, value in {"density_noise_std": 0.0, "encoder_noise_std": 0.0, **model_options}.items():
        setattr(config.pipeline.model, key, value)
    config.output_dir, config.vis, config.machine.device_type = out, "tensorboard", device
    config.max_num_iterations = 10**6
    config.set_timestamp()
    return config


def tiny_trainer(data: Path, out: Path, device: str = "cpu", mixed_precision: bool = False, **model_options):
    """A set-up trainer of :func:`tiny_trainer_config`, seeded."""
    torch.manual_seed(0)
    config = tiny_trainer_config(data, out, device, mixed_precision, **model_options)
    trainer = config.setup()
    trainer.setup()
    return trainer
