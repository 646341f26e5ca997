"""Distributed benchmark: one avatar trained by 2 processes with 2 images each against 1 process with 4.

    python scripts/bench_distributed.py [--iterations 1000] [--seeds 0] [--device cpu]

Both arms see 4 images per step and train for the same number of steps from the same seed, on a
synthetic head video; on a CPU they share the machine's cores (each of the 2 processes gets half).
The 2-process arm is the project's own launcher (gloo on the CPU, NCCL on GPUs) with the config
``ns-train latentavatar-tiny --machine.num-devices 2`` makes. Reported per arm: held-out PSNR, SSIM and
LPIPS (full frame and face box), the mean step time, and for 2 processes the communication time per
step: gradient all-reduce (timed by a DDP communication hook) and the sharing of stored codes.
Writes ``bench/distributed.json``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist
import tyro

import latentavatar_ns.method.pipeline as pipeline_module
from latentavatar_ns.evaluation.metrics import ImageMetrics, evaluate_heldout
from latentavatar_ns.method.configs import tiny_config
from latentavatar_ns.method.launch import launch, seeded_trainer
from latentavatar_ns.method.trainer import LatentAvatarTrainerConfig
from latentavatar_ns.synthetic import make_dataset
from latentavatar_ns.utils.distributed import world_size


@dataclass
class BenchDistributed:
    iterations: int = 1000
    """Training steps of each arm."""
    images_per_step: int = 4
    """Images per step in all (the 2-process arm draws half of them in each process)."""
    seeds: List[int] = field(default_factory=lambda: [0])
    """Training seeds; each trains both arms."""
    num_frames: int = 150
    """Synthetic frames (the last 15% held out)."""
    resolution: int = 128
    device: str = "cpu"
    """cpu (gloo) or cuda (NCCL, one GPU per process)."""
    output: Path = Path("bench/distributed.json")
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "bench_distributed")
    """Dataset and runs; an existing dataset is reused."""


def _timed_train(local_rank: int, world: int, config: LatentAvatarTrainerConfig, global_rank: int = 0) -> None:
    """nerfstudio's ``train_loop``, timing each step and (with several processes) its communication."""
    trainer = seeded_trainer(local_rank, world, config, global_rank)
    comm = {"seconds": 0.0}
    if world > 1:
        def timed_allreduce(state, bucket):  # unannotated: DDP checks the annotation against the real class
            start = time.perf_counter()
            future = dist.all_reduce(bucket.buffer().div_(world), async_op=True).get_future()  # type: ignore

            def done(f: torch.futures.Future) -> torch.Tensor:
                comm["seconds"] += time.perf_counter() - start
                return f.value()[0]
            return future.then(done)

        trainer.pipeline._model.register_comm_hook(None, timed_allreduce)  # type: ignore[operator]
        share_rows = pipeline_module.share_rows

        def timed_share_rows(*args: Any) -> None:
            start = time.perf_counter()
            share_rows(*args)
            comm["seconds"] += time.perf_counter() - start
        pipeline_module.share_rows = timed_share_rows  # type: ignore[assignment]
    step_seconds: List[float] = []
    comm_seconds: List[float] = []
    iteration = trainer.train_iteration

    def timed_iteration(step: int):
        comm["seconds"] = 0.0
        start = time.perf_counter()
        out = iteration(step)
        step_seconds.append(time.perf_counter() - start)
        comm_seconds.append(comm["seconds"])
        return out

    trainer.train_iteration = timed_iteration  # type: ignore[method-assign]
    trainer.train()
    if global_rank == 0:
        skip = min(10, len(step_seconds) // 2)  # the first steps warm up allocators and threads
        stats = {"processes": world_size(), "step_s": float(np.mean(step_seconds[skip:])),
                 "comm_per_step_s": float(np.mean(comm_seconds[skip:])) if world > 1 else 0.0}
        (config.get_base_dir() / "timing.json").write_text(json.dumps(stats))


def _config(cfg: BenchDistributed, data: Path, name: str, seed: int, processes: int) -> LatentAvatarTrainerConfig:
    config = tiny_config()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.images_per_batch = cfg.images_per_step // processes
    config.output_dir, config.experiment_name, config.timestamp = cfg.work_dir / "runs", name, "run"
    config.vis, config.max_num_iterations = "tensorboard", cfg.iterations
    config.steps_per_eval_image = config.steps_per_eval_batch = cfg.iterations  # eval once, as in the other arm
    config.machine.device_type, config.machine.num_devices, config.machine.seed = cfg.device, processes, seed
    config.overwrite = True
    return config


def _score(config: LatentAvatarTrainerConfig) -> Dict:
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, step = eval_setup(config.get_base_dir() / "config.yml", test_mode="test")
    scores = evaluate_heldout(pipeline, ImageMetrics(device=pipeline.device))
    return {"step": step, **scores, **json.loads((config.get_base_dir() / "timing.json").read_text())}


def main(cfg: BenchDistributed) -> None:
    data = cfg.work_dir / "data"
    if not (data / "train").exists():
        make_dataset(data, identity=0, num_frames=cfg.num_frames, resolution=cfg.resolution, eval_fraction=0.15,
                     seed=0)
    results: Dict[str, Dict] = {}
    for seed in cfg.seeds:
        for processes in (1, 2):
            name = f"seed{seed}_{processes}proc"
            config = _config(cfg, data, name, seed, processes)
            config.save_config()
            start = time.time()
            if processes == 1:
                if cfg.device == "cpu":
                    torch.set_num_threads(os.cpu_count() or 1)
                _timed_train(0, 1, config)
            else:
                launch(_timed_train, processes, config=config, device_type=cfg.device)
            results[name] = {**_score(config), "wall_s": time.time() - start}
            print(name, json.dumps(results[name]), flush=True)
    summary = {}
    for seed in cfg.seeds:
        one, two = results[f"seed{seed}_1proc"], results[f"seed{seed}_2proc"]
        summary[f"seed{seed}"] = {
            "psnr_2proc_minus_1proc": two["full_frame"]["psnr"] - one["full_frame"]["psnr"],
            "face_psnr_2proc_minus_1proc": two["face_box"]["psnr"] - one["face_box"]["psnr"],
            "step_s_1proc": one["step_s"], "step_s_2proc": two["step_s"],
            "comm_share_of_step_2proc": two["comm_per_step_s"] / two["step_s"],
        }
    report = {
        "benchmark": "distributed",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]},
        "runs": results,
        "summary": summary,
    }
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(tyro.cli(BenchDistributed))
