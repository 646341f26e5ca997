"""The avatar's table of expression codes: one row per frame, training frames first, then held-out frames.

Training stores each frame's code as the encoder last produced it; held-out frames are stored when
they are encoded (on load, in eval). A render that has only a camera (the viewer, ns-render, a camera
path) shows the expression of the frame the camera stands for: a frame index, a training camera's
image, or a time in [0, 1] along the training video.

The rows live in the model's ``frame_codes`` buffer, which is what checkpoints hold; a table is a
view of that buffer (and of which frame each training image shows), so writes go straight to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor


@dataclass
class FrameCodeTable:
    """Lookups and writes on the code rows of one avatar."""

    codes: Float[Tensor, "frames D"]
    """The model's ``frame_codes`` buffer, written in place."""
    image_codes: Int[Tensor, " images"]
    """Row of each training image (the views of one multi-view moment share a row)."""
    num_train_frames: int
    """Rows before this one are training frames; the rest are held-out frames."""

    @property
    def training(self) -> Float[Tensor, "train D"]:
        return self.codes[: self.num_train_frames]

    def mean(self) -> Float[Tensor, "1 D"]:
        """The average training expression."""
        return self.training.mean(dim=0, keepdim=True)

    def seen(self) -> Float[Tensor, "seen D"]:
        """Training rows written at least once (rows start at zero)."""
        rows = self.training
        return rows[rows.abs().sum(dim=1) > 0]

    def spread(self) -> Float[Tensor, " D"]:
        """Each channel's standard deviation over the seen training rows (zeros until two are seen)."""
        rows = self.seen()
        return rows.std(dim=0) if len(rows) > 1 else torch.zeros_like(self.codes[0])

    def at_times(self, times: Float[Tensor, "*B 1"], num: int) -> Int[Tensor, " B"]:
        """Training frame shown at a time in [0, 1] (a camera path's keyframe time): 0 first, 1 last."""
        idx = (times.reshape(-1).to(self.codes.device).clamp(0.0, 1.0) * (self.num_train_frames - 1)).round().long()
        return idx.expand(num) if idx.numel() == 1 else idx

    def lookup(self, cameras: Cameras) -> Float[Tensor, "B D"]:
        """The stored code of the frame each camera stands for: its ``code_idx``, its training image, or its time."""
        b, device = cameras.shape[0], self.codes.device
        meta = cameras.metadata or {}
        if "code_idx" in meta:
            idx = torch.as_tensor(meta["code_idx"], device=device).reshape(-1)
        elif "cam_idx" in meta:  # a training camera (the viewer): the code of its image's frame
            cam = torch.as_tensor(meta["cam_idx"], device=device).reshape(-1)
            idx = self.image_codes[cam.clamp(0, len(self.image_codes) - 1)]
        elif cameras.times is not None:
            return self.codes[self.at_times(cameras.times, b)]
        else:
            idx = torch.zeros(1, dtype=torch.long, device=device)
        idx = idx.clamp(0, self.codes.shape[0] - 1)
        return self.codes[idx.expand(b) if idx.numel() == 1 else idx]

    def encode(self, encode: Callable[[Tensor], Tensor], crops: Float[Tensor, "B 3 S S"],
               idx: Optional[Int[Tensor, " B"]]) -> Float[Tensor, "B D"]:
        """Codes of a batch of crops, stored in their rows when ``idx`` names them.

        Views of one moment (a multi-view capture) share its crop and row: each moment is encoded
        once, from its first view, and every view gets that code.
        """
        if idx is None:
            return encode(crops)
        idx = idx.to(self.codes.device).reshape(-1)
        moments, inverse = torch.unique(idx, return_inverse=True)
        if len(moments) == len(idx):
            code = encode(crops)
            self.codes[idx] = code.detach().to(self.codes.dtype)
            return code
        first = torch.full_like(moments, len(idx)).scatter_reduce(
            0, inverse, torch.arange(len(idx), device=idx.device), "amin")
        code = encode(crops[first])
        self.codes[moments] = code.detach().to(self.codes.dtype)
        return code[inverse]


@runtime_checkable
class CodeSource(Protocol):
    """Something asked first for the codes of camera-only renders (the viewer's expression panel)."""

    def code_for(self, cameras: Cameras, table: FrameCodeTable) -> Optional[Float[Tensor, "B D"]]:
        """Codes for these cameras, or None to fall back on the table's stored code."""
