"""Sampling benchmark: the same synthetic data and training budget for each sampler.

    python scripts/bench_sampling.py [--iterations 2000] [--samplers uniform proposal occupancy] [--device cpu]

Writes ``bench/sampling.json``: held-out PSNR/SSIM/LPIPS, main-field evaluations per ray (training
and rendering), time per training step and per rendered frame, each also as a ratio to
``uniform`` measured in the same run.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import tyro
from nerfstudio.engine.trainer import Trainer

from latentavatar_ns.method.configs import paper_config, tiny_config
from latentavatar_ns.synthetic import make_dataset
from latentavatar_ns.evaluation.metrics import ImageMetrics, evaluate_heldout


@dataclass
class BenchSampling:
    samplers: List[str] = field(default_factory=lambda: ["uniform", "proposal", "occupancy"])
    """Samplers to compare; the first is the reference of the ratios."""
    method: str = "latentavatar-tiny"
    """latentavatar-tiny (CPU budget) or latentavatar."""
    iterations: int = 2000
    """Training steps per sampler."""
    num_frames: int = 120
    resolution: int = 128
    seed: int = 0
    device: str = "cpu"
    output: Path = Path("bench/sampling.json")


def train(cfg: BenchSampling, data: Path, sampler: str, out: Path) -> Trainer:
    torch.manual_seed(cfg.seed)
    config = tiny_config() if cfg.method == "latentavatar-tiny" else paper_config()
    config.pipeline.datamanager.data = data
    config.pipeline.model.sampler = sampler
    config.output_dir = out
    config.vis = "tensorboard"
    config.machine.device_type = cfg.device
    config.max_num_iterations = cfg.iterations
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.steps_per_save = 10**9
    config.set_timestamp()
    trainer = Trainer(config)
    trainer.setup()
    trainer.train()
    return trainer


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def render_speed(trainer: Trainer, device: str) -> Dict[str, float]:
    """Seconds per rendered held-out frame (new code every frame) and main-field evaluations per ray."""
    model = trainer.pipeline.model
    model.eval()
    dataset = trainer.pipeline.datamanager.eval_dataset
    items = [dataset.get_data(i) for i in range(len(dataset))]
    times, evals = [], []
    for i, item in enumerate(items):
        camera = dataset.cameras[i : i + 1]
        _sync(device)
        start = time.perf_counter()
        out = model.get_outputs(camera.to(model.device), item)
        _sync(device)
        times.append(time.perf_counter() - start)
        evals.append(float(out["field_evals_per_ray"]))
    return {"s_per_frame": float(np.median(times[1:] or times)), "field_evals_per_ray": float(np.mean(evals))}


def train_step_time(trainer: Trainer, steps: int = 20) -> Dict[str, float]:
    """Median seconds of a full training step (forward, backward, optimiser) after training."""
    pipeline = trainer.pipeline
    pipeline.train()
    times, evals = [], []
    for step in range(steps):
        start = time.perf_counter()
        trainer.optimizers.zero_grad_all()
        _, losses, metrics = pipeline.get_train_loss_dict(step)
        sum(losses.values()).backward()
        trainer.optimizers.optimizer_step_all()
        _sync(trainer.device)
        times.append(time.perf_counter() - start)
        evals.append(float(metrics["field_evals_per_ray"]))
    return {"s_per_step": float(np.median(times)), "field_evals_per_ray": float(np.mean(evals))}


def main() -> None:
    cfg = tyro.cli(BenchSampling)
    results: Dict[str, Dict] = {}
    metrics = ImageMetrics(lpips_nets=("vgg", "alex"))
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", identity=0, num_frames=cfg.num_frames, resolution=cfg.resolution,
                            eval_fraction=0.15, seed=cfg.seed)
        for sampler in cfg.samplers:
            start = time.time()
            trainer = train(cfg, data, sampler, Path(tmp) / "runs")
            wall = time.time() - start
            heldout = evaluate_heldout(trainer.pipeline, metrics)
            results[sampler] = {
                "train_wall_time_s": round(wall, 1),
                "train": train_step_time(trainer),
                "render": render_speed(trainer, cfg.device),
                "heldout": heldout,
            }
            print(sampler, json.dumps(results[sampler]), flush=True)
    ref = results[cfg.samplers[0]]
    for name, r in results.items():
        r["vs_" + cfg.samplers[0]] = {
            "psnr_delta_db": r["heldout"]["full_frame"]["psnr"] - ref["heldout"]["full_frame"]["psnr"],
            "train_step_time_ratio": r["train"]["s_per_step"] / ref["train"]["s_per_step"],
            "render_time_ratio": r["render"]["s_per_frame"] / ref["render"]["s_per_frame"],
            "field_evals_ratio_render": r["render"]["field_evals_per_ray"] / ref["render"]["field_evals_per_ray"],
            "field_evals_ratio_train": r["train"]["field_evals_per_ray"] / ref["train"]["field_evals_per_ray"],
        }
    if cfg.device == "cuda":
        device = torch.cuda.get_device_name()
    else:
        device = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    report = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "device": device, "results": results}
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v["vs_" + cfg.samplers[0]] for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
