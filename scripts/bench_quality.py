"""Quality benchmark: train on a synthetic head for a fixed budget, score the held-out frames.

    python scripts/bench_quality.py [--iterations 3000] [--method latentavatar-tiny] [--device cpu]

Writes ``bench/quality.json``: held-out PSNR/SSIM/LPIPS (VGG and Alex) on the full frame and on
the face box, steps, training wall time and the device. Held-out frames are the last 15% of the
synthetic video: unseen expressions and poses, each encoded from its own face crop.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import tyro
from nerfstudio.utils.eval_utils import eval_setup

from latentavatar_ns.data.synthetic import make_dataset
from latentavatar_ns.demo import train
from latentavatar_ns.evaluation import evaluate_heldout


@dataclass
class BenchQuality:
    method: str = "latentavatar-tiny"
    """Method to train (the CPU budget suits latentavatar-tiny)."""
    iterations: int = 3000
    """Training steps."""
    num_frames: int = 150
    """Synthetic frames (last 15% held out)."""
    resolution: int = 128
    """Frame side in pixels."""
    identity: int = 0
    """Synthetic identity."""
    seed: int = 0
    device: str = "cpu"
    """cpu or cuda."""
    output: Path = Path("bench/quality.json")
    """Where the numbers go."""


def main() -> None:
    cfg = tyro.cli(BenchQuality)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", identity=cfg.identity, num_frames=cfg.num_frames,
                            resolution=cfg.resolution, eval_fraction=0.15, seed=cfg.seed)
        start = time.time()
        config_path = train(data, Path(tmp) / "runs", cfg.iterations, cfg.device, method=cfg.method)
        train_time = time.time() - start
        _, pipeline, _, step = eval_setup(config_path, test_mode="test")
        metrics = evaluate_heldout(pipeline)
    device = torch.cuda.get_device_name() if cfg.device == "cuda" else f"cpu ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    result = {
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "steps": step + 1,
        "train_wall_time_s": round(train_time, 1),
        "device": device,
        "heldout": metrics,
    }
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
