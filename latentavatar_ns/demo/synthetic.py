"""The demo on a synthetic head (``ns-latentavatar-demo``): synthetic dataset -> ``ns-train latentavatar-tiny``
-> turntable video + held-out comparison. Runs on two CPU cores in a few minutes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

from latentavatar_ns.demo.steps import fresh_output_dir, render_results, train


DEMO_IDENTITY = 0
"""The synthetic identity the demo's head is made of."""


@dataclass
class DemoConfig:
    """Make a synthetic dataset, train the tiny avatar with ns-train, render a turntable and a held-out comparison."""

    output_dir: Path = Path("demo_output")
    """Where the dataset, the training run and the results go."""
    num_frames: int = 120
    """Frames of synthetic video (the last 15% are held out)."""
    resolution: int = 128
    """Frame side in pixels (latentavatar-tiny renders at a quarter of this and super-resolves)."""
    iterations: int = 3000
    """Training steps."""
    device: str = "cpu"
    """Training device type: cpu or cuda."""
    seed: int = 0
    """Seed of the synthetic head's motion and expressions."""
    detail: bool = True
    """Paint the synthetic head with the detail a real face has (textured skin, eye whites, teeth, highlights,
    winks): what an expressive avatar must reproduce. ``--no-detail`` makes the smooth head."""
    overwrite: bool = False
    """Replace an existing output folder."""


def run_demo(cfg: DemoConfig) -> Tuple[Dict, Path]:
    """Run the demo into ``cfg.output_dir``; return its results (also written to results.json) and the
    trained avatar's config.yml."""
    from latentavatar_ns.synthetic import make_dataset

    out = cfg.output_dir
    fresh_output_dir(out, cfg.overwrite)
    start = time.time()
    data = make_dataset(out / "data", identity=DEMO_IDENTITY, num_frames=cfg.num_frames, resolution=cfg.resolution,
                        eval_fraction=0.15, seed=cfg.seed, detail=cfg.detail)
    config_path = train(data, out / "runs", cfg.iterations, cfg.device)
    results = {"heldout": render_results(config_path, out), "iterations": cfg.iterations,
               "wall_time_s": round(time.time() - start, 1), "device": cfg.device}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results, config_path
