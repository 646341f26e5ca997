"""The real-video path of the demo (``ns-latentavatar-demo-video``).

The sample talking-face clip (``single_face.mp4``, from the asset cache) -> ``ns-latentavatar-process``
-> ``ns-train latentavatar-tiny`` -> turntable video, held-out comparison and metrics (the held-out
frames are the end of the clip: unseen expressions and head poses).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from latentavatar_ns.demo.steps import fresh_output_dir, render_results, train


@dataclass
class DemoVideoConfig:
    """Process a real video into a dataset, train latentavatar-tiny on it, render a turntable and a
    held-out comparison."""

    video: Optional[Path] = None
    """Input video or image folder (default: the sample clip single_face.mp4 from the asset cache)."""
    output_dir: Path = Path("demo_video_output")
    """Where the dataset, the training run and the results go."""
    resolution: int = 128
    """Frame side of the processed dataset (latentavatar-tiny renders at a quarter of it)."""
    eval_fraction: float = 0.1
    """Share of the video's end held out."""
    stride: int = 1
    """Use every N-th frame."""
    max_frames: Optional[int] = None
    """Stop after this many frames."""
    iterations: int = 3000
    """Training steps."""
    device: str = "cpu"
    """Training device type: cpu or cuda."""
    overwrite: bool = False
    """Replace an existing output folder."""


def run_demo_video(cfg: DemoVideoConfig) -> Tuple[Dict, Path]:
    """Run the demo into ``cfg.output_dir``; return its results (also written to results.json) and the
    trained avatar's config.yml."""
    from latentavatar_ns.assets.cache import asset_path
    from latentavatar_ns.process.video_to_dataset import ProcessConfig, process

    out = cfg.output_dir
    fresh_output_dir(out, cfg.overwrite)
    start = time.time()
    video = cfg.video if cfg.video is not None else asset_path("single_face.mp4")
    summary = process(ProcessConfig(input=video, output_dir=out / "data", resolution=cfg.resolution,
                                    eval_fraction=cfg.eval_fraction, stride=cfg.stride, max_frames=cfg.max_frames))
    process_s = time.time() - start
    config_path = train(out / "data", out / "runs", cfg.iterations, cfg.device)
    train_done = time.time()
    heldout = render_results(config_path, out)
    results = {
        "video": str(video),
        "frames": {"train": summary["num_train"], "eval": summary["num_eval"], "skipped": summary["frames_skipped"]},
        "resolution": cfg.resolution,
        "iterations": cfg.iterations,
        "device": cfg.device,
        "heldout": heldout,
        "process_s": round(process_s, 1),
        "train_s": round(train_done - start - process_s, 1),
        "wall_time_s": round(time.time() - start, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results, config_path
