"""What the ranks of a multi-process run exchange, beyond DDP's averaged gradients.

Every helper is a no-op in a one-process run (no process group), so callers need no branches.
"""

from __future__ import annotations

import hashlib
from typing import Any, List

import torch
import torch.distributed as dist
from jaxtyping import Float, Int
from torch import Tensor, nn

from latentavatar_ns.utils.checkpoints import TrainingError


def world_size() -> int:
    """Processes in the run (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on every rank: a step one rank skips must be skipped by all, or the
    others would wait for its gradients until the timeout."""
    if world_size() == 1:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


@torch.no_grad()
def share_rows(table: Float[Tensor, "rows D"], rows: Int[Tensor, " B"]) -> None:
    """Write into every rank's ``table`` the ``rows`` each rank has just written into its own.

    All ranks pass the same number of rows (the same batch size). A row written by two ranks in
    the same step keeps the higher rank's values, on every rank.
    """
    if world_size() == 1:
        return
    rows = rows.reshape(-1).to(table.device)
    values = table[rows].contiguous()
    all_rows = [torch.empty_like(rows) for _ in range(world_size())]
    all_values = [torch.empty_like(values) for _ in range(world_size())]
    dist.all_gather(all_rows, rows)
    dist.all_gather(all_values, values)
    for idx, val in zip(all_rows, all_values):
        table[idx] = val


@torch.no_grad()
def broadcast_state(module: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (after work each rank did on its own: a sampler's
    randomised update, the encoder's warm start)."""
    if world_size() == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """Average a module's floating-point buffers over the ranks: running statistics that each rank has
    just updated from its own batch (the encoder's per-frame code normalisation)."""
    if world_size() == 1:
        return
    for tensor in module.buffers():
        if tensor.is_floating_point():
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= world_size()


def fingerprint(*parts: Any) -> str:
    """A short hash of the ``repr`` of ``parts`` (tensors by their values)."""
    digest = hashlib.sha1()
    for part in parts:
        if isinstance(part, Tensor):
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:12]


def check_ranks_agree(what: str, value: str) -> None:
    """Raise on every rank, naming the ranks that differ from rank 0, unless all ranks hold the same ``value``."""
    if world_size() == 1:
        return
    values: List[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        raise TrainingError(f"ranks {differ} have another {what} than rank 0 ({values[differ[0]]} vs {values[0]}); "
                            "every machine must start the run with the same one")
