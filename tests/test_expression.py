"""The options that make the avatar use its code, and the expressiveness scores that measure it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from trainers import tiny_trainer, tiny_trainer_config

from latentavatar_ns.model.field import PLANE_AXES, plane_texels_in_box, sample_triplane
from latentavatar_ns.model.generator import TriplaneGenerator
from latentavatar_ns.model.losses import as_float_image, mirror_opacity_gap, plane_total_variation, region_losses
from latentavatar_ns.model.pose_refinement import HeadPoseRefinement
from latentavatar_ns.model.superres import SuperResolution
from latentavatar_ns.data.regions import (REGIONS, box_masks, canonical_region_box, masked_l1, pixel_box,
                                         union_mask)
from latentavatar_ns.utils.errors import ConfigError


def test_box_masks_and_masked_l1_cover_exactly_the_box():
    boxes = torch.tensor([[0.25, 0.5, 0.75, 1.0]])
    mask = box_masks(boxes, 8, 8)
    assert mask.shape == (1, 8, 8, 1) and int(mask.sum()) == 4 * 4
    assert mask[0, 4:, 2:6].all() and mask[0, :4].sum() == 0
    pred, target = torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 8, 3)
    pred[0, 0, 0] = 1.0  # error outside the box only
    assert float(masked_l1(pred, target, mask)) == 0.0
    pred[0, 5, 3] = 1.0  # one wrong pixel of the 16 inside
    assert math.isclose(float(masked_l1(pred, target, mask)), 1.0 / 16.0, rel_tol=1e-6)
    assert pixel_box(np.array([0.25, 0.5, 0.75, 1.0]), 8, 8) == (2, 4, 6, 8)


def test_region_losses_weigh_only_their_regions(synthetic_dataset: Path, tmp_path: Path):
    trainer = tiny_trainer(synthetic_dataset, tmp_path, face_loss_weight=1.0, mouth_loss_weight=2.0,
                           eye_loss_weight=1.0)
    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    cameras, batch = datamanager.next_train(0)
    assert batch["region_boxes"].shape == (2, len(REGIONS), 4)
    image, image_low, _ = model._targets({"rgb_low": torch.zeros(2, 16, 16, 3)}, batch)
    boxes = batch["region_boxes"].float()
    face, mouth, eyes = (boxes[:, REGIONS.index(r)] for r in ("face", "mouth", "eyes"))
    # The mouth lies in the lower face square, the eyes in its upper part, and they do not overlap.
    assert (mouth[:, 1] > (face[:, 1] + face[:, 3]) / 2 - 0.01).all() and (eyes[:, 3] < mouth[:, 1]).all()
    rgb = image.clone()
    mouth_mask = box_masks(mouth, *image.shape[1:3])
    rgb = rgb * (1 - mouth_mask) + (1 - rgb) * mouth_mask  # wrong inside the mouth box only
    low_hw = model.low_res_size(*image.shape[1:3])

    def losses_with(weights):
        return region_losses({"rgb": rgb, "rgb_low": image_low}, batch, image, image_low, weights, low_hw,
                             model.config.sr_scale)

    losses = losses_with({"face": 1.0, "mouth": 2.0, "eyes": 1.0})
    assert set(losses) == {"face_loss", "mouth_loss", "eyes_loss"}
    assert float(losses["eyes_loss"]) == 0.0
    assert float(losses["mouth_loss"]) > 2.0 * float(losses["face_loss"]) > 0.0
    # The model passes its config's weights; all at 0 is the paper's loss.
    assert set(model.get_loss_dict(model(cameras, batch), batch)) >= {"face_loss", "mouth_loss", "eyes_loss"}
    assert losses_with({"face": 0.0, "mouth": 0.0, "eyes": 0.0}) == {}


def test_region_crops_cut_the_box_and_region_lpips_sees_only_its_regions(synthetic_dataset: Path, tmp_path: Path):
    from latentavatar_ns.model.losses import region_crops

    image = torch.zeros(1, 16, 32, 3)
    image[0, 4:8, 8:24] = 1.0
    boxes = torch.zeros(1, len(REGIONS), 4)
    boxes[0, REGIONS.index("eyes")] = torch.tensor([8 / 32, 4 / 16, 24 / 32, 8 / 16])
    crop = region_crops(image.requires_grad_(), boxes, REGIONS.index("eyes"), (4, 16))
    assert crop.shape == (1, 3, 4, 16) and crop[..., 1:3, 1:15].min() == 1.0  # inside the box: all of it
    crop.sum().backward()
    # Bilinear sampling reaches one pixel past the box's edge, no farther.
    assert image.grad[0, :3].abs().sum() == 0 and image.grad[0, 9:].abs().sum() == 0
    assert image.grad[0, 4:8, 8:24].abs().sum() > 0

    trainer = tiny_trainer(synthetic_dataset, tmp_path, region_lpips_weight=0.5)
    model = trainer.pipeline.model
    cameras, batch = trainer.pipeline.datamanager.next_train(0)
    outputs = model(cameras, batch)
    loss = model.get_loss_dict(outputs, batch)["region_lpips_loss"]
    assert loss > 0
    # Changing the frame away from the mouth and eye boxes leaves the term as it was.
    target, _, _ = model._targets(outputs, batch)
    boxes = batch["region_boxes"].float()
    inside = box_masks(boxes[:, REGIONS.index("mouth")], *target.shape[1:3]) + \
        box_masks(boxes[:, REGIONS.index("eyes")], *target.shape[1:3])
    near = torch.nn.functional.max_pool2d(inside.permute(0, 3, 1, 2), 5, 1, 2).permute(0, 2, 3, 1).clamp(max=1)
    changed = {**batch, "image": target * near + (1 - near) * 0.5}
    assert torch.allclose(model.get_loss_dict(outputs, changed)["region_lpips_loss"], loss, atol=1e-4)


def test_code_to_field_starts_as_the_paper_generator_and_shifts_every_texel():
    torch.manual_seed(0)
    paper = TriplaneGenerator(16, (16, 16, 8), plane_channels=4)
    torch.manual_seed(0)
    direct = TriplaneGenerator(16, (16, 16, 8), plane_channels=4, code_to_field=True)
    theta = torch.randn(2, 16)
    assert torch.equal(paper(theta), direct(theta))
    torch.nn.init.normal_(direct.code_to_field.weight)
    shift = direct(theta) - paper(theta)
    expected = direct.code_to_field(theta)  # (B, C)
    assert torch.allclose(shift[:, 0], expected[:, :, None, None].expand_as(shift[:, 0]), atol=1e-5)
    assert torch.equal(shift[:, 1:], torch.zeros_like(shift[:, 1:]))


def test_expression_planes_start_as_the_paper_generator_and_change_only_their_texels():
    torch.manual_seed(0)
    paper = TriplaneGenerator(16, (16, 16, 8), plane_channels=4)
    torch.manual_seed(0)
    blended = TriplaneGenerator(16, (16, 16, 8), plane_channels=4, expression_planes=3)
    assert blended.expression_planes.shape == (3, 3, 4, 16, 16)
    theta = torch.randn(2, 16)
    assert torch.equal(paper(theta), blended(theta))
    with torch.no_grad():
        blended.expression_planes[1, 2, 0, 5, 7] = 1.0  # one texel of one basis
    shift = blended(theta) - paper(theta)
    weights = blended.to_expression_weights(theta)  # (B, K)
    assert torch.allclose(shift[:, 2, 0, 5, 7], weights[:, 1], atol=1e-6)  # each code its own amount
    shift[:, 2, 0, 5, 7] = 0
    assert torch.equal(shift, torch.zeros_like(shift))  # nothing else moved
    blended(theta)[:, 2, 0, 5, 7].sum().backward()
    grad = blended.expression_planes.grad
    assert torch.allclose(grad[:, 2, 0, 5, 7], weights.detach().sum(0)) and int((grad != 0).sum()) == 3
    assert blended.to_expression_weights.weight.grad.abs().sum() > 0  # the weights learn once a basis is non-zero


def test_coarse_expression_planes_are_upsampled_bases():
    torch.manual_seed(0)
    paper = TriplaneGenerator(16, (16, 16, 8), plane_channels=4)
    torch.manual_seed(0)
    coarse = TriplaneGenerator(16, (16, 16, 8), plane_channels=4, expression_planes=3, expression_plane_resolution=8)
    assert coarse.expression_planes.shape == (3, 3, 4, 8, 8)
    with torch.no_grad():
        coarse.expression_planes.normal_()
    theta = torch.randn(2, 16)
    shift = coarse(theta) - paper(theta)
    weights = coarse.to_expression_weights(theta)
    blend = torch.einsum("bk,kpcij->bpcij", weights, coarse.expression_planes).reshape(2 * 3, 4, 8, 8)
    expected = F.interpolate(blend, size=(16, 16), mode="bilinear", align_corners=False).reshape(shift.shape)
    assert torch.allclose(shift, expected, atol=1e-5)
    planes, offset = coarse.planes_and_offset(theta)  # the offset the penalty leaves out, as the planes hold it
    assert torch.equal(planes, coarse(theta)) and torch.allclose(offset, expected, atol=1e-5)
    assert paper.planes_and_offset(theta)[1] is None
    with pytest.raises(ValueError, match="expression_plane_resolution"):
        TriplaneGenerator(16, (16, 16, 8), plane_channels=4, expression_planes=3, expression_plane_resolution=32)


def test_expression_planes_take_their_own_optimizer_group(synthetic_dataset: Path, tmp_path: Path):
    trainer = tiny_trainer(synthetic_dataset, tmp_path, expression_planes=2)
    groups = trainer.pipeline.model.get_param_groups()
    bases = trainer.pipeline.model.generator.expression_planes
    assert groups["expression_planes"] == [bases]
    assert all(p is not bases for name, params in groups.items() if name != "expression_planes" for p in params)
    assert trainer.optimizers.optimizers["expression_planes"].param_groups[0]["lr"] == \
        trainer.optimizers.optimizers["static_planes"].param_groups[0]["lr"]


def test_static_planes_stay_out_of_training_until_their_start_step(synthetic_dataset: Path, tmp_path: Path):
    trainer = tiny_trainer(synthetic_dataset, tmp_path, static_planes=True, static_planes_start_step=2)
    model = trainer.pipeline.model
    static = model.generator.static_planes
    for step in range(3):
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        assert bool(static.abs().sum() > 0) == (step >= 2), step  # no gradient, so no Adam step, before 2
    model.generator.use_static_planes = False
    without = model.generator(torch.zeros(1, model.config.theta_dim))
    model.generator.use_static_planes = True
    assert torch.allclose(model.generator(torch.zeros(1, model.config.theta_dim)), without + static)


def test_plane_total_variation_is_the_mean_squared_step_between_neighbouring_texels():
    ramp = torch.arange(5.0)  # steps of 1 along the rows, none along the columns
    planes = ramp[:, None].expand(5, 5).reshape(1, 1, 1, 5, 5).expand(2, 3, 4, 5, 5)
    assert float(plane_total_variation(planes)) == pytest.approx(1.0)
    assert float(plane_total_variation(planes.transpose(-1, -2) * 3)) == pytest.approx(9.0)
    assert float(plane_total_variation(torch.full((1, 3, 2, 6, 6), 7.0))) == 0.0


def test_absolute_plane_total_variation_weighs_a_step_by_its_size_not_its_square():
    ramp = torch.arange(5.0)
    planes = ramp[:, None].expand(5, 5).reshape(1, 1, 1, 5, 5).expand(2, 3, 4, 5, 5)
    assert float(plane_total_variation(planes.transpose(-1, -2) * 3, "absolute")) == pytest.approx(3.0)
    edge = torch.zeros(1, 3, 1, 8, 8)
    edge[..., 4:] = 2.0  # one sharp edge, two high, down every row
    noise = torch.zeros(1, 3, 1, 8, 8)
    noise[..., 1::2] = 0.5  # a step of a quarter of the edge's between every pair of columns
    # Squared, the edge costs more than the noise; by magnitude, the noise costs more than the edge.
    assert float(plane_total_variation(edge)) > float(plane_total_variation(noise))
    assert float(plane_total_variation(edge, "absolute")) < float(plane_total_variation(noise, "absolute"))


def rough_static_planes_trainer(dataset: Path, path: Path, **model_options):
    """A tiny trainer with static planes, filled with the same random (rough) texels every call."""
    trainer = tiny_trainer(dataset, path, static_planes=True, **model_options)
    static = trainer.pipeline.model.generator.static_planes
    with torch.no_grad():
        static.copy_(torch.randn(static.shape, generator=torch.Generator().manual_seed(0)))
    return trainer, trainer.pipeline.model, static


def test_texels_in_a_box_are_those_the_field_reads_for_points_inside_it():
    aabb = torch.tensor([[-1.5, -1.8, -1.9], [1.5, 1.8, 1.1]])

    def normalise(canonical: torch.Tensor) -> torch.Tensor:
        return 2 * (canonical - aabb[0]) / (aabb[1] - aabb[0]) - 1

    lo, hi = (normalise(torch.tensor(c)) for c in canonical_region_box("mouth"))
    marked = plane_texels_in_box(lo, hi, 64)
    inside = (lo + hi) / 2  # the box's centre
    outside = normalise(torch.tensor([1.2, 1.0, -1.0]))  # the back of the head, above the ears
    xyz = torch.stack([inside, outside])
    read = sample_triplane(marked[None, :, None], xyz[None])[0, :, 0]  # the three planes' marks, summed
    assert read.tolist() == pytest.approx([3.0, 0.0])
    assert 0 < float(marked.mean()) < 0.15


def test_spared_texels_leave_the_total_variation_unchanged():
    planes = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    spared = torch.zeros(3, 8, 8)
    assert torch.allclose(plane_total_variation(planes, spared=spared), plane_total_variation(planes))
    spared[:, 2:5, 2:5] = 1.0
    changed = planes.clone()
    changed[..., 2:5, 2:5] = 100.0  # anything inside the spared square
    for norm in ("squared", "absolute"):
        assert torch.allclose(plane_total_variation(changed, norm, spared), plane_total_variation(planes, norm, spared))
    assert float(plane_total_variation(planes, spared=torch.ones(3, 8, 8))) == 0.0


def test_plane_tv_loss_is_reported_in_training_only_and_smooths_the_static_planes(synthetic_dataset: Path,
                                                                                  tmp_path: Path):
    roughness = {}
    for weight in (0.0, 100.0):
        trainer, model, _ = rough_static_planes_trainer(synthetic_dataset, tmp_path / str(weight),
                                                        plane_tv_weight=weight)
        cameras, batch = trainer.pipeline.datamanager.next_train(0)
        losses = model.get_loss_dict(model.get_outputs(cameras, batch), batch)
        assert ("plane_tv_loss" in losses) == (weight > 0)
        for step in range(5):
            trainer.train_iteration(step)
        roughness[weight] = float(plane_total_variation(model.generator.static_planes.detach()))
        model.eval()
        with torch.no_grad():
            assert "plane_tv" not in model.get_outputs(cameras, batch)
    assert roughness[100.0] < 0.95 * roughness[0.0]


def test_plane_tv_on_the_static_planes_alone_leaves_the_generators_output_free(synthetic_dataset: Path,
                                                                               tmp_path: Path):
    trainer, model, static = rough_static_planes_trainer(synthetic_dataset, tmp_path, plane_tv_weight=1.0,
                                                         plane_tv_target="static")
    cameras, batch = trainer.pipeline.datamanager.next_train(0)
    outputs = model.get_outputs(cameras, batch)
    assert torch.allclose(outputs["plane_tv"], plane_total_variation(static))
    outputs["plane_tv"].backward()
    assert static.grad is not None and float(static.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.generator.parameters() if p is not static)
    with pytest.raises(ValueError, match="static-planes True"):
        tiny_trainer(synthetic_dataset, tmp_path / "none", static_planes=False, plane_tv_weight=1.0,
                     plane_tv_target="static")


def test_plane_tv_on_the_depth_planes_leaves_the_frontal_plane_free(synthetic_dataset: Path, tmp_path: Path):
    trainer, model, static = rough_static_planes_trainer(synthetic_dataset, tmp_path, plane_tv_weight=1.0,
                                                         plane_tv_target="depth_planes")
    cameras, batch = trainer.pipeline.datamanager.next_train(0)
    model.get_outputs(cameras, batch)["plane_tv"].backward()
    frontal = PLANE_AXES.index((0, 1))
    assert float(static.grad[:, frontal].abs().sum()) == 0.0
    assert all(float(static.grad[:, p].abs().sum()) > 0 for p in range(3) if p != frontal)


def test_plane_tv_without_the_expression_planes_leaves_them_free(synthetic_dataset: Path, tmp_path: Path):
    trainer, model, static = rough_static_planes_trainer(synthetic_dataset, tmp_path, plane_tv_weight=1.0,
                                                         plane_tv_target="no_expression_planes",
                                                         expression_planes=4, expression_plane_resolution=8)
    bases = model.generator.expression_planes
    with torch.no_grad():
        bases.copy_(torch.randn(bases.shape, generator=torch.Generator().manual_seed(1)))
    cameras, batch = trainer.pipeline.datamanager.next_train(0)
    model.get_outputs(cameras, batch)["plane_tv"].backward()
    assert bases.grad is None or float(bases.grad.abs().sum()) == 0.0
    assert static.grad is not None and float(static.grad.abs().sum()) > 0


def test_plane_tv_spares_the_mouths_texels(synthetic_dataset: Path, tmp_path: Path):
    trainer, model, static = rough_static_planes_trainer(synthetic_dataset, tmp_path, plane_tv_weight=1.0,
                                                         plane_tv_spare_mouth=True)
    cameras, batch = trainer.pipeline.datamanager.next_train(0)
    model.get_outputs(cameras, batch)["plane_tv"].backward()
    assert model.mouth_texels(static.shape[-1]) is model.mouth_texels(static.shape[-1])  # built once, not each step
    mouth = model.mouth_texels(static.shape[-1]).bool()
    inner = mouth.clone()  # texels whose four neighbours are over the mouth too
    inner[:, 1:-1, 1:-1] &= mouth[:, :-2, 1:-1] & mouth[:, 2:, 1:-1] & mouth[:, 1:-1, :-2] & mouth[:, 1:-1, 2:]
    grad = static.grad[0].abs().sum(1)  # (3, R, R)
    assert int(inner.sum()) > 0 and float(grad[inner].sum()) == 0.0
    assert float(grad[~mouth].sum()) > 0


def test_plane_tv_is_dropped_from_its_end_step(synthetic_dataset: Path, tmp_path: Path):
    trainer = tiny_trainer(synthetic_dataset, tmp_path, static_planes=True, plane_tv_weight=1.0,
                           plane_tv_end_step=2)
    model = trainer.pipeline.model
    cameras, batch = trainer.pipeline.datamanager.next_train(0)
    steps_with_penalty = []
    for step in range(4):
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        if "plane_tv_loss" in model.get_loss_dict(model.get_outputs(cameras, batch), batch):
            steps_with_penalty.append(step)
    assert steps_with_penalty == [0, 1]


def test_code_noise_is_scaled_by_the_codes_spread_and_only_in_training(synthetic_dataset: Path, tmp_path: Path,
                                                                         monkeypatch):
    pipeline = tiny_trainer(synthetic_dataset, tmp_path, code_noise_std=0.5).pipeline
    model, dim = pipeline.model, pipeline.model.config.code_dim
    table = model.code_table
    assert torch.equal(table.spread(), torch.zeros(dim))  # nothing seen: no noise yet
    cameras, batch = pipeline.datamanager.next_train(0)
    rows = torch.as_tensor(batch["code_idx"]).reshape(-1)
    fixed = torch.linspace(3, 6, dim)  # every crop encodes to this; two other rows at 2 and 3 times it
    monkeypatch.setattr(model, "encode", lambda crops: fixed.expand(len(crops), -1).clone())
    others = [i for i in range(table.num_train_frames) if i not in rows.tolist()][:2]
    table.codes[others] = torch.stack([2 * fixed, 3 * fixed])
    seen = []
    model.mapping.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    for training in (True, True, False):
        model.train(training)
        model.clear_plane_cache()
        with torch.no_grad():
            model.get_outputs(cameras, batch)
    spread = table.seen().std(dim=0)
    assert torch.allclose(table.spread(), spread) and bool((spread > 0).all())
    assert not torch.equal(seen[0], seen[1])  # fresh noise every step
    noise = (torch.cat(seen[:2]) - fixed) / (0.5 * spread)
    assert 0.6 < float(noise.std()) < 1.4 and abs(float(noise.mean())) < 0.3  # unit normal in units of 0.5 spread
    assert torch.equal(seen[2], fixed.expand(len(rows), -1))  # none outside training


def test_code_to_sr_starts_as_the_plain_head_and_lets_theta_change_the_image():
    torch.manual_seed(0)
    plain = SuperResolution(8, 16, scale=2)
    torch.manual_seed(0)
    steered = SuperResolution(8, 16, scale=2, style_dim=6)
    features, theta = torch.randn(2, 8, 6, 6), torch.randn(2, 6)
    assert torch.equal(plain(features), steered(features, theta))
    for linear in steered.style:
        torch.nn.init.normal_(linear.weight, std=0.5)
    same_features = features[:1].expand(2, -1, -1, -1)
    out = steered(same_features, theta)
    assert (out[0] - out[1]).abs().max() > 1e-3  # one feature map, two thetas, two images
    with pytest.raises(ValueError, match="needs a style"):
        steered(features)
    with pytest.raises(ValueError, match="takes no style"):
        plain(features, theta)


def test_a_steered_avatar_renders_only_with_its_theta(synthetic_dataset: Path, tmp_path: Path):
    pipeline = tiny_trainer(synthetic_dataset, tmp_path, code_to_sr=True).pipeline
    model, dataset = pipeline.model, pipeline.datamanager.train_dataset
    model.eval()
    item, camera = dataset.get_data(0), dataset.cameras[0:1]
    with torch.no_grad():
        code = model.encode(item["encoder_crop"][None])
        theta = model.mapping(code)
        own = model.get_outputs(camera, item)["rgb"]
        assert torch.allclose(model.render(model.planes_from_theta(theta), camera, theta=theta)["rgb"], own)
        with pytest.raises(ValueError, match="code_to_sr"):
            model.render(model.planes_from_theta(theta), camera)


def test_crop_autoencoder_warm_start_makes_the_code_tell_a_blink_apart():
    from latentavatar_ns.model.encoder import ExpressionEncoder
    from latentavatar_ns.model.warm_start import fit_crop_autoencoder, pixel_weights

    weights = pixel_weights(16, {"face": 0.0, "mouth": 2.0, "eyes": 1.0})
    assert weights.max() == 3.0 and weights.min() == 1.0 and weights[0, 0, 4, 8] == 2.0  # the eye band
    # Crops that differ only inside the eye band ("open" bright eyes, "closed" dark lids).
    torch.manual_seed(0)
    crops = torch.full((16, 3, 16, 16), 0.5)
    closed = torch.arange(16) % 2 == 1
    crops[:, :, 3:6, 3:13] = torch.where(closed, 0.1, 0.9)[:, None, None, None]
    encoder = ExpressionEncoder(16, (8, 16), code_dim=8)

    def separation() -> float:
        with torch.no_grad():
            codes = encoder(crops)
        return float((codes[closed].mean(0) - codes[~closed].mean(0)).norm())

    before = encoder.state_dict()["fc.weight"].clone()
    losses = fit_crop_autoencoder(encoder, 8, crops, steps=60, region_weights={"eyes": 2.0})
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(before, encoder.state_dict()["fc.weight"])
    assert separation() > 1.0  # normalised codes: the two eye states lie far apart


def test_warm_start_runs_on_a_new_run_only(synthetic_dataset: Path, tmp_path: Path):
    fresh = tiny_trainer(synthetic_dataset, tmp_path / "a", encoder_warm_start_steps=3)
    untouched = tiny_trainer(synthetic_dataset, tmp_path / "b")  # the same seed: the same initial weights
    warm = fresh.pipeline.model.encoder.fc.weight.detach().clone()
    assert not torch.equal(warm, untouched.pipeline.model.encoder.fc.weight)
    fresh.save_checkpoint(0)
    config = fresh.config
    config.load_dir = fresh.checkpoint_dir
    resumed = config.setup()
    resumed.setup()
    assert resumed._start_step == 1
    assert torch.equal(resumed.pipeline.model.encoder.fc.weight, warm)  # loaded, not fitted again


def test_code_reconstruction_trains_the_encoder_and_its_decoder_and_nothing_else(synthetic_dataset: Path,
                                                                                  tmp_path: Path):
    from latentavatar_ns.model.warm_start import pixel_weights

    plain = tiny_trainer(synthetic_dataset, tmp_path / "plain").pipeline.model
    assert plain.crop_decoder is None
    trainer = tiny_trainer(synthetic_dataset, tmp_path / "recon", code_reconstruction_weight=2.0,
                           encoder_warm_start_steps=3)
    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    # The warm start fitted the decoder that training goes on with (the same seed gives the same fresh one).
    fresh = tiny_trainer(synthetic_dataset, tmp_path / "fresh", code_reconstruction_weight=2.0).pipeline.model
    assert not torch.equal(model.crop_decoder.fc.weight, fresh.crop_decoder.fc.weight)
    assert any(p is model.crop_decoder.fc.weight for p in model.get_param_groups()["encoder"])

    cameras, batch = datamanager.next_train(0)
    outputs = model(cameras, batch)
    losses = model.get_loss_dict(outputs, batch)
    assert "code_reconstruction_loss" not in plain.get_loss_dict(plain(cameras, batch), batch)
    # L1 to the crop, weighted like the region losses, times the option's weight.
    crops = batch["encoder_crop"].float()
    cfg = model.config
    # latentavatar-tiny's region weights by name; the crop loss follows them.
    assert cfg.region_loss_weights == {"face": 2.0, "mouth": 1.0, "eyes": 1.0}
    weights = pixel_weights(crops.shape[-1], cfg.region_loss_weights)
    expected = 2.0 * ((outputs["crop_reconstruction"] - crops).abs() * weights).mean()
    assert torch.allclose(losses["code_reconstruction_loss"], expected)
    model.zero_grad()
    losses["code_reconstruction_loss"].backward()
    reached = {name.split(".")[0] for name, p in model.named_parameters()
               if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached == {"encoder", "crop_decoder"}
    model.eval()
    item = datamanager.eval_dataset.get_data(0)
    assert "crop_reconstruction" not in model.get_outputs(datamanager.eval_dataset.cameras[0:1], item)


def test_frame_normalised_codes_are_learned_saved_and_read_back_for_reenactment(synthetic_dataset: Path,
                                                                                 tmp_path: Path):
    from latentavatar_ns.reenact.avatar import load_avatar

    trainer = tiny_trainer(synthetic_dataset, tmp_path, code_normalisation="frames")
    norm = trainer.pipeline.model.encoder.frame_norm
    for step in range(3):
        trainer.train_iteration(step)
    assert int(norm.num_batches) == 3 and not torch.equal(norm.var, torch.ones_like(norm.var))
    trainer.config.save_config()
    trainer.save_checkpoint(2)
    avatar = load_avatar(trainer.config.get_base_dir() / "config.yml")
    crops = as_float_image(torch.stack([trainer.pipeline.datamanager.cached_train[i]["encoder_crop"]
                                        for i in range(4)]))
    model = trainer.pipeline.model.eval()
    with torch.no_grad():
        assert torch.allclose(avatar.encoder(crops), model.encoder(crops), atol=1e-5)


def test_pose_refinement_moves_the_head_about_its_origin(synthetic_dataset: Path, tmp_path: Path):
    refine = HeadPoseRefinement(3)
    trainer = tiny_trainer(synthetic_dataset, tmp_path, pose_refinement=True)
    cameras = trainer.pipeline.datamanager.train_dataset.cameras[:2]
    idx = torch.tensor([0, 2])
    same = refine(cameras, idx)
    assert torch.allclose(same.camera_to_worlds, cameras.camera_to_worlds, atol=1e-6)
    with torch.no_grad():
        refine.correction[2, 3:] = torch.tensor([0.0, 0.2, 0.0])  # 0.2 rad about canonical y
    moved = refine(cameras, idx).camera_to_worlds.detach()
    rotation = moved[1, :, :3] @ cameras.camera_to_worlds[1, :, :3].T
    angle = math.acos((float(torch.trace(rotation)) - 1) / 2)
    assert math.isclose(math.degrees(angle), math.degrees(0.2), rel_tol=1e-3)
    # Distances to the head's origin are kept: a rigid motion of the head, not a camera shift.
    assert torch.allclose(moved[:, :, 3].norm(dim=-1), cameras.camera_to_worlds[:, :, 3].norm(dim=-1))

    # In training the corrections of the batch's images (only) get gradients; renders outside training ignore them.
    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    cams, batch = datamanager.next_train(0)
    loss = sum(model.get_loss_dict(model(cams, batch), batch).values())
    loss.backward()
    grad = model.pose_refinement.correction.grad
    used = set(batch["image_idx"].tolist())
    assert all(grad[i].abs().sum() > 0 for i in used)
    assert all(grad[i].abs().sum() == 0 for i in range(len(grad)) if i not in used)
    assert "pose_refinement" in model.get_param_groups()
    model.eval()
    with torch.no_grad():
        model.pose_refinement.correction.normal_(0, 0.3)
        item = datamanager.eval_dataset.get_data(0)
        camera = datamanager.eval_dataset.cameras[0:1]
        before = model.get_outputs_for_camera(camera, batch=item)["rgb"]
        model.pose_refinement.correction.zero_()
        model.clear_plane_cache()
        assert torch.equal(before, model.get_outputs_for_camera(camera, batch=item)["rgb"])


def test_centred_pose_refinement_ignores_a_motion_shared_by_every_frame(synthetic_dataset: Path, tmp_path: Path):
    cameras = tiny_trainer(synthetic_dataset, tmp_path).pipeline.datamanager.train_dataset.cameras[:3]
    idx = torch.arange(3)
    centred, free = HeadPoseRefinement(3, centred=True), HeadPoseRefinement(3)
    with torch.no_grad():
        for refine in (centred, free):
            refine.correction[:] = torch.tensor([0.05, -0.02, 0.0, 0.1, 0.2, 0.0])  # every frame alike
    assert torch.allclose(centred(cameras, idx).camera_to_worlds, cameras.camera_to_worlds, atol=1e-6)
    assert float(centred.regularizer(idx)) < 1e-12
    assert not torch.allclose(free(cameras, idx).camera_to_worlds, cameras.camera_to_worlds, atol=1e-3)
    with torch.no_grad():  # one frame moved against the others still moves, by its offset from their mean
        centred.correction[1, 4] += 0.3
    moved = centred(cameras, idx).camera_to_worlds
    assert not torch.allclose(moved[1], cameras.camera_to_worlds[1], atol=1e-3)
    assert not torch.allclose(moved[0], cameras.camera_to_worlds[0], atol=1e-3)  # the mean moved by 0.1 rad


def test_pose_corrections_kept_apart_from_the_codes_main_directions():
    torch.manual_seed(0)
    n = 40
    jaw = torch.linspace(-1.0, 1.0, n)[torch.randperm(n)]  # one expression, seen by the codes' first direction
    codes = jaw[:, None] * torch.randn(1, 16) + 0.01 * torch.randn(n, 16)
    refine = HeadPoseRefinement(n, expression_directions=1)
    every = torch.arange(n)
    assert torch.equal(refine.excluded, torch.zeros(n, 1))
    refine.exclude(torch.zeros(n, 16))  # codes all alike: nothing to keep apart from
    assert torch.equal(refine.excluded, torch.zeros(n, 1))
    refine.exclude(codes)
    noise = torch.randn(n)
    with torch.no_grad():
        refine.correction[:, 4] = 0.1 * jaw  # a nod in step with the expression
        refine.correction[:, 0] = 0.1 * (noise - (noise @ jaw) / (jaw @ jaw) * jaw)  # error apart from it
    used = refine.corrections(every)
    assert float(used[:, 4].abs().max()) < 0.02 * 0.1  # what is left is the codes' own noise
    assert torch.allclose(used[:, 0], refine.correction[:, 0], atol=2e-3)
    assert float(refine.regularizer(every)) < float(refine.correction.pow(2).sum(-1).mean())


def test_pose_corrections_read_the_expression_from_the_crops_drawn_so_far(synthetic_dataset: Path, tmp_path: Path):
    trainer = tiny_trainer(synthetic_dataset, tmp_path, pose_refinement=True,
                           pose_refinement_expression_directions=2, pose_refinement_expression_from="crops")
    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    cams, batch = datamanager.next_train(0)
    drawn = batch["image_idx"].reshape(-1)
    model(cams, batch)
    assert model.crop_seen.sum() == len(drawn) and bool(model.crop_seen[drawn].all())
    excluded = model.pose_refinement.excluded  # the crops drawn so far differ in one direction only
    assert torch.allclose(excluded[:, 0].norm(), torch.tensor(1.0), atol=1e-5) and float(excluded[:, 1].norm()) == 0
    others = torch.ones(len(excluded), dtype=torch.bool)
    others[drawn] = False
    assert torch.allclose(excluded[others, 0], torch.zeros(int(others.sum())), atol=1e-6)  # undrawn: at the mean
    with torch.no_grad():
        model.pose_refinement.correction[:, 1] = excluded[:, 0]  # a shift that follows the crops
    assert float(model.pose_refinement.corrections(torch.arange(len(excluded))).abs().max()) < 1e-5


@pytest.mark.parametrize("parts", ["outside_face", "outside_parts"])
def test_pose_corrections_learn_only_from_pixels_outside_the_expression(synthetic_dataset: Path, tmp_path: Path,
                                                                       parts: str):
    trainer = tiny_trainer(synthetic_dataset, tmp_path, pose_refinement=True, pose_refinement_from=parts)
    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    cams, batch = datamanager.next_train(0)
    used = batch["image_idx"].reshape(-1)
    boxes = model.pose_detached_boxes(batch)
    face = batch["region_boxes"].reshape(-1, len(REGIONS), 4)[:, 0]
    assert boxes is not None and bool((boxes[..., 3].amax(dim=1) > face[:, 3]).all())  # down to an open jaw's chin

    def pull_on_the_pose(inside: bool):
        model.zero_grad()
        low = model(cams, batch)["rgb_low"]  # (B, h, w, 3), one low-res pixel per ray
        expression = union_mask(boxes, *low.shape[1:3])
        assert 0 < int(expression.sum()) < expression.numel()
        (low * (expression if inside else ~expression)[..., None]).sum().backward()
        return model.pose_refinement.correction.grad[used].abs().sum(dim=-1)

    assert bool((pull_on_the_pose(inside=True) == 0).all())
    assert bool((pull_on_the_pose(inside=False) > 0).all())
    model.config.pose_refinement_from = "frame"  # every pixel moves the pose: the same boxes now pull on it
    assert model.pose_detached_boxes(batch) is None
    assert bool((pull_on_the_pose(inside=True) > 0).all())


def _face_square_boxes(pipeline):
    from latentavatar_ns.data.regions import face_square_regions

    def boxes(split, index, width, height):
        dataset = pipeline.datamanager.train_dataset if split == "train" else pipeline.datamanager.eval_dataset
        fractions = face_square_regions(dataset.crop_affines[index], width, height)
        return {name: pixel_box(f, width, height) for name, f in zip(REGIONS, fractions)}

    return boxes


def test_linear_probe_reads_what_the_codes_hold_and_nothing_else():
    from latentavatar_ns.evaluation.expressiveness import linear_probe

    rng = np.random.default_rng(0)
    targets = rng.normal(size=(120, 3))
    targets[:, 2] = 0.5  # a parameter that never changes
    mixing = rng.normal(size=(2, 16))
    holds = targets[:, :2] @ mixing + 0.01 * rng.normal(size=(120, 16))  # both moving parameters, linearly
    r2 = linear_probe(holds, targets)
    assert r2[0] > 0.95 and r2[1] > 0.95 and r2[2] == 0.0
    blind = linear_probe(rng.normal(size=(120, 16)), targets)  # codes that ignore the expression
    assert blind[0] < 0.2 and blind[1] < 0.2


def test_gain_ceiling_is_the_gain_of_an_avatar_that_draws_the_best_average_with_its_own_error():
    from latentavatar_ns.evaluation.expressiveness import expression_gain_ceiling, psnr_for_gain_ceiling

    rng = np.random.default_rng(0)
    shut, opened = np.zeros((200, 200)), np.full((200, 200), 0.6)  # a region with two expressions, met 1:3
    frames = [shut] + [opened] * 3
    best_average = np.mean(frames, axis=0)
    signal = np.array([((f - best_average) ** 2).mean() for f in frames])
    error = 0.002
    own = [f + rng.normal(0, error ** 0.5, f.shape) for f in frames]
    mean_code = [best_average + rng.normal(0, error ** 0.5, f.shape) for f in frames]

    def psnr(a, b):
        return -10 * np.log10(((a - b) ** 2).mean())

    measured = np.mean([psnr(o, f) - psnr(m, f) for o, m, f in zip(own, mean_code, frames)])
    ceiling = expression_gain_ceiling(signal, -10 * np.log10(error))
    assert abs(measured - ceiling) < 0.05 and ceiling > 10
    assert expression_gain_ceiling(signal, 30.0) > expression_gain_ceiling(signal, 20.0) > 0
    needed = psnr_for_gain_ceiling(signal, 1.0)
    assert abs(expression_gain_ceiling(signal, needed) - 1.0) < 1e-6
    assert psnr_for_gain_ceiling(np.zeros(4), 1.0) == float("inf"), "a region the expression never changes"


@pytest.mark.slow
def test_expressiveness_scores_an_avatar_that_ignores_its_code_as_zero(tiny_trained_run: Path, monkeypatch):
    from nerfstudio.utils.eval_utils import eval_setup

    from latentavatar_ns.evaluation.expressiveness import (
        RegionScorer,
        code_spread,
        contact_sheet,
        encoded_codes,
        score_split,
        silhouette_iou,
    )

    _, pipeline, _, _ = eval_setup(tiny_trained_run, test_mode="test")
    model = pipeline.model
    boxes = _face_square_boxes(pipeline)
    scorer = RegionScorer()
    stored = model.frame_codes.clone()
    scores = score_split(pipeline, "eval", [0, 1, 2], boxes, scorer)
    assert torch.equal(stored, model.frame_codes)  # scoring leaves the avatar's codes alone
    assert set(scores["gain_db"]) == {"full", *REGIONS}
    assert any(abs(v) > 0 for v in scores["gain_db"].values())
    assert 0.0 <= scores["silhouette_iou"]["own"] <= 1.0
    # Held-out frames seen from the head pose fitted to their image: same scores, codes still untouched.
    fitted = score_split(pipeline, "eval", [0, 1, 2], boxes, scorer, test_pose_steps=5)
    assert torch.equal(stored, model.frame_codes)
    assert set(fitted["gain_db"]) == {"full", *REGIONS}
    assert fitted["own"]["full"]["psnr"] > scores["own"]["full"]["psnr"] - 0.5
    spread = code_spread(pipeline, [0, 1, 2])
    assert spread["pairs"] == 2 and spread["code_change_rms"] > 0 and spread["pose_change_rms"] > 0

    codes = encoded_codes(pipeline, "train", [0, 1, 2])
    assert codes.shape == (3, model.config.code_dim) and torch.equal(stored, model.frame_codes)

    sheet = contact_sheet(pipeline, [0, 2], boxes, zoom=2)
    assert sheet.shape == (2 * 128, 3 * 128, 3)
    from latentavatar_ns.evaluation.expressiveness import REGION_COLOURS
    for colour in REGION_COLOURS.values():  # every region is boxed on the sheet
        assert (np.abs(sheet - np.asarray(colour)).sum(-1) < 1e-6).any()

    # The demo shows the held-out frames farthest from a neutral face.
    from latentavatar_ns.data.format import list_frames, load_params
    from latentavatar_ns.demo.steps import expressive_frames

    eval_dataset = pipeline.datamanager.eval_dataset
    picks = expressive_frames(eval_dataset, 2)
    strength = [np.abs(load_params(f.params).extra["expression"]).sum()
                for f in list_frames(Path(eval_dataset.image_filenames[0]).parent)]
    assert picks == sorted(np.argsort(strength)[::-1][:2].tolist())

    # An avatar whose encoder gives every crop the mean training code.
    average = model.code_table.mean()
    monkeypatch.setattr(model, "encode", lambda crops: average.expand(len(crops), -1))
    model.clear_plane_cache()
    ignored = score_split(pipeline, "eval", [0, 1, 2], boxes, scorer)
    assert all(abs(v) < 1e-4 for v in ignored["gain_db"].values())
    assert ignored["silhouette_iou"]["own"] == pytest.approx(ignored["silhouette_iou"]["mean_code"])
    assert code_spread(pipeline, [0, 1])["code_change_rms"] < 1e-6
    mask = torch.zeros(8, 8, 1)
    mask[2:6, 2:6] = 1
    assert silhouette_iou(mask[None], mask) == 1.0
    assert silhouette_iou(torch.zeros(1, 8, 8, 1), mask) == 0.0


@pytest.mark.slow
def test_fit_head_pose_recovers_a_known_head_motion(tiny_trained_run: Path):
    """The target is the avatar's own render from the true pose, so the exact answer is known: undo the offset."""
    from nerfstudio.utils.eval_utils import eval_setup

    from latentavatar_ns.model.pose_refinement import fit_head_pose

    _, pipeline, _, _ = eval_setup(tiny_trained_run, test_mode="test")
    model, dataset = pipeline.model, pipeline.datamanager.eval_dataset
    model.eval()
    item = {k: v for k, v in dataset.get_data(0).items() if k != "code_idx"}
    true_camera = dataset.cameras[0:1]
    with torch.no_grad():
        target = model.get_outputs(true_camera, item)["rgb"][0]
        offset = HeadPoseRefinement(1)
        offset.correction.copy_(torch.tensor([[0.04, -0.03, 0.0, 0.0, 0.05, 0.0]]))
        moved = offset(true_camera, torch.zeros(1, dtype=torch.long))

    def render(camera):
        return model.get_outputs(camera, item)

    fitted = fit_head_pose(render, moved, target, steps=40)
    with torch.no_grad():
        error_before = float((render(moved)["rgb"][0] - target).abs().mean())
        error_after = float((render(fitted)["rgb"][0] - target).abs().mean())
    assert error_after < 0.5 * error_before
    distance = lambda cam: float((cam.camera_to_worlds - true_camera.camera_to_worlds).abs().max())  # noqa: E731
    assert distance(fitted) < 0.5 * distance(moved)
    settled = fit_head_pose(render, moved, target)  # the default runs until a tracker-sized error settles
    assert distance(settled) < 0.25 * distance(fitted)
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())  # the avatar stays fixed


def test_mirror_opacity_gap_compares_each_point_with_its_mirror_image():
    density = torch.tensor([[[0.0], [50.0], [2.0], [0.0], [0.0], [2.0]]])  # three points, then their mirrors
    expected = (0.0 + (1 - math.exp(-50.0 * 0.1)) + 0.0) / 3
    assert float(mirror_opacity_gap(density, 0.1)) == pytest.approx(expected)


def mirrored_x(planes: torch.Tensor) -> torch.Tensor:
    """The tri-plane of the head mirrored across x = 0: the planes that hold x, (x, z) and (x, y), flipped along it."""
    out = planes.clone()
    for p, (u, _) in enumerate(PLANE_AXES):
        if u == 0:
            out[:, p] = planes[:, p].flip(-1)
    return out


def test_density_symmetry_is_zero_for_a_mirrored_head_and_training_makes_the_head_more_symmetric(
        synthetic_dataset: Path, tmp_path: Path):
    trainer, model, static = rough_static_planes_trainer(synthetic_dataset, tmp_path, density_symmetry_weight=100.0)
    planes = torch.randn((2, *static.shape[1:]), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert float(model.density_asymmetry(planes)) > 0.01
        assert float(model.density_asymmetry((planes + mirrored_x(planes)) / 2)) < 1e-5
    cameras, batch = trainer.pipeline.datamanager.next_train(0)
    assert "density_symmetry_loss" in model.get_loss_dict(model.get_outputs(cameras, batch), batch)

    def static_asymmetry() -> float:
        with torch.no_grad():
            torch.manual_seed(0)
            return float(model.density_asymmetry(static.detach()))

    before = static_asymmetry()
    for step in range(5):
        trainer.train_iteration(step)
    assert static_asymmetry() < 0.9 * before
    model.eval()
    with torch.no_grad():
        assert "density_asymmetry" not in model.get_outputs(cameras, batch)


def test_density_symmetry_needs_a_box_centred_on_the_face(synthetic_dataset: Path, tmp_path: Path):
    config = tiny_trainer_config(synthetic_dataset, tmp_path, density_symmetry_weight=1.0)
    config.pipeline.datamanager.dataparser.scene_box = ((-1.0, -1.8, -1.9), (1.5, 1.8, 1.1))
    trainer = config.setup()
    with pytest.raises(ConfigError, match="centre it on x = 0"):
        trainer.setup()


def test_pose_correction_options_without_pose_refinement_are_refused(synthetic_dataset: Path, tmp_path: Path):
    trainer = tiny_trainer_config(synthetic_dataset, tmp_path, pose_refinement_from="outside_face").setup()
    with pytest.raises(ConfigError, match="pose-refinement-from shapes the pose corrections, and this avatar "
                                          "learns none: set --pipeline.model.pose-refinement True"):
        trainer.setup()


def test_an_unknown_view_dependence_is_refused_when_the_model_is_built(synthetic_dataset: Path, tmp_path: Path):
    config = tiny_trainer_config(synthetic_dataset, tmp_path)
    config.pipeline.model.view_dependent = "sometimes"  # type: ignore[assignment]  # as a hand-edited config.yml
    trainer = config.setup()
    with pytest.raises(ConfigError, match="view_dependent must be True, False or 'auto', got 'sometimes'"):
        trainer.setup()
