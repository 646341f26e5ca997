"""Tri-plane field: bilinear features from three axis-aligned planes, then density and feature MLPs."""

from __future__ import annotations

from typing import Literal, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import NeRFEncoding
from torch import Tensor, nn

# Plane p is indexed by these two coordinates: (y, z), (x, z), (x, y), as in the official release.
PLANE_AXES = ((1, 2), (0, 2), (0, 1))
DEPTH_AXIS = 2
"""The canonical axis toward the camera: the face looks along +z."""


def plane_texels_in_box(lo: Float[Tensor, "3"], hi: Float[Tensor, "3"], resolution: int) -> Float[Tensor, "3 R R"]:
    """1 at the texels (of each plane, indexed as :func:`sample_triplane` reads them) whose centre lies over the
    box (lo, hi), given in the field's [-1, 1]^3 coordinates; 0 elsewhere."""
    centres = (2 * torch.arange(resolution, dtype=torch.float32, device=lo.device) + 1) / resolution - 1
    inside = [(centres >= lo[a]) & (centres <= hi[a]) for a in range(3)]
    # Plane (u, v): u runs along the last (width) axis, v along the rows, as in grid_sample.
    return torch.stack([(inside[v][:, None] & inside[u][None, :]).float() for u, v in PLANE_AXES])


def sample_triplane(planes: Float[Tensor, "B 3 C R R"], xyz: Float[Tensor, "B N 3"]) -> Float[Tensor, "B N C"]:
    """Sum of the three planes' bilinear samples at points normalised to [-1, 1]^3."""
    out: Optional[Tensor] = None
    for p, (u, v) in enumerate(PLANE_AXES):
        grid = torch.stack([xyz[..., u], xyz[..., v]], dim=-1)[:, :, None, :]  # (B, N, 1, 2)
        sampled = F.grid_sample(planes[:, p], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0]
        # In place: grid_sample's backward needs neither output, and each is (B, C, N) floats.
        out = sampled if out is None else out.add_(sampled)  # (B, C, N)
    assert out is not None
    return out.transpose(1, 2)


class FeatureMLP(nn.Sequential):
    """``Linear([plane feature, encoded view direction]) -> LeakyReLU -> Linear``, first layer applied in two parts.

    A ray's samples share one view direction, so the direction's part of the first layer (its last
    columns, plus the bias) is a per-ray ``direction_code`` that the renderer computes once per ray
    and adds to every sample's plane part: no per-sample encoding or concatenation. The parameters
    are those of the plain ``nn.Sequential`` (same names, same checkpoints).
    """

    def __init__(self, plane_channels: int, direction_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(nn.Linear(plane_channels + direction_dim, hidden_dim), nn.LeakyReLU(0.2, inplace=True),
                         nn.Linear(hidden_dim, out_dim))
        self.plane_channels = plane_channels

    def direction_code(self, encoded: Float[Tensor, "*batch D"]) -> Float[Tensor, "*batch H"]:
        first = self[0]
        return F.linear(encoded, first.weight[:, self.plane_channels :], first.bias)  # type: ignore[index, arg-type]

    def forward(self, h: Float[Tensor, "*batch C"],  # type: ignore[override]
                direction_code: Float[Tensor, "*#batch H"]) -> Float[Tensor, "*batch F"]:
        x = F.linear(h, self[0].weight[:, : self.plane_channels]).add_(direction_code)  # type: ignore[index]
        return self[2](self[1](x))


def resolve_view_dependence(setting: Union[bool, Literal["auto"]], image_codes: Tensor) -> bool:
    """Whether the field sees the view direction. ``"auto"``: when some training moment is seen by more
    than one camera (``image_codes`` holds each training image's code index), since only then is the
    direction seen apart from the head's pose, so the feature MLP can learn view-dependent appearance
    from it rather than tie the expression to the pose."""
    if setting == "auto":
        return bool(torch.unique(image_codes).numel() < image_codes.numel())
    return bool(setting)


class TriplaneField(nn.Module):
    """Density from the plane feature alone; colour/features also see the view direction, unless
    ``view_dependent`` is off (then the direction's share of the feature MLP is its first layer's bias).

    Channels 0-2 of the feature output are the low-resolution RGB (sigmoid); the rest feed the
    super-resolution head. No positional encoding of xyz: the planes carry all spatial detail.
    """

    def __init__(self, plane_channels: int = 32, hidden_dim: int = 128, feature_dim: int = 32,
                 direction_frequencies: int = 4, view_dependent: bool = True):
        super().__init__()
        self.view_dependent = view_dependent
        self.direction_encoding = NeRFEncoding(3, num_frequencies=direction_frequencies, min_freq_exp=0.0,
                                               max_freq_exp=direction_frequencies - 1, include_input=True)
        direction_dim = self.direction_encoding.get_out_dim() if view_dependent else 0
        # In-place activations: at a 512^2 render each hidden layer is ~1M samples x 128 floats.
        self.density_mlp = nn.Sequential(nn.Linear(plane_channels, hidden_dim), nn.LeakyReLU(0.2, inplace=True),
                                         nn.Linear(hidden_dim, 1))
        self.feature_mlp = FeatureMLP(plane_channels, direction_dim, hidden_dim, feature_dim)
        self.feature_dim = feature_dim

    def density(self, planes: Tensor, xyz: Float[Tensor, "B N 3"], noise_std: float = 0.0) -> Tuple[Tensor, Tensor]:
        """Density (B, N, 1), zero outside the box, and the plane feature for :meth:`features`."""
        h = sample_triplane(planes, xyz)
        raw = self.density_mlp(h)
        if noise_std > 0:
            raw = raw + torch.randn_like(raw) * noise_std
        inside = (xyz.abs() <= 1.0).all(dim=-1, keepdim=True)
        return trunc_exp(raw) * inside, h

    def direction_code(self, directions: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch H"]:
        """The view direction's share of the feature MLP: compute it once per ray, not per sample."""
        if not self.view_dependent:  # the first layer's bias alone
            return self.feature_mlp.direction_code(directions[..., :0])
        return self.feature_mlp.direction_code(self.direction_encoding(directions))

    def features(self, h: Float[Tensor, "*batch C"],
                 direction_code: Float[Tensor, "*#batch H"]) -> Float[Tensor, "*batch F"]:
        """Features of samples with plane feature ``h``; ``direction_code`` broadcasts against them (one per ray)."""
        out = self.feature_mlp(h, direction_code)
        return torch.cat([torch.sigmoid(out[..., :3]), out[..., 3:]], dim=-1)
