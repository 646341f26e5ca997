"""Volume rendering of the tri-plane field in canonical head space, one whole image per camera."""

from __future__ import annotations

import copy

from typing import Dict, List, Optional

import torch
from jaxtyping import Bool, Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.model_components.scene_colliders import AABBBoxCollider
from nerfstudio.data.scene_box import SceneBox
from torch import Tensor, nn

from latentavatar_ns.model.field import TriplaneField
from latentavatar_ns.model.sampling import RaySampler, Samples


def camera_rays(cameras: Cameras, pose_detached: Optional[Bool[Tensor, "B H W"]] = None) -> RayBundle:
    """Rays of every pixel of every camera, flattened to (B*H*W,) in camera-major order.

    Pixels set in ``pose_detached`` get the same rays with the cameras' gradient cut: their error then
    trains what they see but not where the camera stands (``pose_refinement_from``).
    """
    bundles = [cameras[i : i + 1].generate_rays(camera_indices=0, keep_shape=True) for i in range(cameras.shape[0])]
    origins = torch.cat([b.origins.reshape(-1, 3) for b in bundles])
    directions = torch.cat([b.directions.reshape(-1, 3) for b in bundles])
    if pose_detached is not None:
        cut = pose_detached.reshape(-1, 1).to(origins.device)
        origins = torch.where(cut, origins.detach(), origins)
        directions = torch.where(cut, directions.detach(), directions)
    return RayBundle(
        origins=origins,
        directions=directions,
        pixel_area=torch.cat([b.pixel_area.reshape(-1, 1) for b in bundles]),
        camera_indices=torch.cat([torch.full_like(b.pixel_area.reshape(-1, 1), i, dtype=torch.long)
                                  for i, b in enumerate(bundles)]),
    )


class VolumeRenderer(nn.Module):
    """Samples rays with a sampler (see ``sampling.py``), evaluates the field, composites over real samples.

    The background is composited as ``(1 - accumulation) * background`` so that the accumulation
    is the rendered matte, unlike the official code whose background sample makes it ~1 everywhere.
    """

    aabb: Tensor

    def __init__(self, scene_box: SceneBox, sampler: RaySampler, early_stop_transmittance: float = 1e-3):
        super().__init__()
        self.collider = AABBBoxCollider(scene_box)
        self.sampler = sampler
        self.early_stop_transmittance = early_stop_transmittance
        self.register_buffer("aabb", scene_box.aabb.clone().float(), persistent=False)

    def normalise(self, positions: Tensor) -> Tensor:
        """Canonical positions to [-1, 1]^3 over the box."""
        lo, hi = self.aabb[0], self.aabb[1]
        return (positions - lo) / (hi - lo) * 2.0 - 1.0

    def sample(self, rays: RayBundle) -> Samples:
        return self.sampler(self.collider(rays))

    def _evaluate(self, field: TriplaneField, planes: Tensor, samples: Samples, density_noise: float, b: int):
        """Density (rays, S, 1) and features (rays, S, F) with zeros wherever the field is not evaluated."""
        rs = samples.ray_samples
        n, s = rs.shape
        per_image = n // b
        xyz = self.normalise(rs.frustums.get_positions()).reshape(b, per_image, s, 3)
        # A ray's samples share its direction: the field's direction term is computed once per ray.
        codes = field.direction_code(rs.frustums.directions[:, 0].reshape(b, per_image, 3))
        evaluate = samples.evaluate
        if evaluate is None:
            evaluate = torch.ones(n, s, dtype=torch.bool, device=xyz.device)
        mask = evaluate.reshape(b, per_image, s)
        chunk = samples.chunk or s
        densities: List[Tensor] = []
        features: List[Tensor] = []
        evaluated = torch.zeros((), device=xyz.device)
        for start in range(0, s, chunk):
            sl = slice(start, min(start + chunk, s))
            chunk_mask = mask[:, :, sl]
            if densities:  # early ray termination: skip rays already opaque
                with torch.no_grad():
                    so_far = torch.cat(densities, dim=2)[..., 0]
                    deltas = rs.deltas.reshape(b, per_image, s)[:, :, : so_far.shape[2]]  # type: ignore[union-attr]
                    alive = torch.exp(-(so_far * deltas).sum(dim=2)) > self.early_stop_transmittance
                chunk_mask = chunk_mask & alive[:, :, None]
            d_chunk = xyz.new_zeros(b, per_image, sl.stop - sl.start, 1)
            f_chunk = xyz.new_zeros(b, per_image, sl.stop - sl.start, field.feature_dim)
            for i in range(b):
                sel = chunk_mask[i]
                if chunk == s and samples.evaluate is None:  # dense: no gather/scatter
                    dens, hidden = field.density(planes[i : i + 1], xyz[i : i + 1, :, sl].reshape(1, -1, 3),
                                                 density_noise)
                    feat = field.features(hidden.reshape(per_image, -1, hidden.shape[-1]), codes[i][:, None])
                    d_chunk[i] = dens.reshape(per_image, -1, 1)
                    f_chunk[i] = feat.reshape(per_image, -1, field.feature_dim)
                    continue
                if not bool(sel.any()):
                    continue
                dens, hidden = field.density(planes[i : i + 1], xyz[i, :, sl][sel][None], density_noise)
                feat = field.features(hidden[0], codes[i][:, None].expand(-1, sel.shape[1], -1)[sel])
                d_chunk[i][sel] = dens[0]
                f_chunk[i][sel] = feat
            evaluated = evaluated + chunk_mask.sum()
            densities.append(d_chunk)
            features.append(f_chunk)
        density = torch.cat(densities, dim=2).reshape(n, s, 1)
        feats = torch.cat(features, dim=2).reshape(n, s, -1)
        return density, feats, evaluated

    def weights(self, field: TriplaneField, planes: Tensor, cameras: Cameras, density_noise: float = 0.0,
                pose_detached: Optional[Bool[Tensor, "B H W"]] = None):
        """Samples of every pixel's ray, their compositing weights (rays, S, 1), features and evaluation count."""
        samples = self.sample(camera_rays(cameras, pose_detached))
        density, feats, evaluated = self._evaluate(field, planes, samples, density_noise, planes.shape[0])
        return samples, samples.ray_samples.get_weights(density), feats, evaluated

    def forward(
        self,
        field: TriplaneField,
        planes: Float[Tensor, "B 3 C R R"],
        cameras: Cameras,
        background: Float[Tensor, "3"],
        density_noise: float = 0.0,
        pose_detached: Optional[Bool[Tensor, "B H W"]] = None,
    ) -> Dict[str, Tensor]:
        b = planes.shape[0]
        h, w = int(cameras.height[0]), int(cameras.width[0])
        samples, weights, feats, evaluated = self.weights(field, planes, cameras, density_noise, pose_detached)
        acc = weights.sum(dim=1)  # (BHW, 1)
        feature_map = (weights * feats).sum(dim=1)
        rgb = feature_map[:, :3] + (1.0 - acc) * background.to(feature_map)
        feature_map = torch.cat([rgb, feature_map[:, 3:]], dim=-1)
        frustums = samples.ray_samples.frustums
        depth = (weights * (frustums.starts + frustums.ends) / 2.0).sum(dim=1) / acc.clamp_min(1e-6)
        out = {
            "features": feature_map.reshape(b, h, w, -1).permute(0, 3, 1, 2),  # (B, F, h, w)
            "accumulation": acc.reshape(b, h, w, 1),
            "depth": depth.reshape(b, h, w, 1),
            "field_evals_per_ray": evaluated.float() / (b * h * w),
        }
        sampler_loss = self.sampler.loss(samples, weights)
        if sampler_loss is not None:
            out["sampler_loss"] = sampler_loss
        return out


def resized_cameras(cameras: Cameras, height: int, width: int) -> Cameras:
    """A copy of the cameras rendering the same view at another pixel size."""
    out = copy.copy(cameras)  # fields are replaced, never changed in place (and may carry gradients)
    sx, sy = width / out.width.float(), height / out.height.float()
    out.fx, out.cx = out.fx * sx, out.cx * sx
    out.fy, out.cy = out.fy * sy, out.cy * sy
    out.width = torch.full_like(out.width, width)
    out.height = torch.full_like(out.height, height)
    return out


def cropped_cameras(cameras: Cameras, top: int, left: int, size: int) -> Cameras:
    """A copy of the cameras seeing only a size x size window of their pixel grid (rays unchanged)."""
    out = copy.copy(cameras)
    out.cx, out.cy = out.cx - left, out.cy - top
    out.width = torch.full_like(out.width, size)
    out.height = torch.full_like(out.height, size)
    return out
