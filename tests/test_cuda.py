"""The CUDA paths against the CPU reference: same weights, same render; training (fp32 and fp16) learns.

Skipped without a GPU; ``LATENTAVATAR_TEST_DEVICE=cpu`` runs the same checks CPU against CPU, which
exercises the tests themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from latentavatar_ns.configs import tiny_config
from latentavatar_ns.model.sampling import tcnn_available

DEVICE = os.environ.get("LATENTAVATAR_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")


def _trainer(data: Path, out: Path, device: str, mixed_precision: bool = False, **model_options):
    torch.manual_seed(0)
    config = tiny_config()
    config.mixed_precision = mixed_precision
    config.pipeline.datamanager.data = data
    for key, value in {"density_noise_std": 0.0, "encoder_noise_std": 0.0, **model_options}.items():
        setattr(config.pipeline.model, key, value)
    config.output_dir, config.vis, config.machine.device_type = out / device, "tensorboard", device
    config.max_num_iterations = 10**6
    config.set_timestamp()
    trainer = config.setup()
    trainer.setup()
    return trainer


@pytest.mark.parametrize("sampler", ["uniform", "proposal", "occupancy"])
def test_render_matches_cpu(synthetic_dataset: Path, tmp_path: Path, sampler: str):
    if sampler == "proposal" and DEVICE == "cuda" and tcnn_available():
        pytest.skip("tiny-cuda-nn's hash grid keeps its weights in another layout than the torch one")
    cpu = _trainer(synthetic_dataset, tmp_path, "cpu", sampler=sampler).pipeline
    dev = _trainer(synthetic_dataset, tmp_path / "dev", DEVICE, sampler=sampler).pipeline
    dev.model.load_state_dict(cpu.model.state_dict())
    renders = []
    for pipeline in (cpu, dev):
        pipeline.model.eval()
        item = pipeline.datamanager.eval_dataset.get_data(0)
        camera = pipeline.datamanager.eval_dataset.cameras[0:1]
        with torch.no_grad():
            renders.append(pipeline.model.get_outputs_for_camera(camera, batch=item)["rgb"].cpu())
    assert renders[1].shape == renders[0].shape
    assert (renders[1] - renders[0]).abs().max() < 2e-3


@pytest.mark.parametrize("mixed_precision", [False, True])
def test_training_loss_falls(synthetic_dataset: Path, tmp_path: Path, mixed_precision: bool):
    if mixed_precision and DEVICE != "cuda":
        pytest.skip("fp16 mixed precision is a CUDA path")
    trainer = _trainer(synthetic_dataset, tmp_path, DEVICE, mixed_precision=mixed_precision)
    losses = []
    for step in range(150):
        loss, _, _ = trainer.train_iteration(step)
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-20:]) / 20 < 0.7 * sum(losses[:20]) / 20, (losses[:5], losses[-5:])
