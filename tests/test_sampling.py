"""Samplers: shapes and weights, a conservative occupancy grid, and reloading with another sampler."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox

from latentavatar_ns.data.format import OFFICIAL_BOX
from latentavatar_ns.model.field import TriplaneField
from latentavatar_ns.model.rendering import VolumeRenderer
from latentavatar_ns.model.sampling import OccupancyGrid, ProposalSampler, UniformBoxSampler

from test_training import run_cli

AABB = torch.tensor(OFFICIAL_BOX)


def _cameras(n: int = 2, size: int = 8) -> Cameras:
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 10.0]])[None].expand(n, 3, 4)
    return Cameras(camera_to_worlds=c2w, fx=size * 2.5, fy=size * 2.5, cx=size / 2, cy=size / 2,
                   width=size, height=size)


def _blobby_field(seed: int = 0):
    """A field with density in a few places only, and planes for several 'expressions'."""
    torch.manual_seed(seed)
    field = TriplaneField(plane_channels=4, hidden_dim=16, feature_dim=6)
    torch.nn.init.constant_(field.density_mlp[-1].bias, -4.0)
    planes = torch.randn(4, 3, 4, 8, 8) * 3.0
    return field, planes


SAMPLERS = {
    "uniform": lambda: UniformBoxSampler(24),
    "proposal": lambda: ProposalSampler(AABB, num_proposal_samples=24, num_nerf_samples=8, hash_max_res=32),
    "occupancy": lambda: OccupancyGrid(AABB, resolution=8, num_candidates=32, chunk=8),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_shapes_and_weights(name: str):
    field, planes = _blobby_field()
    renderer = VolumeRenderer(SceneBox(aabb=AABB), SAMPLERS[name]())
    renderer.train()
    samples, weights, feats, evaluated = renderer.weights(field, planes[:2], _cameras(2))
    n = 2 * 8 * 8
    assert weights.shape[0] == n and weights.shape[-1] == 1 and feats.shape[:2] == weights.shape[:2]
    assert (weights >= 0).all() and (weights.sum(dim=1) <= 1 + 1e-5).all()
    out = renderer(field, planes[:2], _cameras(2), torch.ones(3))
    assert out["features"].shape == (2, 6, 8, 8) and out["depth"].shape == (2, 8, 8, 1)
    assert 0 < float(out["field_evals_per_ray"]) <= samples.ray_samples.shape[1]
    if name == "proposal":
        assert out["sampler_loss"].requires_grad  # the interlevel loss trains the proposal network
        out["sampler_loss"].backward()


def test_baked_proposal_density_follows_the_network_and_its_weights():
    sampler = ProposalSampler(AABB, num_proposal_samples=24, num_nerf_samples=8, hash_max_res=32, bake_resolution=16)
    network = sampler.density_field.density_fn
    baked = sampler.baked_density()
    assert sampler.baked_density() is baked  # filled once while the weights stay put
    # At texel centres the baked grid reads back exactly the network's density.
    idx = torch.randint(0, 16, (200, 3))
    points = AABB[0] + (idx + 0.5) / 16 * (AABB[1] - AABB[0])
    with torch.no_grad():
        expected = network(points)
        torch.testing.assert_close(sampler._baked_density_fn(points), expected, rtol=1e-4, atol=1e-6)
        assert (sampler._baked_density_fn(AABB[1] + 0.1) == 0).all()  # nothing outside the box
        # A weight update (an optimiser step, a loaded checkpoint) invalidates the bake.
        for param in sampler.density_field.parameters():
            param.add_(0.1 * torch.randn_like(param))
        assert sampler.baked_density() is not baked
        torch.testing.assert_close(sampler._baked_density_fn(points), network(points), rtol=1e-4, atol=1e-6)
    # Renders use the bake, training never does (its samples must follow the network the loss trains).
    calls = []
    sampler._baked_density_fn = lambda positions, times=None: calls.append(1) or network(positions)
    rays = VolumeRenderer(SceneBox(aabb=AABB), sampler).collider(
        _cameras(1).generate_rays(camera_indices=0).flatten())
    sampler.train()(rays)
    assert not calls
    sampler.eval()(rays)
    assert calls


def test_occupancy_grid_never_culls_density_of_any_code():
    field, planes = _blobby_field(1)
    grid = OccupancyGrid(AABB, resolution=16, num_candidates=64)
    renderer = VolumeRenderer(SceneBox(aabb=AABB), grid)

    def max_density(points):
        xyz = renderer.normalise(points)[None].expand(len(planes), -1, -1)
        return field.density(planes, xyz)[0][..., 0].amax(dim=0)

    with torch.no_grad():
        for _ in range(6):
            grid.update(max_density)
        assert 0.02 < grid.occupied_fraction < 0.95  # it does cull, and it does keep
        points = AABB[0] + torch.rand(50000, 3) * (AABB[1] - AABB[0])
        xyz = renderer.normalise(points)[None].expand(len(planes), -1, -1)
        density = field.density(planes, xyz)[0][..., 0]  # (codes, points)
        alpha = 1 - torch.exp(-density * grid.step_size)
        dense = (alpha > grid.threshold).any(dim=0)
    assert dense.sum() > 50
    assert grid.is_occupied(points)[dense].all()


def test_occupancy_with_a_full_grid_matches_dense_marching():
    """Culling and early termination change nothing where the grid is fully occupied and T stays high."""
    field, planes = _blobby_field(2)
    grid = OccupancyGrid(AABB, resolution=8, num_candidates=32, chunk=8)
    renderer = VolumeRenderer(SceneBox(aabb=AABB), grid).eval()
    dense = VolumeRenderer(SceneBox(aabb=AABB), UniformBoxSampler(32)).eval()
    a = renderer(field, planes[:1], _cameras(1), torch.ones(3))
    b = dense(field, planes[:1], _cameras(1), torch.ones(3))
    assert torch.allclose(a["features"], b["features"], atol=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["proposal", "occupancy"])
def test_saved_sampler_config_reloads(synthetic_dataset: Path, tmp_path: Path, sampler: str):
    from nerfstudio.utils.eval_utils import eval_setup

    result = run_cli(["ns-train", "latentavatar-tiny", "--data", str(synthetic_dataset), "--output-dir", str(tmp_path),
                      "--experiment-name", "s", "--timestamp", "a", "--vis", "tensorboard",
                      "--machine.device-type", "cpu", "--max-num-iterations", "12",
                      "--pipeline.model.sampler", sampler, "--pipeline.model.occupancy-warmup-steps", "4",
                      "--pipeline.model.occupancy-update-every", "4"])
    assert result.returncode == 0, result.stderr[-3000:]
    config = tmp_path / "s" / "latentavatar-tiny" / "a" / "config.yml"
    _, pipeline, ckpt, _ = eval_setup(config, test_mode="test")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["pipeline"]
    sampler_state = {k: v for k, v in state.items() if ".renderer.sampler." in k}
    assert sampler_state
    for key, value in sampler_state.items():
        assert torch.equal(pipeline.state_dict()[key.replace("module.", "")].cpu(), value)
    expected = ProposalSampler if sampler == "proposal" else OccupancyGrid
    assert isinstance(pipeline.model.renderer.sampler, expected)

    # The same checkpoint with the sampler switched in the config: the fields load, the render is close.
    def switch(cfg):
        cfg.pipeline.model.sampler = "uniform"
        return cfg

    _, uniform, _, _ = eval_setup(config, test_mode="test", update_config_callback=switch)
    assert isinstance(uniform.model.renderer.sampler, UniformBoxSampler)
    assert torch.equal(uniform.model.generator.start.weight, pipeline.model.generator.start.weight)
