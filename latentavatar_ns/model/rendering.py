"""Volume rendering of the tri-plane field in canonical head space, one whole image per camera."""

from __future__ import annotations

from typing import Dict

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.model_components.ray_samplers import UniformSampler
from nerfstudio.model_components.scene_colliders import AABBBoxCollider
from torch import Tensor, nn

from latentavatar_ns.model.field import TriplaneField


def camera_rays(cameras: Cameras) -> RayBundle:
    """Rays of every pixel of every camera, flattened to (B*H*W,) in camera-major order."""
    bundles = [cameras[i : i + 1].generate_rays(camera_indices=0, keep_shape=True) for i in range(cameras.shape[0])]
    return RayBundle(
        origins=torch.cat([b.origins.reshape(-1, 3) for b in bundles]),
        directions=torch.cat([b.directions.reshape(-1, 3) for b in bundles]),
        pixel_area=torch.cat([b.pixel_area.reshape(-1, 1) for b in bundles]),
        camera_indices=torch.cat([torch.full_like(b.pixel_area.reshape(-1, 1), i, dtype=torch.long)
                                  for i, b in enumerate(bundles)]),
    )


class VolumeRenderer(nn.Module):
    """Uniform samples inside the canonical box (the paper's sampler), composited over real samples.

    The background is composited as ``(1 - accumulation) * background`` so that the accumulation
    is the rendered matte, unlike the official code whose background sample makes it ~1 everywhere.
    """

    def __init__(self, scene_box: SceneBox, num_samples: int = 64):
        super().__init__()
        self.collider = AABBBoxCollider(scene_box)
        self.sampler = UniformSampler(num_samples=num_samples)
        self.register_buffer("aabb", scene_box.aabb.clone().float(), persistent=False)

    def normalise(self, positions: Tensor) -> Tensor:
        """Canonical positions to [-1, 1]^3 over the box."""
        lo, hi = self.aabb[0], self.aabb[1]
        return (positions - lo) / (hi - lo) * 2.0 - 1.0

    def sample(self, rays: RayBundle) -> RaySamples:
        return self.sampler(self.collider(rays))

    def forward(
        self,
        field: TriplaneField,
        planes: Float[Tensor, "B 3 C R R"],
        cameras: Cameras,
        background: Float[Tensor, "3"],
        density_noise: float = 0.0,
    ) -> Dict[str, Tensor]:
        b = planes.shape[0]
        h, w = int(cameras.height[0]), int(cameras.width[0])
        samples = self.sample(camera_rays(cameras))
        s = samples.shape[-1]
        xyz = self.normalise(samples.frustums.get_positions()).reshape(b, h * w * s, 3)
        dirs = samples.frustums.directions.reshape(b, h * w * s, 3)
        density, hidden = field.density(planes, xyz, density_noise)
        feats = field.features(hidden, dirs)
        weights = samples.get_weights(density.reshape(b * h * w, s, 1))  # (BHW, S, 1)
        acc = weights.sum(dim=1)  # (BHW, 1)
        feature_map = (weights * feats.reshape(b * h * w, s, -1)).sum(dim=1)
        rgb = feature_map[:, :3] + (1.0 - acc) * background.to(feature_map)
        feature_map = torch.cat([rgb, feature_map[:, 3:]], dim=-1)
        mids = (samples.frustums.starts + samples.frustums.ends) / 2.0
        depth = (weights * mids).sum(dim=1) / acc.clamp_min(1e-6)
        return {
            "features": feature_map.reshape(b, h, w, -1).permute(0, 3, 1, 2),  # (B, F, h, w)
            "accumulation": acc.reshape(b, h, w, 1),
            "depth": depth.reshape(b, h, w, 1),
            "samples_per_ray": torch.tensor(float(s)),
        }
