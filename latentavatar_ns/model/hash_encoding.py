"""The proposal network's pure-torch hash grid, with table reads whose backward is fast on CUDA.

nerfstudio's ``HashEncoding`` without tiny-cuda-nn reads its table as ``table[indices]``, once per cell
corner. The backward of that indexing accumulates repeated indices with a CUDA kernel that handles
each repeat in turn, and many points share a row: a coarse level has few cells, and every point
outside the box is moved to the same corner. At the paper's size the eight reads' backward is nearly
the whole training step. Here the eight corners are read at once, on CUDA with ``F.embedding``, whose
backward sorts the rows and sums each run of repeats in parallel, and on a CPU with ``index_select``,
whose backward costs there what the indexing did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.field_components.encodings import HashEncoding
from torch import Tensor

# HashEncoding.hash_fn's per-axis multipliers (Instant-NGP's primes); its hash is their products' XOR.
PRIMES = (1, 2654435761, 805459861)


class GatherHashEncoding(HashEncoding):
    """``HashEncoding``'s pure-torch path (same table, hash and trilinear weights), with the eight corners of
    each cell hashed axis by axis and read at once (:func:`read_rows`)."""

    def pytorch_fwd(self, in_tensor: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs out_dim"]:
        assert in_tensor.shape[-1] == 3
        scaled = in_tensor[..., None, :] * self.scalings.view(-1, 1).to(in_tensor.device)  # (*bs, L, 3)
        floor = torch.floor(scaled)
        offset = scaled - floor
        bounds = torch.stack([floor, torch.ceil(scaled)], dim=-1).long()  # (*bs, L, 3, [floor, ceil])
        axes = [bounds[..., axis, :] * prime for axis, prime in enumerate(PRIMES)]  # (*bs, L, 2) each
        rows = axes[0][..., :, None, None] ^ axes[1][..., None, :, None] ^ axes[2][..., None, None, :]
        rows = rows.flatten(start_dim=-3) % self.hash_table_size + self.hash_offset.to(rows.device)[:, None]
        lerp = torch.stack([1 - offset, offset], dim=-1)  # (*bs, L, 3, [floor, ceil]) trilinear weights per axis
        weights = lerp[..., 0, :, None, None] * lerp[..., 1, None, :, None] * lerp[..., 2, None, None, :]
        features = read_rows(self.hash_table, rows.reshape(-1), sorted_backward=self.hash_table.is_cuda)
        features = features.view(*rows.shape, -1)  # (*bs, L, 8, F)
        encoded = (features * weights.flatten(start_dim=-3)[..., None]).sum(dim=-2)  # (*bs, L, F)
        return encoded.flatten(start_dim=-2)


def read_rows(table: Float[Tensor, "rows F"], rows: Tensor, sorted_backward: bool) -> Float[Tensor, "n F"]:
    """``table[rows]``; its backward sorts the rows and reduces each run of repeats (``F.embedding``, for CUDA), or
    adds row by row (``index_select``, for a CPU)."""
    return F.embedding(rows, table) if sorted_backward else table.index_select(0, rows)


def with_gather_reads(encoding: HashEncoding) -> HashEncoding:
    """``encoding`` itself, its pure-torch path now :class:`GatherHashEncoding`'s. The class adds no state, so the
    module keeps its table, its place in its parents and its checkpoint keys, and no weight is drawn again."""
    if encoding.tcnn_encoding is None:
        encoding.__class__ = GatherHashEncoding
    return encoding
