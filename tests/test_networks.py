"""Each network's shapes, the paper's sizes, and the generator's dependence on the code."""

from __future__ import annotations

import io

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox

from latentavatar_ns.method.configs import default_config, paper_config, tiny_config
from latentavatar_ns.data.format import OFFICIAL_BOX
from latentavatar_ns.model.encoder import ExpressionEncoder, FrameCodeNorm, MappingMLP
from latentavatar_ns.model.field import TriplaneField, resolve_view_dependence, sample_triplane
from latentavatar_ns.model.generator import ModulatedConv2d, TriplaneGenerator
from latentavatar_ns.model.rendering import VolumeRenderer
from latentavatar_ns.model.sampling import UniformBoxSampler
from latentavatar_ns.model.superres import SuperResolution


def test_encoder_and_mapping_shapes():
    enc = ExpressionEncoder(128)
    code = enc(torch.rand(2, 3, 128, 128))
    assert code.shape == (2, 256)
    # Per-sample normalisation: zero mean, unit variance.
    assert torch.allclose(code.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(code.std(1), torch.ones(2), atol=1e-3)
    assert MappingMLP()(code).shape == (2, 128)
    assert enc.fc.in_features == 256 * 8 * 8


def test_frame_norm_standardises_codes_over_frames_and_freezes_in_eval():
    torch.manual_seed(0)
    # Codes that share a large part and differ by a small one, as a per-sample-normalised code can.
    shared, spread = torch.randn(8) * 3.0, torch.tensor([0.05, 0.1, 1.0, 0.05, 0.2, 0.08, 0.5, 0.06])
    frames = shared + torch.randn(400, 8) * spread
    norm = FrameCodeNorm(8, momentum=0.02)
    for batch in frames.split(2):
        norm(batch)
    norm.eval()
    out = norm(frames)
    assert out.mean(0).abs().max() < 0.3
    assert ((out.std(0) - 1).abs() < 0.3).all(), out.std(0)
    # Outside training the estimates are fixed: the same code twice gives the same output.
    assert torch.equal(norm(frames[:3]), out[:3])
    restored = FrameCodeNorm(8)
    restored.load_state_dict(norm.state_dict())
    restored.eval()
    assert torch.allclose(restored(frames[:3]), out[:3])


def test_encoder_with_frame_norm_tells_frames_apart_that_share_most_of_their_code():
    torch.manual_seed(0)
    plain, normed = ExpressionEncoder(32, (8, 16), 16), ExpressionEncoder(32, (8, 16), 16, normalisation="frames")
    normed.load_state_dict(plain.state_dict(), strict=False)
    base = torch.rand(1, 3, 32, 32)
    crops = base + 0.01 * torch.rand(64, 3, 32, 32)  # nearly one face
    for batch in crops.split(4):
        normed(batch)
    normed.eval()
    with torch.no_grad():
        spread_plain, spread_normed = plain(crops).std(0).mean(), normed(crops).std(0).mean()
    assert spread_plain < 0.1 and spread_normed > 0.5, (spread_plain, spread_normed)


def test_paper_generator_makes_3x32x256_planes():
    gen = TriplaneGenerator()
    assert gen.resolution == 256
    with torch.no_grad():
        planes = gen(torch.randn(1, 128))
    assert planes.shape == (1, 3, 32, 256, 256)


def test_generator_depends_on_the_code():
    torch.manual_seed(0)
    gen = TriplaneGenerator(16, channels=(32, 32, 16), plane_channels=4)
    # Give the styles a non-trivial effect (affine starts at identity modulation).
    for module in gen.modules():
        if isinstance(module, ModulatedConv2d):
            torch.nn.init.normal_(module.affine.weight, std=0.5)
    theta = torch.randn(2, 16)
    planes = gen(theta)
    assert planes.shape == (2, 3, 4, 16, 16)
    assert not torch.allclose(planes[0], planes[1], atol=1e-4)
    assert torch.allclose(gen(theta[:1]), planes[:1], atol=1e-5)  # per-sample weights, no batch mixing
    planes.sum().backward()
    assert gen.blocks[0].conv1.affine.weight.grad.abs().sum() > 0


def test_static_planes_are_shared_by_every_code_and_learn_directly():
    torch.manual_seed(0)
    plain = TriplaneGenerator(16, channels=(32, 32, 16), plane_channels=4)
    gen = TriplaneGenerator(16, channels=(32, 32, 16), plane_channels=4, static_planes=True)
    gen.load_state_dict(plain.state_dict(), strict=False)
    assert gen.static_planes.shape == (1, 3, 4, 16, 16) and plain.static_planes is None
    theta = torch.randn(2, 16)
    with torch.no_grad():
        gen.static_planes.normal_()
        # The same offset on every code's planes, on top of what the convolutions draw.
        assert torch.allclose(gen(theta) - plain(theta), gen.static_planes.expand(2, -1, -1, -1, -1), atol=1e-5)
    gen(theta)[:, 0, 0, 3, 5].sum().backward()
    grad = gen.static_planes.grad
    assert grad[0, 0, 0, 3, 5] == 2.0 and grad.abs().sum() == 2.0  # one texel, one step away from its target


def test_modulated_conv_matches_plain_conv_for_unit_style():
    conv = ModulatedConv2d(4, 6, 3, style_dim=8, demodulate=False)
    x = torch.randn(2, 4, 8, 8)
    out = conv(x, torch.zeros(2, 8))  # affine weight 0, bias 1: style == 1
    ref = torch.nn.functional.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1)
    assert torch.allclose(out, ref, atol=1e-5)


def test_triplane_sampling_sums_the_three_planes():
    planes = torch.zeros(1, 3, 1, 4, 4)
    planes[0, 0] = 1.0
    planes[0, 1] = 2.0
    planes[0, 2] = 4.0
    xyz = torch.zeros(1, 5, 3)
    assert torch.allclose(sample_triplane(planes, xyz), torch.full((1, 5, 1), 7.0))


def test_field_shapes_and_box():
    field = TriplaneField()
    planes = torch.randn(2, 3, 32, 16, 16)
    xyz = torch.rand(2, 10, 3) * 2 - 1
    xyz[:, 0] = 1.5  # outside the box
    density, h = field.density(planes, xyz)
    assert density.shape == (2, 10, 1) and (density[:, 0] == 0).all() and (density >= 0).all()
    directions = torch.nn.functional.normalize(torch.randn(2, 10, 3), dim=-1)
    feats = field.features(h, field.direction_code(directions))
    assert feats.shape == (2, 10, 32)
    assert ((feats[..., :3] >= 0) & (feats[..., :3] <= 1)).all()
    assert field.direction_encoding.get_out_dim() == 27
    # The split first layer is the plain MLP over [plane feature, encoded direction], the checkpoint's layout.
    plain = torch.nn.Sequential(*field.feature_mlp)(torch.cat([h, field.direction_encoding(directions)], dim=-1))
    torch.testing.assert_close(feats, torch.cat([torch.sigmoid(plain[..., :3]), plain[..., 3:]], dim=-1))
    # One direction code per ray broadcasts over the ray's samples.
    per_ray = field.features(h, field.direction_code(directions[:, :1]))
    torch.testing.assert_close(per_ray, field.features(h, field.direction_code(directions[:, :1].expand(-1, 10, -1))))


def test_field_without_view_dependence_gives_every_direction_the_same_features():
    torch.manual_seed(0)
    field = TriplaneField(plane_channels=8, hidden_dim=16, feature_dim=6, view_dependent=False)
    assert field.feature_mlp[0].weight.shape == (16, 8)  # no direction columns to learn
    h = torch.randn(2, 7, 8)
    directions = torch.nn.functional.normalize(torch.randn(2, 7, 3), dim=-1)
    feats = field.features(h, field.direction_code(directions))
    torch.testing.assert_close(feats, field.features(h, field.direction_code(-directions)))
    plain = torch.nn.Sequential(*field.feature_mlp)(h)
    torch.testing.assert_close(feats, torch.cat([torch.sigmoid(plain[..., :3]), plain[..., 3:]], dim=-1))
    # With view dependence the same planes give direction-dependent features.
    viewed = TriplaneField(plane_channels=8, hidden_dim=16, feature_dim=6)
    assert not torch.allclose(viewed.features(h, viewed.direction_code(directions)),
                              viewed.features(h, viewed.direction_code(-directions)))


def test_auto_view_dependence_is_on_only_when_a_moment_has_several_views():
    monocular, multiview = torch.arange(5), torch.tensor([0, 0, 1, 1, 2, 2])
    assert not resolve_view_dependence("auto", monocular) and resolve_view_dependence("auto", multiview)
    # One view per moment of a multi-view capture (a frontal-only avatar) is a single camera.
    assert not resolve_view_dependence("auto", torch.tensor([0, 1, 2]))
    for setting in (True, False):  # an explicit setting wins over the capture
        assert resolve_view_dependence(setting, monocular) is setting is resolve_view_dependence(setting, multiview)


def test_superres_scales_by_four():
    sr = SuperResolution(32, 16, scale=4)
    out = sr(torch.randn(1, 32, 16, 16))
    assert out.shape == (1, 3, 64, 64) and out.min() >= 0 and out.max() <= 1


def test_residual_superres_starts_as_the_upsampled_low_res_rgb_and_learns_detail():
    torch.manual_seed(0)
    sr = SuperResolution(8, 16, scale=4, residual=True)
    features = torch.randn(1, 8, 8, 8)
    features[:, :3] = torch.rand(1, 3, 8, 8) * 0.9 + 0.05  # low-res RGB as the field gives it
    upsampled = torch.nn.functional.interpolate(features[:, :3], scale_factor=4.0, mode="bilinear",
                                                align_corners=False)
    assert torch.allclose(sr(features), upsampled, atol=1e-5)
    target = (upsampled > 0.5).float()  # the same image with sharp edges: detail the upsample lacks
    optimizer = torch.optim.Adam(sr.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (sr(features) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]


def test_late_cosine_decay_holds_then_falls_and_checkpoints_without_numpy():
    from latentavatar_ns.method.schedulers import LateCosineDecaySchedulerConfig

    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam([param], lr=1e-3)
    config = LateCosineDecaySchedulerConfig(final_factor=0.1, decay_start=0.5, max_steps=100)
    scheduler = config.setup().get_scheduler(optimizer, 1e-3)
    rates = []
    for _ in range(120):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[48] == 1e-3 and all(a >= b for a, b in zip(rates, rates[1:]))
    assert rates[74] == pytest.approx(0.55e-3) and rates[99] == pytest.approx(1e-4) and rates[-1] == rates[99]
    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["scheduler"]["last_epoch"] == 120


def _camera(size: int) -> Cameras:
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 10.0]])[None]
    return Cameras(camera_to_worlds=c2w, fx=size * 2.0, fy=size * 2.0, cx=size / 2, cy=size / 2,
                   width=size, height=size)


def test_volume_renderer_composites_background_over_real_samples():
    box = SceneBox(aabb=torch.tensor(OFFICIAL_BOX))
    renderer = VolumeRenderer(box, UniformBoxSampler(16))
    field = TriplaneField(plane_channels=4, hidden_dim=8, feature_dim=5)
    empty = torch.zeros(1, 3, 4, 8, 8)
    torch.nn.init.constant_(field.density_mlp[-1].bias, -30.0)  # no density anywhere
    out = renderer(field, empty, _camera(8), torch.tensor([0.2, 0.4, 0.6]))
    assert out["features"].shape == (1, 5, 8, 8)
    assert out["accumulation"].max() < 1e-6  # the matte is empty, not ~1 as in the official code
    assert torch.allclose(out["features"][0, :3, 4, 4], torch.tensor([0.2, 0.4, 0.6]), atol=1e-5)
    torch.nn.init.constant_(field.density_mlp[-1].bias, 5.0)  # dense box
    out = renderer(field, empty, _camera(8), torch.tensor([0.2, 0.4, 0.6]))
    assert out["accumulation"][0, 4, 4, 0] > 0.99


def test_paper_config_numbers():
    cfg = paper_config()
    model = cfg.pipeline.model
    assert (model.sr_scale, model.num_samples, model.plane_channels) == (4, 64, 32)
    assert cfg.pipeline.datamanager.images_per_batch == 2
    assert all(cfg.optimizers[g]["optimizer"].lr == 1e-4 for g in ("encoder", "triplane", "superres"))
    assert (model.mask_loss_weight, model.lpips_loss_weight, model.lpips_loss_net) == (0.1, 0.1, "vgg")
    # static planes change the paper's architecture: latentavatar-tiny's default only (README "Expressiveness").
    assert not model.static_planes and not default_config().pipeline.model.static_planes
    tiny = tiny_config().pipeline.model
    assert tiny.static_planes and (tiny.lpips_loss_weight, tiny.lpips_loss_net) == (0.1, "alex")
    assert all(group["optimizer"].fused for group in cfg.optimizers.values())
    # The region losses (the face's twice) and the matte loss ten times the paper's leave the architecture
    # alone: latentavatar's default too, the paper's weights in paper_config.
    assert (model.face_loss_weight, model.mouth_loss_weight, model.eye_loss_weight) == (0.0, 0.0, 0.0)
    for losses in (default_config().pipeline.model, tiny):
        assert (losses.face_loss_weight, losses.mouth_loss_weight, losses.eye_loss_weight) == (2.0, 1.0, 1.0)
        assert losses.mask_loss_weight == 1.0
    assert model.sampler == "uniform" and default_config().pipeline.model.sampler == "proposal"  # bench/sampling.json
    # The late fall of the learning rates leaves the networks alone: both methods' default, not the paper's.
    assert cfg.lr_final_factor == 1.0 and default_config().lr_final_factor == tiny_config().lr_final_factor == 0.1
    # The residual super-resolution head changes the paper's head: latentavatar-tiny's default only.
    assert tiny.sr_residual and not model.sr_residual and not default_config().pipeline.model.sr_residual
    # The tri-planes' total-variation penalty, the expression planes left out: latentavatar-tiny's default. The
    # paper's networks have no expression planes, and there it takes the mouth (docs/expressiveness.md, "A penalty
    # that spares the mouth").
    assert model.plane_tv_weight == default_config().pipeline.model.plane_tv_weight == 0.0
    assert (tiny.plane_tv_weight, tiny.plane_tv_target) == (1.0, "no_expression_planes")
    # Features without the view direction change the paper's field: latentavatar-tiny's default only.
    assert model.view_dependent is default_config().pipeline.model.view_dependent is True
    assert tiny.view_dependent == "auto"  # on for a multi-view capture, where the direction is not the pose


def test_fused_adam_config_takes_the_same_steps_as_the_loop():
    from latentavatar_ns.method.optimizers import FusedAdamOptimizerConfig

    torch.manual_seed(0)
    start, grads = torch.randn(3, 4, 5), [torch.randn(3, 4, 5) for _ in range(3)]
    finals = []
    for fused in (False, True):
        param = torch.nn.Parameter(start.clone())
        optimizer = FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15, fused=fused).setup([param])
        assert optimizer.defaults["fused"] is fused
        for grad in grads:
            param.grad = grad.clone()
            optimizer.step()
        finals.append(param.detach())
    assert not torch.equal(finals[0], start)
    assert torch.allclose(finals[0], finals[1], atol=1e-6)
