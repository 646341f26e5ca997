"""How much each learned tri-plane part of a trained avatar varies: the static planes and the expression planes.

    python scripts/probe_plane_spread.py --runs RUN_DIR [RUN_DIR ...] --output OUT.json

A penalty on the tri-plane (``--pipeline.model.plane-tv-weight``) reaches every part the field reads: the
static planes, fitted texel by texel, and the expression planes, the bases the code weighs. This probe reads
each run's last checkpoint and reports, per part, the spread of its texels (std) and its mean squared step
between neighbouring texels, so that what a penalty flattened can be set beside what the run scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import torch
import tyro
from torch import Tensor

from latentavatar_ns.model.losses import plane_total_variation
from latentavatar_ns.utils.checkpoints import checkpoints_in

PARTS = {"static_planes": "generator.static_planes", "expression_planes": "generator.expression_planes"}
"""Reported name: the end of its key in the checkpoint's pipeline state."""


@dataclass
class ProbePlaneSpread:
    """Spread and roughness of trained avatars' static and expression planes."""

    runs: List[Path] = field(default_factory=list)
    """``ns-train`` run directories (holding ``nerfstudio_models/``)."""
    output: Path = Path("bench/plane_spread.json")
    """Where the numbers go."""


def last_checkpoint(run: Path) -> Path:
    checkpoints = checkpoints_in(run / "nerfstudio_models", ".ckpt")
    if not checkpoints:
        raise SystemExit(f"{run}: no nerfstudio_models/step-*.ckpt (is it an ns-train run directory?)")
    return checkpoints[-1]


def plane_statistics(state: Dict[str, Tensor]) -> Dict[str, Dict[str, float]]:
    """Per part found in ``state``: std of its texels and mean squared step between neighbours."""
    stats = {}
    for name, suffix in PARTS.items():
        found = [tensor for key, tensor in state.items() if key.endswith(suffix)]
        if found:
            planes = found[0].float()
            stats[name] = {"std": float(planes.std()), "mean_squared_step": float(plane_total_variation(planes))}
    return stats


def main() -> None:
    cfg = tyro.cli(ProbePlaneSpread)
    results = {}
    for run in cfg.runs:
        checkpoint = last_checkpoint(run)
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["pipeline"]
        result = {"checkpoint": checkpoint.name, **plane_statistics(state)}
        results[run.name if run.name != "run" else run.parent.parent.name] = result
        print(run, json.dumps(result))
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps({"runs": results}, indent=1))


if __name__ == "__main__":
    main()
