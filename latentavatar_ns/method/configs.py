"""Method specifications: ``ns-train latentavatar`` and ``ns-train latentavatar-tiny``.

Kept light: nerfstudio imports this module for every ``ns-*`` command.
"""

from __future__ import annotations

from typing import Dict, cast

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.plugins.types import MethodSpecification

from latentavatar_ns.data.datamanager import LatentAvatarDataManagerConfig
from latentavatar_ns.data.dataparser import LatentAvatarDataParserConfig
from latentavatar_ns.model.latentavatar import LatentAvatarModelConfig
from latentavatar_ns.method.optimizers import FusedAdamOptimizerConfig
from latentavatar_ns.method.pipeline import LatentAvatarPipelineConfig
from latentavatar_ns.method.trainer import LatentAvatarTrainerConfig
from latentavatar_ns.utils.errors import install_excepthook


# Bad input or a diverged run ends an ``ns-*`` command (ns-train, ns-viewer, ns-eval) with its one-line
# message, not a traceback.
install_excepthook()


def _adam(lr: float) -> Dict[str, Dict]:
    # Constant learning rates, no scheduler: the paper's Adam 1e-4, and no numpy floats in checkpoints.
    # The proposal network's hash grid (sampler "proposal") learns at nerfacto's rate.
    groups = {group: {"optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-8), "scheduler": None}
              for group in ("encoder", "triplane", "superres")}
    groups["proposal"] = {"optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15), "scheduler": None}
    # The learned tri-plane of --pipeline.model.static-planes: texels, fitted directly, take a larger step.
    groups["static_planes"] = {"optimizer": FusedAdamOptimizerConfig(lr=10 * lr, eps=1e-15), "scheduler": None}
    # The expression bases of --pipeline.model.expression-planes are texels too.
    groups["expression_planes"] = {"optimizer": FusedAdamOptimizerConfig(lr=10 * lr, eps=1e-15), "scheduler": None}
    # Per-frame head-pose corrections of --pipeline.model.pose-refinement: each frame's pair of parameters
    # is updated only when the frame is drawn, so they take the tri-plane's step size.
    groups["pose_refinement"] = {"optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}
    return groups


def paper_config() -> LatentAvatarTrainerConfig:
    """The paper-faithful configuration: 512^2 output, 128^2 rendering, tri-plane 3x32x256^2, SR x4."""
    return LatentAvatarTrainerConfig(
        method_name="latentavatar",
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_eval_all_images=20000,
        steps_per_save=2000,
        max_num_iterations=200000,
        mixed_precision=False,
        # nerfstudio assumes CUDA; a machine without it trains on the CPU instead of failing at the first tensor.
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=LatentAvatarPipelineConfig(
            datamanager=LatentAvatarDataManagerConfig(dataparser=LatentAvatarDataParserConfig(), images_per_batch=2),
            model=LatentAvatarModelConfig(),
        ),
        optimizers=_adam(1e-4),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


def tiny_config() -> LatentAvatarTrainerConfig:
    """The same architecture scaled down to train on two CPU cores in minutes (128^2 frames)."""
    config = paper_config()
    config.method_name = "latentavatar-tiny"
    config.max_num_iterations = 3000  # 5 to 8.5 minutes on two CPU cores with two threads (machines differ)
    config.steps_per_eval_batch = 100
    config.steps_per_eval_image = 250
    config.steps_per_eval_all_images = 100000
    config.steps_per_save = 500
    config.pipeline.model = LatentAvatarModelConfig(
        encoder_crop_size=64,
        encoder_channels=(16, 32, 64, 128),
        code_dim=64,
        theta_dim=64,
        generator_channels=(64, 64, 64, 64, 32),
        plane_channels=16,
        field_hidden_dim=64,
        feature_dim=16,
        num_samples=32,
        sr_width=32,
        num_proposal_samples=32,
        num_nerf_samples=8,
        occupancy_resolution=32,
        occupancy_candidates=64,
        occupancy_num_codes=8,
        # What makes the small avatar draw eyes, teeth and the mouth's changes within a CPU budget
        # (scripts/bench_expression.py): fixed detail fitted texel by texel, a perceptual loss with the
        # cheap backbone (VGG would cost five times the whole model per step on a CPU), and losses
        # averaged over the face, the mouth and the eyes. The static planes join at step 500, once the
        # generator has begun to read the code, and 16 coarse (16^2) tri-plane bases weighted by theta carry
        # what the code changes texel by texel (not in the paper: expression_planes=0 and
        # static_planes_start_step=0 leave them out). The super-resolution head adds its output to the upsampled
        # low-res image, as EG3D's does (sr_residual=False is the paper's head). A total-variation penalty makes
        # neighbouring texels of the generator's output and the static planes agree unless the images ask
        # otherwise, so that a head turned past the training views keeps its outline; the expression planes
        # are left out of it, since smoothing them shrinks what the code draws (plane_tv_weight=0 leaves it out).
        # With one camera the feature MLP does not see the view direction: in the head's frame each frame's
        # direction is its pose, and a tracked pose that moves with the mouth would otherwise carry the mouth in
        # place of the code. A multi-view capture sees each moment from several directions, and keeps it
        # (view_dependent=True is the paper's field).
        # The face square's L1 counts twice, so that the loss weighs the face's detail against the hair, neck
        # and background; alone it lets the shoulders' outline go on video, and a matte loss ten times the
        # paper's holds that outline in place (face_loss_weight=1 with mask_loss_weight=0.1, the paper's, leave
        # both out).
        static_planes=True,
        static_planes_start_step=500,
        sr_residual=True,
        plane_tv_weight=1.0,
        plane_tv_target="no_expression_planes",
        expression_planes=16,
        expression_plane_resolution=16,
        lpips_loss_weight=0.1,
        lpips_loss_net="alex",
        mask_loss_weight=1.0,
        face_loss_weight=2.0,
        mouth_loss_weight=1.0,
        eye_loss_weight=1.0,
        view_dependent="auto",
    )
    config.optimizers = _adam(1e-3)
    # Every rate held for the first half of the run, then down to a tenth (scripts/bench_expression.py).
    config.lr_final_factor = 0.1
    return config


def default_config() -> LatentAvatarTrainerConfig:
    """``ns-train latentavatar``: the paper's networks and numbers, sampled by the proposal network, region losses on.

    The sampler is the one that measured best (README, "Sampling"): far fewer main-field evaluations,
    better held-out quality, and faster steps and renders at the paper's size.
    ``--pipeline.model.sampler uniform``, the region-loss weights at 0, ``--pipeline.model.mask-loss-weight 0.1``
    and ``--lr-final-factor 1`` are the paper's configuration exactly.
    """
    config = paper_config()
    model = cast(LatentAvatarModelConfig, config.pipeline.model)
    model.sampler = "proposal"
    # Losses averaged over the face, mouth and eyes as well as the frame, the face's twice, and the matte
    # loss ten times the paper's (scripts/bench_expression.py); they leave the paper's networks as they are.
    # ``--pipeline.model.face-loss-weight 0`` (and mouth, eye) with ``--pipeline.model.mask-loss-weight 0.1``
    # is the paper's loss.
    model.face_loss_weight = 2.0
    model.mouth_loss_weight = model.eye_loss_weight = 1.0
    model.mask_loss_weight = 1.0
    # The learning rates fall to a tenth over the run's second half (scripts/bench_expression.py); the
    # networks are the paper's. ``--lr-final-factor 1`` is the paper's constant Adam.
    config.lr_final_factor = 0.1
    return config


latentavatar = MethodSpecification(
    config=default_config(),
    description="LatentAvatar (SIGGRAPH 2023): head avatar driven by latent expression codes (paper's networks).",
)

latentavatar_tiny = MethodSpecification(
    config=tiny_config(),
    description="LatentAvatar scaled down for CPUs, demos and tests (128^2 frames).",
)
