"""Tri-plane field: bilinear features from three axis-aligned planes, then density and feature MLPs."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import NeRFEncoding
from torch import Tensor, nn

# Plane p is indexed by these two coordinates: (y, z), (x, z), (x, y), as in the official release.
PLANE_AXES = ((1, 2), (0, 2), (0, 1))


def sample_triplane(planes: Float[Tensor, "B 3 C R R"], xyz: Float[Tensor, "B N 3"]) -> Float[Tensor, "B N C"]:
    """Sum of the three planes' bilinear samples at points normalised to [-1, 1]^3."""
    b, _, c, r, _ = planes.shape
    out = 0.0
    for p, (u, v) in enumerate(PLANE_AXES):
        grid = torch.stack([xyz[..., u], xyz[..., v]], dim=-1)[:, :, None, :]  # (B, N, 1, 2)
        sampled = F.grid_sample(planes[:, p], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + sampled[..., 0]  # (B, C, N)
    return out.transpose(1, 2)


class TriplaneField(nn.Module):
    """Density from the plane feature alone; colour/features also see the view direction.

    Channels 0-2 of the feature output are the low-resolution RGB (sigmoid); the rest feed the
    super-resolution head. No positional encoding of xyz: the planes carry all spatial detail.
    """

    def __init__(self, plane_channels: int = 32, hidden_dim: int = 128, feature_dim: int = 32,
                 direction_frequencies: int = 4):
        super().__init__()
        self.direction_encoding = NeRFEncoding(3, num_frequencies=direction_frequencies, min_freq_exp=0.0,
                                               max_freq_exp=direction_frequencies - 1, include_input=True)
        self.density_mlp = nn.Sequential(nn.Linear(plane_channels, hidden_dim), nn.LeakyReLU(0.2), nn.Linear(hidden_dim, 1))
        self.feature_mlp = nn.Sequential(
            nn.Linear(plane_channels + self.direction_encoding.get_out_dim(), hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, feature_dim),
        )
        self.feature_dim = feature_dim

    def density(self, planes: Tensor, xyz: Float[Tensor, "B N 3"], noise_std: float = 0.0) -> Tuple[Tensor, Tensor]:
        """Density (B, N, 1), zero outside the box, and the plane feature for :meth:`features`."""
        h = sample_triplane(planes, xyz)
        raw = self.density_mlp(h)
        if noise_std > 0:
            raw = raw + torch.randn_like(raw) * noise_std
        inside = (xyz.abs() <= 1.0).all(dim=-1, keepdim=True)
        return trunc_exp(raw) * inside, h

    def features(self, h: Tensor, directions: Float[Tensor, "B N 3"]) -> Float[Tensor, "B N F"]:
        out = self.feature_mlp(torch.cat([h, self.direction_encoding(directions)], dim=-1))
        return torch.cat([torch.sigmoid(out[..., :3]), out[..., 3:]], dim=-1)
