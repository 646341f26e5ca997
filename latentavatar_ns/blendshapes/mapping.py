"""From a frame's 52 blendshape weights to the avatar's own expression code.

The avatar is trained as usual; afterwards a small MLP is fitted on its training frames, from each
frame's blendshapes to the code its encoder stored for that frame. Any source of blendshapes (a
video through MediaPipe, a Live Link Face recording, an animation tool) then drives the avatar
through ``mapping(code) -> theta -> tri-plane`` with no training per driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from jaxtyping import Float
from torch import Tensor, nn

from latentavatar_ns.blendshapes.names import BLENDSHAPE_NAMES
from latentavatar_ns.utils.errors import LatentAvatarError
from latentavatar_ns.utils.io import atomic_write

MAPPING_FORMAT = "latentavatar-blendshape-mapping"
MAPPING_FILE = "blendshape_mapping.pt"
"""Where ``ns-latentavatar-blendshapes fit`` stores the mapping: beside the avatar's config.yml."""


class MappingError(LatentAvatarError, ValueError):
    """A mapping that cannot be fitted or used (no blendshapes, another avatar's mapping, a damaged file)."""


@dataclass
class MappingSpec:
    """The mapping network's shape."""

    code_dim: int
    """The avatar's expression code size."""
    hidden_dim: int = 128
    """Width of the hidden layers: two layers of 128 fit a few hundred frames in seconds."""
    num_layers: int = 2
    """Hidden layers."""

    def to_dict(self) -> Dict[str, int]:
        return {"code_dim": self.code_dim, "hidden_dim": self.hidden_dim, "num_layers": self.num_layers}


class BlendshapeMapping(nn.Module):
    """Standardised blendshapes -> MLP -> the code, de-standardised with the training codes' statistics."""

    in_mean: Tensor
    in_std: Tensor
    out_mean: Tensor
    out_std: Tensor

    def __init__(self, spec: MappingSpec):
        super().__init__()
        self.spec = spec
        width, layers = len(BLENDSHAPE_NAMES), []
        for _ in range(spec.num_layers):
            layers += [nn.Linear(width, spec.hidden_dim), nn.LeakyReLU(0.2)]
            width = spec.hidden_dim
        layers.append(nn.Linear(width, spec.code_dim))
        self.net = nn.Sequential(*layers)
        for name, size in (("in_mean", len(BLENDSHAPE_NAMES)), ("in_std", len(BLENDSHAPE_NAMES)),
                           ("out_mean", spec.code_dim), ("out_std", spec.code_dim)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name else torch.ones(size))

    def forward(self, weights: Float[Tensor, "B 52"]) -> Float[Tensor, "B D"]:
        x = (weights.float() - self.in_mean) / self.in_std
        return self.net(x) * self.out_std + self.out_mean


@dataclass
class FitReport:
    """How well the mapping reproduces the codes (R² over all code dimensions, 1 is exact)."""

    frames: int
    train_r2: float
    val_r2: float
    """On every ``val_every``-th frame, held out of the fit."""
    steps: int
    extra: Dict = field(default_factory=dict)


def _r2(pred: Tensor, target: Tensor) -> float:
    residual = ((pred - target) ** 2).sum()
    total = ((target - target.mean(dim=0)) ** 2).sum().clamp_min(1e-12)
    return float(1.0 - residual / total)


def fit_mapping(weights: Float[Tensor, "N 52"], codes: Float[Tensor, "N D"], steps: int = 1500, lr: float = 3e-3,
                weight_decay: float = 1e-4, val_every: int = 10, seed: int = 0,
                progress: Optional[Callable[[int, float], None]] = None) -> "tuple[BlendshapeMapping, FitReport]":
    """Fit a mapping by full-batch Adam on the standardised codes; every ``val_every``-th frame is held out
    to report generalisation, then the final mapping is fitted on all frames."""
    if len(weights) < 2:
        raise MappingError(f"{len(weights)} frame(s) with blendshapes; a mapping needs at least 2")
    weights, codes = weights.float(), codes.float()
    val = torch.zeros(len(weights), dtype=torch.bool)
    val[val_every // 2::val_every] = True
    if val.all() or not val.any():
        val[:] = False
    _, val_r2 = _fit(weights[~val], codes[~val], weights[val], codes[val], steps, lr, weight_decay, seed, None) \
        if val.any() else (None, float("nan"))
    mapping, train_r2 = _fit(weights, codes, weights, codes, steps, lr, weight_decay, seed, progress)
    return mapping, FitReport(frames=len(weights), train_r2=train_r2, val_r2=val_r2, steps=steps)


def _fit(weights: Tensor, codes: Tensor, eval_weights: Tensor, eval_codes: Tensor, steps: int, lr: float,
         weight_decay: float, seed: int, progress: Optional[Callable[[int, float], None]]
         ) -> "tuple[BlendshapeMapping, float]":
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    mapping = BlendshapeMapping(MappingSpec(code_dim=codes.shape[1]))
    torch.random.set_rng_state(generator_state)
    mapping.in_mean.copy_(weights.mean(0))
    mapping.in_std.copy_(weights.std(0).clamp_min(1e-3) if len(weights) > 1 else torch.ones(weights.shape[1]))
    mapping.out_mean.copy_(codes.mean(0))
    mapping.out_std.copy_(codes.std(0).clamp_min(1e-6) if len(codes) > 1 else torch.ones(codes.shape[1]))
    optimizer = torch.optim.AdamW(mapping.parameters(), lr=lr, weight_decay=weight_decay)
    target = (codes - mapping.out_mean) / mapping.out_std
    x = (weights - mapping.in_mean) / mapping.in_std
    for step in range(steps):
        loss = ((mapping.net(x) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step, float(loss))
    mapping.eval()
    with torch.no_grad():
        return mapping, _r2(mapping(eval_weights), eval_codes)


def save_mapping(path: Path, mapping: BlendshapeMapping, avatar_fingerprint: Dict, report: FitReport) -> None:
    """Write the mapping atomically, with the fingerprint of the avatar it was fitted for."""
    state = {"format": MAPPING_FORMAT, "spec": mapping.spec.to_dict(), "state": mapping.state_dict(),
             "avatar": avatar_fingerprint, "report": report.__dict__}
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_mapping(path: Path, avatar_fingerprint: Optional[Dict] = None) -> BlendshapeMapping:
    """Read a mapping; refuse one fitted for another avatar (when ``avatar_fingerprint`` is given)."""
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"{path}: no blendshape mapping here; fit one with ns-latentavatar-blendshapes fit "
                           "--load-config RUN/config.yml")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("format") != MAPPING_FORMAT:
            raise ValueError("not a blendshape mapping")
        mapping = BlendshapeMapping(MappingSpec(**data["spec"]))
        mapping.load_state_dict(data["state"])
    except Exception as err:  # a damaged or foreign file, whatever torch raises for it
        raise MappingError(f"{path}: cannot read the blendshape mapping ({type(err).__name__}: {err})") from None
    if avatar_fingerprint is not None and data.get("avatar") != avatar_fingerprint:
        raise MappingError(f"{path}: this mapping was fitted for another avatar (or an earlier checkpoint of this "
                           "one); fit it again with ns-latentavatar-blendshapes fit --load-config RUN/config.yml")
    return mapping.eval()
