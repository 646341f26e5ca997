"""Per-frame head-pose refinement: a learned rigid correction of each training image's head pose.

A monocular tracker's head pose is never exact. Without a place of its own for the error, the
expression code is the only per-frame input left to explain a misplaced head, and it learns to
(the silhouette then depends on the code). This module gives each training image a small rigid
motion of canonical head space, learned with the avatar, so pose error goes there instead, and
fits the same correction to a single image at test time (``fit_head_pose``).
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Optional

import torch
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.lie_groups import exp_map_SO3xR3
from torch import Tensor, nn


class HeadPoseRefinement(nn.Module):
    """``num_images`` corrections (translation, axis-angle rotation), each starting at the identity.

    The correction rotates a frame's camera about the canonical origin (the head) and shifts it, which
    is the same as moving the head the other way: the camera stays where it is in the frame's video.
    ``centred`` removes the corrections' mean before use, so that they only move frames against one
    another: a motion shared by every frame is the avatar's own placement, which the stored poses fix.
    ``expression_directions`` keeps the corrections, taken over the images, orthogonal to that many main
    directions of per-image expression features (``exclude``): a correction that rises and falls with an
    expression is that expression drawn as a head motion, which the code should carry.
    """

    excluded: Tensor

    def __init__(self, num_images: int, centred: bool = False, expression_directions: int = 0):
        super().__init__()
        self.correction = nn.Parameter(torch.zeros(num_images, 6))
        self.centred = centred
        if expression_directions > 0:  # orthonormal columns over the images; zeros exclude nothing
            self.register_buffer("excluded", torch.zeros(num_images, expression_directions))

    def exclude(self, features: Optional[Float[Tensor, "images D"]]) -> None:
        """Set the directions the corrections are kept orthogonal to: the ``expression_directions`` main
        directions (left singular vectors, over the images) of the images' features less their mean."""
        if not hasattr(self, "excluded") or features is None:
            return
        features = features.detach().to(self.correction)
        u, s, _ = torch.linalg.svd(features - features.mean(dim=0), full_matrices=False)
        k = self.excluded.shape[1]
        kept = (s[:k] > 1e-4 * s[:1].clamp_min(1e-12)).to(u)  # features still all alike exclude nothing
        self.excluded = u[:, :k] * kept

    def corrections(self, image_idx: Int[Tensor, " B"]) -> Float[Tensor, "B 6"]:
        """The corrections in use for these images: less the mean over all images when ``centred``, less
        their part along the excluded expression directions when there are any."""
        used: Tensor = self.correction
        if self.centred:
            used = used - used.mean(dim=0)
        if hasattr(self, "excluded"):
            used = used - self.excluded @ (self.excluded.T @ used)
        return used[image_idx.to(self.correction.device)]

    def forward(self, cameras: Cameras, image_idx: Int[Tensor, " B"]) -> Cameras:
        """A copy of the (canonical-space) training cameras with their images' corrections applied."""
        motion = exp_map_SO3xR3(self.corrections(image_idx)).to(cameras.camera_to_worlds)
        c2w = cameras.camera_to_worlds  # (B, 3, 4)
        rotation, translation = motion[:, :, :3], motion[:, :, 3:]
        refined = torch.cat([rotation @ c2w[:, :, :3], rotation @ c2w[:, :, 3:] + translation], dim=-1)
        out = copy.copy(cameras)
        out.camera_to_worlds = refined
        return out

    def regularizer(self, image_idx: Int[Tensor, " B"]) -> Tensor:
        """Mean squared size of the corrections in use: keeps frames without error where the tracker put them."""
        return self.corrections(image_idx).pow(2).sum(dim=-1).mean()


def fit_head_pose(render: Callable[[Cameras], Dict[str, Tensor]], cameras: Cameras,
                  image: Float[Tensor, "H W 3"], steps: int = 120, lr: float = 3e-3) -> Cameras:
    """Test-time refinement: the rigid head-pose correction under which a fixed avatar best explains ``image``.

    ``render`` maps one camera to the avatar's outputs (its ``rgb`` at the image's resolution); only the
    correction is optimised (L1 on the image), so the avatar's weights and codes stay as they are. A frame
    whose tracked pose is off by the tracker's error is then seen where its head really is, which is how
    held-out and driving frames are aligned before they are scored. At this step size a tracker-sized error
    (a few degrees, a few hundredths of the head) takes about a hundred steps to settle; fewer leave part of
    it in place.
    """
    refinement = HeadPoseRefinement(1).to(image.device)
    optimizer = torch.optim.Adam(refinement.parameters(), lr=lr)
    index = torch.zeros(1, dtype=torch.long)
    target = image[None, ..., :3]
    for _ in range(steps):
        with torch.enable_grad():
            loss = (render(refinement(cameras, index))["rgb"] - target).abs().mean()
            (refinement.correction.grad,) = torch.autograd.grad(loss, [refinement.correction])
        optimizer.step()
    with torch.no_grad():
        return refinement(cameras, index)
