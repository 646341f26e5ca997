"""Checkpoints that survive a crash, and a guard against non-finite training steps.

Shared by ``ns-train`` (:mod:`latentavatar_ns.method.trainer`) and ``ns-latentavatar-ynet``: a checkpoint
is written through :func:`latentavatar_ns.utils.io.atomic_write`, so a process killed mid-save leaves
the previous checkpoints intact; readers skip a damaged newest file and take the one before it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple, TypeVar

import torch

from latentavatar_ns.utils.errors import LatentAvatarError

T = TypeVar("T")
_STEP = re.compile(r"^step-(\d+)\.[A-Za-z]+$")


class TrainingError(LatentAvatarError, RuntimeError):
    """Training cannot go on (or start): printed as one ``error:`` line by the ``ns-*`` commands."""


def step_of(path: Path) -> Optional[int]:
    """The step in a ``step-000001234.<ext>`` name, or None for any other file (temporaries included)."""
    match = _STEP.match(Path(path).name)
    return int(match.group(1)) if match else None


def checkpoints_in(folder: Path, suffix: str) -> List[Path]:
    """``step-*.<suffix>`` files of a folder, oldest first (by step, not by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"step-*{suffix}") if step_of(p) is not None and p.suffix == suffix]
    return sorted(found, key=lambda p: step_of(p))  # type: ignore[arg-type, return-value]


def prune(folder: Path, suffix: str, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (at least one is always kept)."""
    for old in checkpoints_in(folder, suffix)[: -max(keep, 1)]:
        old.unlink(missing_ok=True)


def load_newest(paths: Iterable[Path], load: Callable[[Path], T]) -> Tuple[Path, T]:
    """Load the newest checkpoint that reads; a damaged newer one is skipped with a warning.

    Raises :class:`TrainingError` naming the files when none of them can be read.
    """
    paths = list(paths)
    problems = []
    for path in reversed(paths):
        try:
            return path, load(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped, and reported
            problems.append(f"{path.name} ({type(err).__name__})")
            if path is not paths[0]:
                warnings.warn(f"{path}: cannot read checkpoint ({type(err).__name__}: {err}); "
                              "using the one before it", stacklevel=2)
    folder = paths[0].parent if paths else "?"
    raise TrainingError(f"{folder}: no readable checkpoint ({', '.join(problems) or 'none found'})")


class NonFiniteGuard:
    """Counts consecutive steps whose loss or gradients are not finite.

    A bad step is skipped (no optimiser update); ``max_consecutive`` of them in a row mean the
    run has diverged, and training stops rather than burn hours on NaNs.
    """

    def __init__(self, max_consecutive: int):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0

    @staticmethod
    def finite(loss: torch.Tensor, parameters: Optional[Iterable[torch.nn.Parameter]] = None) -> bool:
        """Whether the loss, and every gradient present, holds only finite numbers."""
        if not bool(torch.isfinite(loss).all()):
            return False
        grads = [p.grad for p in (parameters or []) if p.grad is not None]
        if not grads:
            return True
        norms = torch._foreach_norm(grads)  # one reduction per tensor, NaN/inf propagate into the norm
        return bool(torch.isfinite(torch.stack(norms)).all())

    def record(self, ok: bool, step: int, what: str = "loss or gradient") -> bool:
        """Note a step's outcome; warn on a skip, and raise once too many bad steps come in a row."""
        if ok:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        warnings.warn(f"step {step}: non-finite {what}; step skipped "
                      f"({self.consecutive} in a row, stopping at {self.max_consecutive})", stacklevel=2)
        if self.consecutive >= self.max_consecutive:
            raise TrainingError(f"training diverged: {self.consecutive} steps in a row with a non-finite {what} "
                                f"(last at step {step}); lower the learning rate or check the data")
        return False
