"""The CUDA paths against the CPU reference: same weights, same render; training (fp32 and fp16) learns.

Skipped without a GPU; ``LATENTAVATAR_TEST_DEVICE=cpu`` runs the same checks CPU against CPU, which
exercises the tests themselves.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from trainers import tiny_trainer

from latentavatar_ns.model.hash_encoding import GatherHashEncoding
from latentavatar_ns.model.sampling import ProposalSampler, tcnn_available

DEVICE = os.environ.get("LATENTAVATAR_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("sampler", ["uniform", "proposal", "occupancy"])
def test_render_matches_cpu(synthetic_dataset: Path, tmp_path: Path, sampler: str):
    if sampler == "proposal" and DEVICE == "cuda" and tcnn_available():
        pytest.skip("tiny-cuda-nn's hash grid keeps its weights in another layout than the torch one")
    cpu = tiny_trainer(synthetic_dataset, tmp_path / "cpu", "cpu", sampler=sampler).pipeline
    dev = tiny_trainer(synthetic_dataset, tmp_path / "dev", DEVICE, sampler=sampler).pipeline
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


@pytest.mark.skipif(tcnn_available(), reason="tiny-cuda-nn's encoding is used as it is")
def test_proposal_hash_grid_gradient_matches_cpu():
    """The proposal network's table reads (sorted-backward ones on CUDA): same density, same table gradient."""
    torch.manual_seed(0)
    cpu = ProposalSampler(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])).density_field
    dev = copy.deepcopy(cpu).to(DEVICE)
    assert isinstance(dev.encoding, GatherHashEncoding)
    points = torch.rand(1 << 16, 3) * 2.4 - 1.2  # some outside the box: they all share one corner's rows
    densities = []
    for field, x in ((cpu, points), (dev, points.to(DEVICE))):
        density = field.density_fn(x)
        density.sum().backward()
        densities.append(density.detach().cpu())
    torch.testing.assert_close(densities[1], densities[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dev.encoding.hash_table.grad.cpu(), cpu.encoding.hash_table.grad, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("mixed_precision", [False, True])
def test_training_loss_falls(synthetic_dataset: Path, tmp_path: Path, mixed_precision: bool):
    if mixed_precision and DEVICE != "cuda":
        pytest.skip("fp16 mixed precision is a CUDA path")
    trainer = tiny_trainer(synthetic_dataset, tmp_path, DEVICE, mixed_precision=mixed_precision)
    losses = []
    for step in range(150):
        loss, _, _ = trainer.train_iteration(step)
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-20:]) / 20 < 0.7 * sum(losses[:20]) / 20, (losses[:5], losses[-5:])
