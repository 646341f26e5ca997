"""Where along each ray the tri-plane field is evaluated.

Every sample costs a tri-plane lookup and two MLPs, and with the paper's 64 uniform samples most
of them land in empty space. Three strategies share one interface:

- ``uniform``: the paper's samples, evenly spaced inside the canonical box;
- ``proposal``: a small expression-independent hash-grid density (nerfacto-style proposal
  network, trained with the interlevel loss) places a few samples where the head can be;
- ``occupancy``: a binary grid over the box, kept conservative over many expressions, culls
  candidate samples in empty cells; marching stops once a ray is opaque (early termination).

Each is a ``RaySampler``, chosen by name through ``SAMPLERS``. A sampler returns dense (rays,
samples) ray samples plus a mask of the samples the main field must evaluate; the renderer fills
the rest with zero density.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.fields.density_fields import HashMLPDensityField
from nerfstudio.model_components.losses import interlevel_loss
from nerfstudio.model_components.ray_samplers import ProposalNetworkSampler, UniformSampler
from torch import Tensor, nn

from latentavatar_ns.model.hash_encoding import with_gather_reads


def tcnn_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@dataclass
class Samples:
    """Samples of one batch of rays and the bookkeeping each strategy needs afterwards."""

    ray_samples: RaySamples
    """(rays, samples) in canonical space."""
    evaluate: Optional[Bool[Tensor, "rays samples"]] = None
    """Samples the main field must evaluate; None means all of them."""
    chunk: Optional[int] = None
    """March in chunks of this many samples, dropping rays that became opaque (early termination)."""
    weights_list: List[Tensor] = field(default_factory=list)
    ray_samples_list: List[RaySamples] = field(default_factory=list)


class RaySampler(nn.Module):
    """The interface the model, the renderer and the pipeline use, whichever sampler it is."""

    update_every: int = 0
    """Training steps between ``update`` calls; 0 for a sampler that keeps no picture of the field."""
    warmup_steps: int = 0
    """Steps before the first ``update``: the field must have some shape first."""
    refill_passes: int = 0
    """``update`` calls that rebuild the sampler's state when a checkpoint holds none for it."""

    def forward(self, rays: RayBundle) -> Samples:
        raise NotImplementedError

    def loss(self, samples: Samples, weights: Tensor) -> Optional[Tensor]:
        """The sampler's own training loss, given the main field's (detached) weights; None if it has none."""
        return None

    def update(self, density_fn: Callable[[Tensor], Tensor]) -> None:
        """Refresh from the field's density (canonical points (M, 3) -> (M,)), the max over several expressions."""

    def metrics(self) -> Dict[str, float]:
        """Numbers worth logging in training."""
        return {}


class UniformBoxSampler(RaySampler):
    """The paper's sampler: ``num_samples`` evenly spaced (jittered in training) between box entry and exit."""

    def __init__(self, num_samples: int = 64):
        super().__init__()
        self.sampler = UniformSampler(num_samples=num_samples)

    def forward(self, rays: RayBundle) -> Samples:
        return Samples(self.sampler(rays))


class ProposalSampler(RaySampler):
    """One hash-grid proposal network (tiny-cuda-nn when installed, pure torch otherwise: ``hash_encoding``).

    The proposal density does not depend on the expression, so outside training it is read from a
    ``bake_resolution``^3 grid of its values (trilinear), filled on the first render after the
    network's weights change: every frame then costs one 3-D texture read per proposal sample
    instead of a hash-grid lookup per level and corner and an MLP. 0 keeps querying the network.
    """

    def __init__(self, aabb: Tensor, num_proposal_samples: int = 64, num_nerf_samples: int = 16,
                 hash_levels: int = 5, hash_max_res: int = 128, log2_hashmap_size: int = 17,
                 bake_resolution: int = 0):
        super().__init__()
        self.density_field = HashMLPDensityField(
            aabb.clone(), num_layers=2, hidden_dim=16, num_levels=hash_levels, max_res=hash_max_res,
            log2_hashmap_size=log2_hashmap_size, implementation="tcnn" if tcnn_available() else "torch")
        with_gather_reads(self.density_field.encoding)  # the torch path's backward, fast on CUDA
        self.sampler = ProposalNetworkSampler(
            num_proposal_samples_per_ray=(num_proposal_samples,), num_nerf_samples_per_ray=num_nerf_samples,
            num_proposal_network_iterations=1, single_jitter=False,
            initial_sampler=UniformSampler(single_jitter=False))
        self.bake_resolution = bake_resolution
        self._baked: Optional[Tuple[Tuple, Tensor]] = None  # (weights' versions, (1, 1, R, R, R) density)

    def _weights_key(self) -> Tuple:
        """Changes whenever a weight changes: optimiser steps and ``load_state_dict`` write in place (bumping
        each tensor's version counter), and moving the module to another device changes its storage."""
        return tuple((t.data_ptr(), t._version) for t in self.density_field.state_dict(keep_vars=True).values())

    @torch.no_grad()
    def baked_density(self) -> Tensor:
        """The proposal density at the texel centres of a ``bake_resolution``^3 grid over the box, (1, 1, z, y, x)."""
        key = self._weights_key()
        if self._baked is None or self._baked[0] != key:
            r, (lo, hi) = self.bake_resolution, self.density_field.aabb
            axis = (torch.arange(r, device=lo.device) + 0.5) / r  # texel centres
            zyx = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)  # (z, y, x, [z, y, x])
            points = lo + zyx.flip(-1) * (hi - lo)
            with torch.autocast(lo.device.type, enabled=False):  # baked once, read by every frame: full precision
                density = torch.cat([self.density_field.density_fn(chunk)
                                     for chunk in points.reshape(-1, 3).split(1 << 18)])
            self._baked = (key, density.float().reshape(1, 1, r, r, r))
        return self._baked[1]

    def _baked_density_fn(self, positions: Float[Tensor, "*batch 3"], times=None) -> Float[Tensor, "*batch 1"]:
        lo, hi = self.density_field.aabb
        grid = ((positions - lo) / (hi - lo) * 2.0 - 1.0).reshape(1, 1, 1, -1, 3).to(torch.float32)
        density = F.grid_sample(self.baked_density(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        inside = ((positions >= lo) & (positions <= hi)).all(dim=-1, keepdim=True)
        # Border padding up to the box's faces (like the network), nothing outside it.
        return density.reshape(*positions.shape[:-1], 1) * inside

    def forward(self, rays: RayBundle) -> Samples:
        baked = not self.training and self.bake_resolution > 0
        density_fn = self._baked_density_fn if baked else self.density_field.density_fn
        ray_samples, weights_list, ray_samples_list = self.sampler(rays, density_fns=[density_fn])
        return Samples(ray_samples, weights_list=weights_list, ray_samples_list=ray_samples_list)

    def loss(self, samples: Samples, weights: Tensor) -> Optional[Tensor]:
        """Interlevel loss: the proposal's weights must bound the main field's (which are detached)."""
        if not self.training:
            return None
        return interlevel_loss(samples.weights_list + [weights], samples.ray_samples_list + [samples.ray_samples])


class OccupancyGrid(RaySampler):
    """A binary grid over the canonical box that stays conservative over all expressions.

    Each update evaluates the field for several expression codes at every cell's corners and at a
    jittered inner point, and keeps, per cell, the decayed maximum density over updates; cells
    whose density could make a sample more than ``threshold`` opaque are occupied, and occupancy
    is dilated by one cell.
    """

    refill_passes = 4  # several jittered updates, as training would have made
    aabb: Tensor
    density: Tensor
    occupied: Tensor

    def __init__(self, aabb: Tensor, resolution: int = 64, num_candidates: int = 128, threshold: float = 0.01,
                 decay: float = 0.95, chunk: int = 32, update_every: int = 16, warmup_steps: int = 0):
        super().__init__()
        self.update_every, self.warmup_steps = update_every, warmup_steps
        self.resolution = resolution
        self.threshold = threshold
        self.decay = decay
        self.chunk = chunk
        self.sampler = UniformSampler(num_samples=num_candidates)
        self.register_buffer("aabb", aabb.clone().float())
        self.register_buffer("density", torch.full((resolution,) * 3, float("inf")))
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))
        diag = float((aabb[1] - aabb[0]).norm())
        self.step_size = diag / num_candidates

    def cell_of(self, positions: Float[Tensor, "*batch 3"]) -> Tensor:
        unit = (positions - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        return (unit * self.resolution).long().clamp(0, self.resolution - 1)

    def is_occupied(self, positions: Float[Tensor, "*batch 3"]) -> Bool[Tensor, "*batch"]:
        ijk = self.cell_of(positions)
        inside = ((positions >= self.aabb[0]) & (positions <= self.aabb[1])).all(dim=-1)
        return self.occupied[ijk[..., 0], ijk[..., 1], ijk[..., 2]] & inside

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor]) -> None:
        """``density_fn``: canonical points (M, 3) -> (M,) density, the max over several expressions.

        Each cell takes the maximum over its eight corners (a lattice shared with its neighbours)
        and one jittered inner point, so a density peak anywhere near the cell is seen.
        """
        r, device = self.resolution, self.aabb.device
        extent = self.aabb[1] - self.aabb[0]
        grid = torch.arange(r + 1, device=device)
        corners = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3).float() / r
        corner_density = density_fn(self.aabb[0] + corners * extent).reshape(1, 1, r + 1, r + 1, r + 1)
        corner_max = F.max_pool3d(corner_density, kernel_size=2, stride=1)[0, 0]  # (r, r, r)
        cells = torch.stack(torch.meshgrid(*[torch.arange(r, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
        inner = density_fn(self.aabb[0] + (cells + torch.rand(r**3, 3, device=device)) / r * extent).reshape(r, r, r)
        new = torch.maximum(corner_max, inner)
        current = torch.where(torch.isinf(self.density), torch.zeros_like(new), self.density)
        self.density = torch.maximum(current * self.decay, new)
        alpha = 1.0 - torch.exp(-self.density * self.step_size)
        occupied = (alpha > self.threshold).float()[None, None]
        self.occupied = F.max_pool3d(occupied, kernel_size=3, stride=1, padding=1)[0, 0] > 0

    def forward(self, rays: RayBundle) -> Samples:
        samples = self.sampler(rays)
        return Samples(samples, evaluate=self.is_occupied(samples.frustums.get_positions()), chunk=self.chunk)

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def metrics(self) -> Dict[str, float]:
        return {"occupied_fraction": self.occupied_fraction}


SAMPLERS: Dict[str, Callable[[Any, Tensor], RaySampler]] = {
    "uniform": lambda cfg, aabb: UniformBoxSampler(cfg.num_samples),
    "proposal": lambda cfg, aabb: ProposalSampler(
        aabb, cfg.num_proposal_samples, cfg.num_nerf_samples, hash_max_res=cfg.proposal_hash_max_res,
        bake_resolution=cfg.proposal_bake_resolution),
    "occupancy": lambda cfg, aabb: OccupancyGrid(
        aabb, cfg.occupancy_resolution, cfg.occupancy_candidates, cfg.occupancy_threshold,
        update_every=cfg.occupancy_update_every, warmup_steps=cfg.occupancy_warmup_steps),
}
"""Each sampler by its ``--pipeline.model.sampler`` name, built from the model config and the canonical box."""


def make_sampler(cfg: Any, aabb: Tensor) -> RaySampler:
    """The sampler the model config names (its ``sampler`` and the options prefixed with that name)."""
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {cfg.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[cfg.sampler](cfg, aabb)
