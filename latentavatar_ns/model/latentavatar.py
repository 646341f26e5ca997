"""The LatentAvatar model: face crop -> expression code -> tri-plane -> volume render -> super-resolution.

Over 400 lines because its config is the method's whole list of options, each with its reason; the
model's own code is its hooks in the order nerfstudio calls them, each short and delegating to ``model/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor, nn

from latentavatar_ns.evaluation.metrics import ImageMetrics, psnr_db
from latentavatar_ns.model.code_table import CodeSource, FrameCodeTable
from latentavatar_ns.model.encoder import ExpressionEncoder, MappingMLP
from latentavatar_ns.model.field import (DEPTH_AXIS, PLANE_AXES, TriplaneField, plane_texels_in_box,
                                         resolve_view_dependence)
from latentavatar_ns.model.generator import TriplaneGenerator
from latentavatar_ns.model.losses import (as_float_image, crop_reconstruction_loss, mirror_opacity_gap,
                                         plane_total_variation, region_crops, region_losses, targets)
from latentavatar_ns.model.lpips import load_lpips
from latentavatar_ns.model.pose_refinement import HeadPoseRefinement
from latentavatar_ns.data.regions import REGIONS, canonical_region_box, expression_boxes, union_mask
from latentavatar_ns.model.rendering import VolumeRenderer, cropped_cameras, resized_cameras
from latentavatar_ns.model.sampling import make_sampler
from latentavatar_ns.model.superres import SuperResolution
from latentavatar_ns.model.warm_start import CropDecoder
from latentavatar_ns.utils.errors import ConfigError


THUMBNAIL_SIDE = 16
"""Side of the face-crop thumbnails whose main directions ``pose_refinement_expression_from crops`` reads."""


@dataclass
class LatentAvatarModelConfig(ModelConfig):
    """Defaults are the paper's configuration; ``latentavatar-tiny`` and ``latentavatar`` change some
    (method/configs.py)."""

    _target: Type = field(default_factory=lambda: LatentAvatarModel)
    encoder_crop_size: int = 128
    """Side of the face crop the expression encoder sees."""
    encoder_channels: Tuple[int, ...] = (32, 64, 128, 256)
    """Widths of the encoder's stride-2 convs."""
    code_dim: int = 256
    """Expression code size (the encoder's output)."""
    code_normalisation: Literal["sample", "frames"] = "sample"
    """How the encoder's output is normalised: per sample over its channels (the official release), or
    that and then each channel over the training frames, with running estimates (not in the paper).
    Per-sample codes keep what all frames share, which can grow until every expression gets nearly the
    same code; per-frame standardisation keeps the differences between frames at unit scale."""
    theta_dim: int = 128
    """Person-specific code size (the mapping MLP's output, the generator's style)."""
    encoder_noise_std: float = 0.05
    """Gaussian noise added to the crop in training, so the code ignores pixel noise."""
    code_noise_std: float = 0.0
    """Gaussian noise added to each training image's expression code, in units of each channel's spread over
    the training frames' stored codes (not in the paper). A short video gives the generator a hundred-odd
    codes, each of which it can draw as its own image; with noise it must draw neighbouring codes alike, so
    a held-out expression, whose code falls between the training codes, gets an image between theirs rather
    than an arbitrary one. 0 leaves it out."""
    encoder_warm_start_steps: int = 0
    """Before the first step, fit the encoder for this many steps as half of an autoencoder of the training
    frames' crops, the mouth and eyes weighted as the region losses weigh them (not in the paper). A
    random encoder leaves out expressions that cover few pixels; this starts it with codes that tell
    them apart. 0 starts from random weights, as the paper does."""
    code_reconstruction_weight: float = 0.0
    """Weight of an L1 between each training crop and its reconstruction from the code by a small decoder
    trained alongside (the warm start's), the mouth and eyes weighted as the region losses weigh them (not
    in the paper). The photometric losses ask the code only for what the generator already reads; this
    keeps the whole expression in it, so that an encoder learning faster than the generator cannot drift
    to crop features the generator has not learned to use. 0 leaves it out."""
    generator_channels: Tuple[int, ...] = (256, 256, 256, 256, 256, 192, 96)
    """Generator block widths at resolutions 4, 8, ...; the last block sets the plane resolution."""
    plane_channels: int = 32
    """Features per plane."""
    static_planes: bool = False
    """Add a learned tri-plane shared by all codes to the generator's output (not in the paper): fixed detail
    is fitted directly and the generator only models what changes with expression. It fits faster, and
    with the region losses leaves the changes to the code (README, "Expressiveness")."""
    static_planes_start_step: int = 0
    """Leave the static planes out of the first this many training steps (not in the paper). Texels fit any
    fixed difference between frames faster than the generator learns to read the code; where a video's
    expressions go with its head poses (a smile with a nod), the static planes can then draw each mouth for
    its pose, and the code is left nothing to carry. Starting without them, the generator takes the
    changes first and the static planes add the fixed detail after. 0 uses them from the first step."""
    code_to_field: bool = False
    """Also feed a projection of theta straight to the field's MLPs (added to every sample's plane feature),
    beside the generator (not in the paper; NeRFace conditions its MLP this way). The generator must
    learn to draw every expression-dependent change; this gives the code a short path to the field."""
    expression_planes: int = 0
    """Add this many learned tri-planes to the generator's output, each weighted by a linear function of theta
    (not in the paper; NeRFBlendShape blends expression bases this way). The generator's styles act on whole
    channels, so a change confined to a few texels (a blink, the lips) is slow to learn through them; bases
    fitted texel by texel, at the static planes' step size, learn it directly. 0 leaves them out."""
    expression_plane_resolution: int = 0
    """Side of the expression planes, upsampled bilinearly to the planes' side (0: the planes' side). Each basis
    then changes neighbouring texels together, as a smooth deformation does, rather than fitting each training
    frame's residual texel by texel; fewer texels per basis also means less to fit from a short video."""
    code_to_sr: bool = False
    """Also steer the super-resolution head with theta (adaptive instance norm; not in the paper, whose head
    sees only the rendered features; EG3D's takes its latent this way). Blinks and gaze cover one or two
    low-res pixels; this lets the code act at the output resolution, where they cover more."""
    field_hidden_dim: int = 128
    """Hidden width of the density and feature MLPs."""
    view_dependent: Union[bool, Literal["auto"]] = True
    """Feed the view direction to the feature MLP, as the paper does. Off, colours and features depend on the
    point and the code alone (not in the paper). The head turns in front of a fixed camera, so in the head's
    frame each training frame has its own view direction: the MLP can tie appearance, expression included,
    to the pose it was seen at, and must extrapolate it to held-out poses. auto: on when some training moment
    is seen by several cameras (a multi-view capture, where the direction is seen apart from the pose and
    carries real view-dependent appearance), off for a single camera."""
    feature_dim: int = 32
    """Rendered feature channels (the first three are the low-res RGB)."""
    sampler: Literal["uniform", "proposal", "occupancy"] = "uniform"
    """Where the field is evaluated: the paper's uniform samples, hash-grid proposal networks, or an occupancy grid."""
    num_samples: int = 64
    """uniform: samples per ray inside the canonical box."""
    num_proposal_samples: int = 64
    """proposal: samples of the proposal network per ray."""
    num_nerf_samples: int = 16
    """proposal: samples of the main field per ray, placed by the proposal network."""
    proposal_loss_weight: float = 1.0
    """proposal: weight of the interlevel loss that trains the proposal network."""
    proposal_hash_max_res: int = 128
    """proposal: finest resolution of the proposal network's hash grid."""
    proposal_bake_resolution: int = 64
    """proposal: outside training, read the (expression-independent) proposal density from a grid of this many
    texels per side, filled from the network once per change of its weights, instead of querying the hash grid
    for every sample of every frame. 0 queries the network."""
    occupancy_resolution: int = 64
    """occupancy: cells per side of the grid over the canonical box."""
    occupancy_candidates: int = 128
    """occupancy: candidate samples per ray before empty cells are culled."""
    occupancy_update_every: int = 16
    """occupancy: steps between grid updates."""
    occupancy_warmup_steps: int = 256
    """occupancy: the grid stays fully occupied until the field has some shape."""
    occupancy_num_codes: int = 16
    """occupancy: training frames' codes whose maximum density each update keeps (conservative over expressions)."""
    occupancy_threshold: float = 0.01
    """occupancy: a cell is empty when no sample in it could be more than this opaque."""
    pose_refinement: bool = False
    """Learn a rigid correction of each training image's head pose with the avatar, so that tracker error is
    explained by the pose rather than absorbed by the expression code. Held-out and driving frames keep
    their stored poses."""
    pose_refinement_weight: float = 1.0
    """Penalty on the squared size of the pose corrections (translation in canonical units, rotation in radians).
    A heavier one keeps frames without error where the tracker put them, but leaves more of the error to the
    expression code."""
    pose_refinement_centred: bool = False
    """Remove the corrections' mean over the training images, so that they move frames only against one another.
    Free corrections can also move every frame alike, against which the avatar moves the other way: its head
    then sits off the stored poses, and held-out frames seen from those poses miss it."""
    pose_refinement_expression_directions: int = 0
    """Keep the corrections, over the training images, orthogonal to this many main directions of the
    images' expressions (0: free). A mouth that opens or brows that rise can also be drawn as a nod, and
    free corrections take that share; one that rises and falls with the expression is removed, while
    tracker error, which does not follow the expression, stays. Each direction also removes a share
    (direction count / images) of the error's own frame-to-frame variance."""
    pose_refinement_expression_from: Literal["crops", "codes"] = "crops"
    """Where those directions are read: ``crops``, thumbnails of the face crops the encoder sees, which
    show the expression but not the stored pose's error (the crop is placed by the face itself); or
    ``codes``, the expression codes, which can learn the pose error before the corrections do."""
    pose_refinement_from: Literal["frame", "outside_face", "outside_parts"] = "frame"
    """Which pixels' error moves the pose corrections. A mouth that opens or brows that rise can also be
    explained by moving the head (a nod), and free corrections take that share, which a head rendered from
    its stored pose then lacks. ``outside_face`` leaves out the face square (grown to the raised brows and
    the open jaw's chin): only the skull, hair, ears and outline place the head, as a tracker that reads
    rigid landmarks does. ``outside_parts`` leaves out only the eyes with the brows and the mouth with the
    chin, keeping the nose, cheeks and forehead. Either way those pixels still train the avatar."""
    density_noise_std: float = 0.1
    """Noise on raw density in training (discourages semi-transparent fog)."""
    sr_scale: int = 4
    """Super-resolution factor: rays are rendered at the image size / sr_scale (128^2 for 512^2 frames)."""
    sr_width: int = 64
    """Width of the super-resolution U-Net's first level."""
    sr_residual: bool = False
    """Add the super-resolution head's output to the upsampled low-res RGB (in logit space) instead of
    drawing the image from the features alone, as EG3D's head does (not in the paper): the head starts as
    that upsample and has to learn only the detail on top of it."""
    inference_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Precision of renders outside training (viewer, ns-render, reenactment): reduced precision runs the
    generator, field and SR head under autocast (float16 is CUDA only); training keeps float32 (or nerfstudio's
    --mixed-precision)."""
    compile_networks: bool = False
    """torch.compile the super-resolution head and the field's MLPs (kernels fused by Inductor; a C++ compiler
    is needed on the CPU). The first steps and frames at each new size pay the compile time; weights and
    checkpoints are the same as without it."""
    train_patch_size: Optional[int] = None
    """Patch-wise training: render only a random window of this many low-res pixels per side each step
    (the SR head and every loss see the matching patch); None renders whole frames, as the paper. Renders
    outside training are always whole frames."""
    rgb_loss_weight: float = 1.0
    """L1 on the high-resolution image."""
    low_res_loss_weight: float = 1.0
    """L1 on the rendered RGB against the area-downsampled image."""
    mask_loss_weight: float = 0.1
    """MSE between the rendered accumulation and the matte (the paper's 0.1). It pins the outline of the head
    and shoulders, which no code moves; a loss that weighs the face more draws that outline looser unless
    this weight rises with it."""
    plane_tv_weight: float = 0.0
    """Weight of a total-variation penalty on each training image's tri-plane: the mean squared difference
    between neighbouring texels (K-Planes' regulariser; not in the paper). Texels fitted one by one, as the
    static and expression planes are, are free to differ wherever few training views constrain them, and a
    head turned a little further than in training shows those texels in its outline; the penalty makes
    neighbours agree unless the images ask otherwise. 0 leaves it out."""
    plane_tv_target: Literal["triplane", "static", "depth_planes", "no_expression_planes"] = "triplane"
    """What the total-variation penalty smooths: the whole tri-plane the field reads (the generator's output with
    the static and expression planes added); the static planes alone, so that what the code draws keeps its
    detail while the fixed shape is smoothed; or the tri-plane's two planes that hold the depth axis, (y, z) and
    (x, z), which shape the head's outline seen from the side, leaving the frontal (x, y) plane, where the face's
    front (the mouth, the teeth, the eyes) is drawn, as sharp as the images ask; or the tri-plane without the
    expression planes' code-weighted offset, which the penalty would otherwise shrink with the rest."""
    plane_tv_end_step: Optional[int] = None
    """Training step from which the total-variation penalty is dropped; None keeps it to the end. Texels that no
    training view pins down get no gradient from the images, so the shape the penalty gave them stays once it
    is dropped, while the texels the images do pin (the mouth, the teeth) sharpen again in the steps left."""
    plane_tv_spare_mouth: bool = False
    """Leave the texels over the mouth out of the total-variation penalty: those of each plane over the mouth's
    part of the canonical face square (the encoder crop's square at its default place), from deep enough behind
    it for an open mouth's inside. The lips and teeth keep their edges; the outline, far from them, is smoothed."""
    plane_tv_norm: Literal["squared", "absolute"] = "squared"
    """How the total-variation penalty weighs each step between neighbouring texels: its square (K-Planes),
    which flattens large steps hardest, or its magnitude, which removes small texel-to-texel noise as firmly
    but lets a few sharp edges stand (the lip line, the teeth against the mouth's inside)."""
    density_symmetry_weight: float = 0.0
    """Weight of a penalty on the difference between the field's opacity at random points of the box and at
    their mirror images across the face's middle (canonical x = 0; not in the paper). A video pins the head's
    shape only at the poses it shows; a head turned further one way than in training shows an outline that
    only the other side's views constrain. Only density is mirrored, so skin, hair and expressions keep
    their colours and their asymmetries of colour. 0 leaves it out."""
    density_symmetry_points: int = 4096
    """Random points (and as many mirror images) the symmetry penalty reads the density at, per image."""
    face_loss_weight: float = 0.0
    """Extra L1 averaged over the face square only (high and low resolution). The face is a small part of
    the frame, so a whole-frame mean lets the loss settle for an average face; 0 is the paper's loss."""
    mouth_loss_weight: float = 0.0
    """Extra L1 averaged over the mouth box (lower face square): the region where most expression lives."""
    eye_loss_weight: float = 0.0
    """Extra L1 averaged over the eye band of the face square: blinks and gaze cover only a few pixels."""
    lpips_loss_weight: float = 0.1
    """LPIPS on the high-resolution image (skipped with a warning when the weights are absent)."""
    lpips_loss_net: Literal["vgg", "alex"] = "vgg"
    """Backbone of the LPIPS loss: the paper's VGG, or AlexNet (a small fraction of VGG's cost, for CPU training)."""
    region_lpips_weight: float = 0.0
    """LPIPS (the loss's backbone) on the mouth box and the eye band, each cut out and zoomed to 64 pixels
    wide (not in the paper). An L1 barely changes between an open and a shut eye of a few pixels; a
    perceptual distance of the zoomed crop does. 0 leaves it out."""
    eval_lpips: bool = True
    """Report LPIPS in eval when the weights are present."""

    @property
    def region_loss_weights(self) -> Dict[str, float]:
        """The face, mouth and eye loss weights by region name (``REGIONS``), as the region losses read them."""
        return dict(zip(REGIONS, (self.face_loss_weight, self.mouth_loss_weight, self.eye_loss_weight)))


class LatentAvatarModel(Model):
    config: LatentAvatarModelConfig
    frame_codes: Tensor
    train_image_codes: Tensor
    crop_thumbnails: Tensor
    crop_seen: Tensor
    background: Tensor

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        if cfg.plane_tv_weight > 0 and cfg.plane_tv_target == "static" and not cfg.static_planes:
            raise ConfigError("plane_tv_target 'static' smooths the static planes, and this avatar has none: "
                              "set --pipeline.model.static-planes True or --pipeline.model.plane-tv-target triplane")
        if cfg.view_dependent not in (True, False, "auto"):  # a hand-edited config.yml, say
            raise ConfigError(f"view_dependent must be True, False or 'auto', got {cfg.view_dependent!r}: "
                              "set --pipeline.model.view-dependent to one of them")
        shaping = [flag for flag, on in (("pose-refinement-centred", cfg.pose_refinement_centred),
                                         ("pose-refinement-from", cfg.pose_refinement_from != "frame"),
                                         ("pose-refinement-expression-directions",
                                          cfg.pose_refinement_expression_directions > 0)) if on]
        if shaping and not cfg.pose_refinement:
            raise ConfigError(f"--pipeline.model.{shaping[0]} shapes the pose corrections, and this avatar learns "
                              "none: set --pipeline.model.pose-refinement True or leave it at its default")
        x_lo, x_hi = (float(x) for x in self.scene_box.aabb[:, 0])
        if cfg.density_symmetry_weight > 0 and abs(x_lo + x_hi) > 1e-6:
            raise ConfigError(f"density_symmetry_weight mirrors the head across canonical x = 0, but the scene box's "
                              f"x runs from {x_lo} to {x_hi}: centre it on x = 0 or set "
                              "--pipeline.model.density-symmetry-weight 0")
        metadata = self.kwargs.get("metadata", {})
        self.num_train_frames = int(metadata.get("num_train_frames", self.num_train_data))
        num_codes = self.num_train_frames + int(metadata.get("num_eval_frames", 0))
        # Every frame's expression code: train frames as last used in training, eval frames as last
        # encoded. A caller with only a camera (viewer, ns-render) renders a stored frame's expression.
        self.register_buffer("frame_codes", torch.zeros(num_codes, cfg.code_dim))
        # Which code each training image shows (a multi-view capture has several images per moment).
        image_codes = metadata.get("image_code_idx")
        self.register_buffer("train_image_codes", torch.arange(self.num_train_data) if image_codes is None
                             else torch.as_tensor(image_codes, dtype=torch.long).reshape(-1), persistent=False)
        self.encoder = ExpressionEncoder(cfg.encoder_crop_size, cfg.encoder_channels, cfg.code_dim,
                                      cfg.code_normalisation)
        self.mapping = MappingMLP(cfg.code_dim, cfg.code_dim, cfg.theta_dim)
        self.plane_tv_on = True
        self.generator = TriplaneGenerator(cfg.theta_dim, cfg.generator_channels, cfg.plane_channels,
                                           static_planes=cfg.static_planes, code_to_field=cfg.code_to_field,
                                           expression_planes=cfg.expression_planes,
                                           expression_plane_resolution=cfg.expression_plane_resolution)
        self.field = TriplaneField(cfg.plane_channels, cfg.field_hidden_dim, cfg.feature_dim,
                                   view_dependent=resolve_view_dependence(cfg.view_dependent,
                                                                          self.train_image_codes))
        self.renderer = VolumeRenderer(self.scene_box, make_sampler(cfg, self.scene_box.aabb))
        self.superres = SuperResolution(cfg.feature_dim, cfg.sr_width, cfg.sr_scale,
                                        style_dim=cfg.theta_dim if cfg.code_to_sr else 0, residual=cfg.sr_residual)
        self.pose_refinement = HeadPoseRefinement(self.num_train_data, cfg.pose_refinement_centred,
                                                  cfg.pose_refinement_expression_directions) \
            if cfg.pose_refinement else None
        if cfg.pose_refinement and cfg.pose_refinement_expression_directions > 0 \
                and cfg.pose_refinement_expression_from == "crops":  # each training image's crop, as last drawn
            self.register_buffer("crop_thumbnails", torch.zeros(self.num_train_data, 3 * THUMBNAIL_SIDE ** 2),
                                 persistent=False)
            self.register_buffer("crop_seen", torch.zeros(self.num_train_data, dtype=torch.bool), persistent=False)
        self.crop_decoder = CropDecoder(cfg.code_dim, cfg.encoder_crop_size) \
            if cfg.code_reconstruction_weight > 0 else None
        background = metadata.get("background_color", torch.ones(3))
        self.register_buffer("background", torch.as_tensor(background, dtype=torch.float32).clone())
        # Held outside the module tree: a frozen loss network belongs in neither checkpoints nor param groups.
        # Eval always reports LPIPS-VGG (ns-eval's definition); the loss may use a cheaper backbone.
        perceptual_loss = cfg.lpips_loss_weight > 0 or cfg.region_lpips_weight > 0
        self._lpips = (load_lpips("vgg"),) if (cfg.eval_lpips or (perceptual_loss and cfg.lpips_loss_net == "vgg")) \
            else (None,)
        self._lpips_loss = self._lpips if cfg.lpips_loss_net == "vgg" else (
            (load_lpips(cfg.lpips_loss_net),) if perceptual_loss else (None,))
        self._plane_cache: Optional[Tuple[Tensor, Tensor]] = None
        self._mouth_texels: Optional[Tensor] = None
        self._code_source: Tuple[Optional[CodeSource]] = (None,)
        if cfg.compile_networks:
            # In place (Module.compile): parameter names, and so checkpoints, stay those of the eager modules.
            for module in (self.superres, self.field.density_mlp, self.field.feature_mlp):
                module.compile()

    @property
    def lpips(self) -> Optional[nn.Module]:
        net = self._lpips[0]
        return net.to(self.device) if net is not None else None

    @property
    def lpips_loss(self) -> Optional[nn.Module]:
        net = self._lpips_loss[0]
        return net.to(self.device) if net is not None else None

    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        static, bases = self.generator.static_planes, self.generator.expression_planes
        groups = {
            "encoder": list(self.encoder.parameters()) + list(self.mapping.parameters())
            + (list(self.crop_decoder.parameters()) if self.crop_decoder is not None else []),
            "triplane": [p for p in self.generator.parameters() if p is not static and p is not bases]
            + list(self.field.parameters()),
            "superres": list(self.superres.parameters()),
        }
        if static is not None:
            groups["static_planes"] = [static]
        if bases is not None:
            groups["expression_planes"] = [bases]
        proposal = list(self.renderer.sampler.parameters())
        if proposal:
            groups["proposal"] = proposal
        if self.pose_refinement is not None:
            groups["pose_refinement"] = list(self.pose_refinement.parameters())
        return groups

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = []
        every = self.renderer.sampler.update_every
        if every > 0:
            callbacks.append(TrainingCallback(where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                                              update_every_num_iters=every, func=self.update_sampler))
        if self.generator.static_planes is not None and self.config.static_planes_start_step > 0:
            callbacks.append(TrainingCallback(where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                                              update_every_num_iters=1, func=self.start_static_planes))
        if self.config.plane_tv_weight > 0 and self.config.plane_tv_end_step is not None:
            callbacks.append(TrainingCallback(where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                                              update_every_num_iters=1, func=self.end_plane_tv))
        return callbacks

    def end_plane_tv(self, step: int) -> None:
        """Drop the total-variation penalty from ``plane_tv_end_step`` on."""
        end = self.config.plane_tv_end_step
        self.plane_tv_on = end is None or step < end

    def start_static_planes(self, step: int) -> None:
        """Leave the static planes out of training until ``static_planes_start_step`` (always in outside it)."""
        self.generator.use_static_planes = step >= self.config.static_planes_start_step

    @torch.no_grad()
    def update_sampler(self, step: Optional[int] = None) -> None:
        """Show the sampler the field's density, the maximum over several training frames' codes, so what it
        keeps holds for every expression. Before the sampler's warm-up ``step`` this does nothing."""
        sampler = self.renderer.sampler
        if step is not None and step < sampler.warmup_steps:
            return
        seen = self.code_table.seen()
        if len(seen) == 0:
            return
        pick = torch.randperm(len(seen), device=seen.device)[: self.config.occupancy_num_codes]
        was_training = self.training
        self.eval()
        planes = self.triplanes(seen[pick])
        self.train(was_training)

        def max_density(points: Tensor) -> Tensor:
            xyz = self.renderer.normalise(points)[None].expand(len(planes), -1, -1)
            return self.field.density(planes, xyz)[0][..., 0].amax(dim=0)

        sampler.update(max_density)

    # ------------------------------------------------------------------------------------------
    # Codes

    def encoder_crops(self, crops: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B 3 C C"]:
        """Face crops of any side as the encoder takes them: float, ``encoder_crop_size`` square."""
        crops = crops.float()
        if crops.shape[-1] != self.config.encoder_crop_size:
            crops = F.interpolate(crops, size=self.config.encoder_crop_size, mode="area")
        return crops

    def encode(self, crops: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B D"]:
        crops = self.encoder_crops(crops)
        if self.training and self.config.encoder_noise_std > 0:
            crops = crops + torch.randn_like(crops) * self.config.encoder_noise_std
        return self.encoder(crops)

    @property
    def code_table(self) -> FrameCodeTable:
        """The stored codes (``frame_codes``) as a table: lookup by camera or time, writes per moment."""
        return FrameCodeTable(self.frame_codes, self.train_image_codes, self.num_train_frames)

    def set_code_source(self, source: Optional[CodeSource]) -> None:
        """A source asked first for the codes of camera-only renders (the viewer's expression panel).

        Held outside the module tree: the source belongs to the pipeline and has no state to save.
        """
        self._code_source = (source,)

    def triplanes(self, code: Float[Tensor, "B D"]) -> Float[Tensor, "B 3 C R R"]:
        """Expression code -> person-specific code theta -> tri-plane."""
        return self.planes_from_theta(self.mapping(code))

    def clear_plane_cache(self) -> None:
        """Forget the cached tri-plane, so the next render runs the generator (timings, precision changes)."""
        self._plane_cache = None

    def planes_from_theta(self, theta: Float[Tensor, "B T"]) -> Float[Tensor, "B 3 C R R"]:
        """Generator output; reused outside training while theta does not change (viewer, fixed expression).

        Cross-identity reenactment enters here with a theta mapped from another person's shared code.
        """
        if not self.training and self._plane_cache is not None and torch.equal(self._plane_cache[0], theta):
            return self._plane_cache[1]
        planes = self.generator(theta)
        if not self.training:
            self._plane_cache = (theta.detach().clone(), planes.detach())
        return planes

    # ------------------------------------------------------------------------------------------
    # Rendering

    def forward(self, cameras: Cameras, batch: Optional[Dict] = None) -> Dict[str, Tensor]:  # type: ignore[override]
        return self.get_outputs(cameras, batch)

    def get_outputs(self, cameras: Cameras, batch: Optional[Dict] = None) -> Dict[str, Tensor]:  # type: ignore[override]
        """Batched outputs: ``rgb`` (B, H, W, 3) at the camera's resolution and low-res maps.

        Choose each image's code, make its tri-plane, render it (in training from the image's refined
        head pose and, with patch-wise training, only a window of it).
        """
        cameras = (cameras.reshape((1,)) if cameras.shape == () else cameras).to(self.device)
        batch = _batched(batch)
        code = self.codes_for(cameras, batch)
        if self.training:
            if self.config.code_noise_std > 0:
                code = code + torch.randn_like(code) * self.config.code_noise_std * self.code_table.spread()
            if self.pose_refinement is not None and batch is not None and "image_idx" in batch:
                image_idx = torch.as_tensor(batch["image_idx"]).reshape(-1)
                self.pose_refinement.exclude(self.expression_features(batch, image_idx))
                cameras = self.pose_refinement(cameras, image_idx)
            window = self.training_window(cameras) if batch is not None and "image" in batch else None
            out = self.render_code(code, cameras, window, self.pose_detached_boxes(batch))
            if self.crop_decoder is not None:
                out["crop_reconstruction"] = self.crop_decoder(code)
            return out
        if self.config.inference_dtype == "float32":
            return self.render_code(code, cameras)
        with torch.autocast(self.device.type, dtype=getattr(torch, self.config.inference_dtype)):
            out = self.render_code(code, cameras)
        return {k: v.float() if torch.is_floating_point(v) else v for k, v in out.items()}

    def codes_for(self, cameras: Cameras, batch: Optional[Dict]) -> Float[Tensor, "B D"]:
        """Each image's expression code: encoded from its face crop when the batch has one (training,
        held-out frames; stored in the code table), else the code source's (the viewer), else the
        stored code of the frame the camera stands for."""
        if batch is not None and "encoder_crop" in batch:
            idx = torch.as_tensor(batch["code_idx"]).reshape(-1) if "code_idx" in batch else None
            return self.code_table.encode(self.encode, batch["encoder_crop"].to(self.device), idx)
        source = self._code_source[0]
        code = source.code_for(cameras, self.code_table) if source is not None else None
        return self.code_table.lookup(cameras) if code is None else code

    def expression_features(self, batch: Dict, image_idx: Tensor) -> Optional[Float[Tensor, "images F"]]:
        """Per training image, what the pose corrections are kept apart from (``pose_refinement_expression_from``),
        or None when they are free. Crops not drawn yet stand at the mean of those that have been."""
        cfg = self.config
        if cfg.pose_refinement_expression_directions == 0:
            return None
        if cfg.pose_refinement_expression_from == "codes":
            return self.frame_codes[self.train_image_codes]
        if "encoder_crop" not in batch:
            return None
        crops = self.encoder_crops(batch["encoder_crop"].to(self.device))
        idx = image_idx.to(self.device)
        self.crop_thumbnails[idx] = F.adaptive_avg_pool2d(crops, THUMBNAIL_SIDE).flatten(1).detach()
        self.crop_seen[idx] = True
        seen = self.crop_seen[:, None]
        return torch.where(seen, self.crop_thumbnails, self.crop_thumbnails[self.crop_seen].mean(dim=0))

    def pose_detached_boxes(self, batch: Optional[Dict]) -> Optional[Float[Tensor, "B K 4"]]:
        """Boxes (fractions of the frame) whose pixels do not move the pose corrections (``pose_refinement_from``)."""
        parts = self.config.pose_refinement_from
        if self.pose_refinement is None or parts == "frame" or batch is None or "region_boxes" not in batch:
            return None
        boxes = batch["region_boxes"].to(self.device).float().reshape(-1, len(REGIONS), 4)
        return expression_boxes(boxes, parts.removeprefix("outside_"))

    def low_res_size(self, height: int, width: int) -> Tuple[int, int]:
        scale = self.config.sr_scale
        return max(2 * round(height / scale / 2), 2), max(2 * round(width / scale / 2), 2)

    def training_window(self, cameras: Cameras) -> Optional[Tuple[int, int, int]]:
        """A random (top, left, size) window of the low-res grid for patch-wise training, or None."""
        size = self.config.train_patch_size
        height, width = int(cameras.height[0]), int(cameras.width[0])
        low_h, low_w = self.low_res_size(height, width)
        if size is None or size >= min(low_h, low_w) or (low_h * self.config.sr_scale, low_w * self.config.sr_scale) \
                != (height, width):
            return None
        top, left = (int(torch.randint(0, n - size + 1, ())) for n in (low_h, low_w))
        return top, left, size

    def render_code(self, code: Float[Tensor, "B D"], cameras: Cameras,
                    window: Optional[Tuple[int, int, int]] = None,
                    pose_detached: Optional[Float[Tensor, "B K 4"]] = None) -> Dict[str, Tensor]:
        """``render`` of the tri-plane and theta of expression codes."""
        theta = self.mapping(code)
        penalised = self.training and self.config.plane_tv_weight > 0 and self.plane_tv_on
        planes, offset = self.generator.planes_and_offset(theta) if penalised else (self.planes_from_theta(theta), None)
        out = self.render(planes, cameras, window, theta, pose_detached)
        if penalised:
            smoothed, index = self.smoothed_planes(planes, offset)
            spared = self.mouth_texels(planes.shape[-1])[index] if self.config.plane_tv_spare_mouth else None
            out["plane_tv"] = plane_total_variation(smoothed, self.config.plane_tv_norm, spared)
        if self.training and self.config.density_symmetry_weight > 0:
            out["density_asymmetry"] = self.density_asymmetry(planes)
        return out

    def density_asymmetry(self, planes: Float[Tensor, "B 3 C R R"]) -> Float[Tensor, ""]:
        """Mean opacity difference between random points of the box and their mirror images across canonical
        x = 0 (``density_symmetry_weight``), opacity taken over a step of 1/64 of the box's diagonal."""
        lo, hi = self.renderer.aabb[0], self.renderer.aabb[1]
        points = lo + torch.rand(len(planes), self.config.density_symmetry_points, 3, device=lo.device) * (hi - lo)
        mirrored = points * torch.tensor([-1.0, 1.0, 1.0], device=lo.device)
        density, _ = self.field.density(planes, self.renderer.normalise(torch.cat([points, mirrored], dim=1)))
        return mirror_opacity_gap(density, float((hi - lo).norm()) / 64)

    def smoothed_planes(self, planes: Float[Tensor, "B 3 C R R"], offset: Optional[Float[Tensor, "B 3 C R R"]]) \
            -> Tuple[Float[Tensor, "_ P C R R"], List[int]]:
        """The planes the total-variation penalty reads (``plane_tv_target``), and which of the three they are.

        ``offset`` is the expression planes' part of ``planes`` (``TriplaneGenerator.planes_and_offset``).
        """
        target = self.config.plane_tv_target
        static = self.generator.static_planes
        if target == "static" and static is not None:
            return static, [0, 1, 2]
        if target == "no_expression_planes":
            return (planes if offset is None else planes - offset), [0, 1, 2]
        if target == "depth_planes":
            index = [p for p, axes in enumerate(PLANE_AXES) if DEPTH_AXIS in axes]
            return planes[:, index], index
        return planes, [0, 1, 2]

    def mouth_texels(self, resolution: int) -> Float[Tensor, "3 R R"]:
        """1 at each plane's texels over the canonical mouth box (``plane_tv_spare_mouth``); built once per size."""
        cached = self._mouth_texels
        if cached is None or cached.shape[-1] != resolution or cached.device != self.device:
            lo, hi = (self.renderer.normalise(torch.tensor(corner, device=self.device))
                      for corner in canonical_region_box("mouth"))
            cached = self._mouth_texels = plane_texels_in_box(lo, hi, resolution)
        return cached

    def render(self, planes: Float[Tensor, "B 3 C R R"], cameras: Cameras,
               window: Optional[Tuple[int, int, int]] = None,
               theta: Optional[Float[Tensor, "B T"]] = None,
               pose_detached: Optional[Float[Tensor, "B K 4"]] = None) -> Dict[str, Tensor]:
        """Volume-render the low-res feature map, then super-resolve to the camera's resolution.

        With a ``window`` (top, left, size in low-res pixels) only that patch is rendered and
        super-resolved; the outputs carry it as ``window`` so the losses crop their targets to match.
        ``theta``, the person-specific code the planes were made from, is needed when the
        super-resolution head is steered by it (``code_to_sr``) and ignored otherwise. Rays inside the
        ``pose_detached`` boxes (fractions of the frame) do not pass gradient to the cameras' poses.
        """
        if self.config.code_to_sr and theta is None:
            raise ValueError("this avatar's super-resolution is steered by theta (code_to_sr): "
                             "render(planes, cameras, theta=...) needs the theta its planes were made from")
        height, width = int(cameras.height[0]), int(cameras.width[0])
        low_h, low_w = self.low_res_size(height, width)
        low_cams = resized_cameras(cameras, low_h, low_w)
        detached = None if pose_detached is None else union_mask(pose_detached, low_h, low_w)
        if window is not None:
            top, left, size = window
            low_cams = cropped_cameras(low_cams, top, left, size)
            height = width = size * self.config.sr_scale
            detached = None if detached is None else detached[:, top:top + size, left:left + size]
        out = self.renderer(self.field, planes, low_cams, self.background,
                            self.config.density_noise_std if self.training else 0.0, detached)
        rgb = self.superres(out["features"], theta if self.config.code_to_sr else None)
        if rgb.shape[-2:] != (height, width):
            rgb = F.interpolate(rgb, size=(height, width), mode="bilinear", align_corners=False)
        return {
            **({"window": torch.tensor(window)} if window is not None else {}),
            "rgb": rgb.permute(0, 2, 3, 1),
            "rgb_low": out["features"][:, :3].permute(0, 2, 3, 1),
            "accumulation_low": out["accumulation"],
            "depth_low": out["depth"],
            "field_evals_per_ray": out["field_evals_per_ray"],
            **({"sampler_loss": out["sampler_loss"]} if "sampler_loss" in out else {}),
        }

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box=None, batch: Optional[Dict] = None) -> Dict[str, Tensor]:
        """One image at the camera's resolution, with depth and accumulation for the viewer."""
        out = self.get_outputs(camera[0:1] if camera.shape != () else camera, batch)
        height, width = out["rgb"].shape[1:3]
        full = {}
        for key in ("accumulation_low", "depth_low"):
            full[key.replace("_low", "")] = F.interpolate(out[key].permute(0, 3, 1, 2), size=(height, width),
                                                          mode="bilinear", align_corners=False).permute(0, 2, 3, 1)[0]
        return {"rgb": out["rgb"][0].clamp(0.0, 1.0), "rgb_low": out["rgb_low"][0], **full}

    # ------------------------------------------------------------------------------------------
    # Losses and metrics

    def _targets(self, outputs: Dict[str, Tensor], batch: Dict) -> Tuple[Tensor, Tensor, Tensor]:
        return targets(outputs, batch, self.low_res_size(*batch["image"].shape[-3:-1]), self.config.sr_scale)

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        image, _, _ = self._targets(outputs, batch)
        metrics = {"psnr": psnr_db(outputs["rgb"].detach(), image),
                   "field_evals_per_ray": outputs["field_evals_per_ray"]}
        metrics.update({k: torch.tensor(v) for k, v in self.renderer.sampler.metrics().items()})
        return metrics

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        cfg = self.config
        image, image_low, mask_low = self._targets(outputs, batch)
        losses = {
            "rgb_loss": cfg.rgb_loss_weight * (outputs["rgb"] - image).abs().mean(),
            "low_res_loss": cfg.low_res_loss_weight * (outputs["rgb_low"] - image_low).abs().mean(),
            "mask_loss": cfg.mask_loss_weight * F.mse_loss(outputs["accumulation_low"], mask_low),
        }
        weights = cfg.region_loss_weights
        losses.update(region_losses(outputs, batch, image, image_low, weights,
                                    self.low_res_size(*batch["image"].shape[-3:-1]), cfg.sr_scale))
        if "crop_reconstruction" in outputs:
            losses["code_reconstruction_loss"] = cfg.code_reconstruction_weight * crop_reconstruction_loss(
                outputs["crop_reconstruction"], batch["encoder_crop"], weights)
        if self.pose_refinement is not None and self.training and "image_idx" in batch:
            losses["pose_refinement_loss"] = cfg.pose_refinement_weight * self.pose_refinement.regularizer(
                torch.as_tensor(batch["image_idx"]).reshape(-1))
        if "plane_tv" in outputs:
            losses["plane_tv_loss"] = cfg.plane_tv_weight * outputs["plane_tv"]
        if "density_asymmetry" in outputs:
            losses["density_symmetry_loss"] = cfg.density_symmetry_weight * outputs["density_asymmetry"]
        if "sampler_loss" in outputs:
            losses["proposal_loss"] = cfg.proposal_loss_weight * outputs["sampler_loss"]
        if cfg.lpips_loss_weight > 0 and self.lpips_loss is not None:
            losses["lpips_loss"] = cfg.lpips_loss_weight * self.lpips_loss(
                outputs["rgb"].permute(0, 3, 1, 2), image.permute(0, 3, 1, 2)).mean()
        if cfg.region_lpips_weight > 0 and self.lpips_loss is not None and "region_boxes" in batch \
                and "window" not in outputs:
            boxes = batch["region_boxes"].to(image.device).float().reshape(len(image), len(REGIONS), 4)
            net = self.lpips_loss
            crops = [(REGIONS.index("mouth"), (48, 64)), (REGIONS.index("eyes"), (32, 64))]
            losses["region_lpips_loss"] = cfg.region_lpips_weight * sum(
                net(region_crops(outputs["rgb"], boxes, r, size), region_crops(image, boxes, r, size)).mean()
                for r, size in crops)
        return losses

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        rgb = outputs["rgb"]
        image = as_float_image(batch["image"].to(rgb.device))
        pred, gt = rgb.permute(2, 0, 1)[None], image.permute(2, 0, 1)[None]
        metrics = ImageMetrics(lpips_nets=())(rgb, image)  # PSNR and SSIM as every benchmark computes them
        if self.config.eval_lpips and self.lpips is not None:
            metrics["lpips"] = float(self.lpips(pred, gt).mean())
        images = {
            "img": torch.cat([image, rgb], dim=1),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        return metrics, images


def _batched(batch: Optional[Dict]) -> Optional[Dict]:
    """Single-frame items (eval, ns-render) get a leading batch dimension like training batches."""
    if batch is None or "encoder_crop" not in batch or batch["encoder_crop"].ndim == 4:
        return batch
    out = dict(batch)
    out["encoder_crop"] = batch["encoder_crop"][None]
    if "code_idx" in batch:
        out["code_idx"] = torch.as_tensor(batch["code_idx"]).reshape(1)
    return out
