"""Seconds per training step of ``latentavatar-tiny``, per option that changes the step's cost.

    python scripts/bench_step_time.py [--threads 2] [--steps 40] [--variants default no_fused_adam ...]

``bench_speed.py`` times the paper's networks; this times the small model the CPU budget is spent on,
with its own defaults, on a synthetic head of the expressiveness benchmark's size (128^2, 150 frames).
Each variant trains in this process after the previous one, on the same frames: the median of
``--steps`` timed steps after ``--warmup`` untimed ones. Writes ``bench/step_time.json``; run it alone,
since another job on the machine changes every number.
"""

from __future__ import annotations

import json
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import tyro

from bench_speed import _median_time
from latentavatar_ns.method.configs import tiny_config
from latentavatar_ns.synthetic import make_dataset

VARIANTS: Dict[str, Dict] = {
    "default": {},
    "no_fused_adam": {"fused_adam": False},
    "expression_planes16": {"expression_planes": 16},
    "expression_planes16+no_fused_adam": {"expression_planes": 16, "fused_adam": False},
    "samples64": {"num_samples": 64},
}
"""Option sets on top of ``latentavatar-tiny``'s defaults: model fields by name, and ``fused_adam`` for
every parameter group's optimizer."""


@dataclass
class BenchStepTime:
    variants: List[str] = field(default_factory=lambda: list(VARIANTS))
    """Which of VARIANTS to time, in this order."""
    threads: int = 2
    """CPU threads (``ns-train`` uses all the cores)."""
    steps: int = 40
    """Timed steps per variant."""
    warmup: int = 5
    """Untimed steps first (allocator and caches settle)."""
    repeats: int = 2
    """Rounds over all the variants, each run afresh; a variant's number is the median of its rounds'
    medians, so that a slow spell of the machine does not fall on one variant alone."""
    data: Optional[Path] = None
    """An existing dataset to train on (default: a synthetic head rendered into a temporary folder)."""
    output: Path = Path("bench/step_time.json")
    """Where the numbers go."""


def _time_variant(data: Path, out: Path, options: Dict, cfg: BenchStepTime) -> Dict:
    config = tiny_config()
    config.pipeline.datamanager.data, config.output_dir, config.vis = data, out, "tensorboard"
    config.machine.device_type = "cpu"
    config.set_timestamp()
    for key, value in options.items():
        if key == "fused_adam":
            for group in config.optimizers.values():
                group["optimizer"].fused = value
        else:
            setattr(config.pipeline.model, key, value)
    torch.manual_seed(0)
    trainer = config.setup()
    trainer.setup()
    step = iter(range(10**9))
    for _ in range(cfg.warmup):
        trainer.train_iteration(next(step))
    seconds = _median_time(lambda: trainer.train_iteration(next(step)), cfg.steps, "cpu")
    params = sum(p.numel() for p in trainer.pipeline.model.parameters())
    return {"seconds_per_step": round(seconds, 4), "parameters": int(params)}


def main() -> None:
    cfg = tyro.cli(BenchStepTime)
    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: --variants {unknown}: not in {list(VARIANTS)}")
    torch.set_num_threads(cfg.threads)
    results: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = cfg.data or make_dataset(Path(tmp) / "data", identity=1, num_frames=150, resolution=128, detail=True)
        rounds: Dict[str, List[Dict]] = {name: [] for name in cfg.variants}
        for repeat in range(cfg.repeats):
            for name in cfg.variants:
                rounds[name].append(_time_variant(data, Path(tmp) / "runs" / f"{name}_{repeat}", VARIANTS[name], cfg))
                print(name, rounds[name][-1], flush=True)
        for name, timed in rounds.items():
            per_round = [t["seconds_per_step"] for t in timed]
            results[name] = {"seconds_per_step": round(float(np.median(per_round)), 4), "rounds": per_round,
                             "parameters": timed[0]["parameters"]}
    reference = results[cfg.variants[0]]["seconds_per_step"]
    for result in results.values():
        result["vs_first"] = round(result["seconds_per_step"] / reference, 3)
    report = {"config": {"threads": cfg.threads, "steps": cfg.steps, "warmup": cfg.warmup, "repeats": cfg.repeats},
              "device": f"cpu ({platform.processor() or 'x86_64'}, {cfg.threads} threads)",
              "torch": torch.__version__, "results": results}
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
