"""Quality benchmark: train variants of a method on one synthetic head, score the held-out frames over time.

    python scripts/bench_quality.py [--iterations 3000] [--variants static_planes default] [--jobs 2]

Every variant is the real ``ns-train`` run of ``--method`` with a few options changed (``VARIANTS``),
on the same synthetic video, with a checkpoint every ``--eval-every`` steps. Each checkpoint is scored
on the held-out frames (the last 15% of the video: unseen expressions and poses, each encoded from
its own face crop), which gives PSNR against training wall time, and the time each variant needs to
reach the last variant's final PSNR (time-to-PSNR). The final checkpoint also gets SSIM, LPIPS
(VGG, Alex) on the full frame and the face box, and the expression gain (how much closer to the
ground truth the frame's own code renders than the average code, ``evaluation.expression_gain``).

Writes ``bench/quality.json``. Variants run ``--jobs`` at a time, each on ``--threads`` CPU threads.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
import tyro
from nerfstudio.utils.eval_utils import eval_setup

from latentavatar_ns.demo.steps import train_command
from latentavatar_ns.synthetic import make_dataset
from latentavatar_ns.method.trainer import CKPT_SUFFIX
from latentavatar_ns.utils.checkpoints import checkpoints_in
from latentavatar_ns.evaluation.metrics import evaluate_heldout, expression_gain

VARIANTS: Dict[str, List[str]] = {
    "default": [],
    "static_planes": ["--pipeline.model.static-planes", "True"],
    "lpips_alex": ["--pipeline.model.lpips-loss-weight", "0.1", "--pipeline.model.lpips-loss-net", "alex"],
    # Half the low-res side (a quarter of the rays) for latentavatar-tiny's 32^2 grid, as 64 of 128 at 512^2.
    "patch": ["--pipeline.model.train-patch-size", "16"],
    # The tri-planes' total-variation penalty (latentavatar-tiny's default weight is 1) left out, or lighter.
    "no_plane_tv": ["--pipeline.model.plane-tv-weight", "0"],
    "plane_tv01": ["--pipeline.model.plane-tv-weight", "0.1"],
}


@dataclass
class BenchQuality:
    method: str = "latentavatar-tiny"
    """Method to train (the CPU budget suits latentavatar-tiny)."""
    variants: List[str] = field(default_factory=lambda: ["static_planes", "default"])
    """Which of VARIANTS to train; the last one is the reference of time-to-PSNR."""
    iterations: int = 3000
    """Training steps per variant."""
    eval_every: int = 500
    """Steps between scored checkpoints."""
    num_frames: int = 150
    """Synthetic frames (last 15% held out)."""
    resolution: int = 128
    """Frame side in pixels."""
    identity: int = 0
    """Synthetic identity."""
    seed: int = 0
    device: str = "cpu"
    """cpu or cuda."""
    jobs: int = 1
    """Variants trained at the same time (on a CPU, at most the number of cores / --threads)."""
    threads: int = 1
    """CPU threads per training run."""
    output: Path = Path("bench/quality.json")
    """Where the numbers go."""
    work_dir: Optional[Path] = None
    """Keep the dataset and runs here (default: a temporary folder)."""


def _launch(cfg: BenchQuality, data: Path, runs: Path, name: str) -> subprocess.Popen:
    cmd = train_command(data, runs, cfg.iterations, cfg.device, cfg.method, experiment=name, extra_args=[
        *VARIANTS[name], "--steps-per-save", str(cfg.eval_every), "--keep-checkpoints", "1000", "--overwrite", "True"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(cfg.threads),
           "MKL_NUM_THREADS": str(cfg.threads)}
    print(f"{name}: $ {' '.join(cmd)}", flush=True)
    with (runs / f"{name}.log").open("w") as log:  # the child keeps its own handle
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _train_all(cfg: BenchQuality, data: Path, runs: Path) -> Dict[str, float]:
    """Train every variant, ``--jobs`` at a time; returns each run's start time."""
    pending, running, started = list(cfg.variants), {}, {}
    while pending or running:
        while pending and len(running) < cfg.jobs:
            name = pending.pop(0)
            started[name] = time.time()
            running[name] = _launch(cfg, data, runs, name)
        time.sleep(2)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode != 0:
                    raise SystemExit(f"error: variant {name} failed (log: {runs / (name + '.log')})")
                print(f"{name}: trained in {time.time() - started[name]:.0f} s", flush=True)
    return started


def _score_run(config: Path, started: float) -> Dict:
    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    curve = []
    for path in checkpoints_in(config.parent / "nerfstudio_models", CKPT_SUFFIX):
        state = torch.load(path, map_location=pipeline.device, weights_only=True)
        pipeline.load_pipeline(state["pipeline"], state["step"])
        metrics = evaluate_heldout(pipeline)
        curve.append({"step": int(state["step"]) + 1, "wall_time_s": round(path.stat().st_mtime - started, 1),
                      "psnr": metrics["full_frame"]["psnr"], "face_box_psnr": metrics["face_box"]["psnr"]})
        print(f"  {config.parent.parent.parent.name} step {curve[-1]['step']}: {curve[-1]['psnr']:.2f} dB", flush=True)
    return {"curve": curve, "heldout": metrics, "expression_gain": expression_gain(pipeline)}


def _time_to(curve: List[Dict], psnr: float) -> Optional[float]:
    """Wall time of the first scored checkpoint at or above ``psnr`` (None if never reached)."""
    return next((point["wall_time_s"] for point in curve if point["psnr"] >= psnr), None)


def main() -> None:
    cfg = tyro.cli(BenchQuality)
    unknown = [name for name in cfg.variants if name not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(cfg.work_dir) if cfg.work_dir is not None else Path(tmp)
        runs = work / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        data = make_dataset(work / "data", identity=cfg.identity, num_frames=cfg.num_frames,
                            resolution=cfg.resolution, eval_fraction=0.15, seed=cfg.seed, overwrite=True)
        started = _train_all(cfg, data, runs)
        results = {name: _score_run(runs / name / cfg.method / "run" / "config.yml", started[name])
                   for name in cfg.variants}
    reference = cfg.variants[-1]
    target = results[reference]["curve"][-1]["psnr"]
    ref_time = results[reference]["curve"][-1]["wall_time_s"]
    for r in results.values():
        reached = _time_to(r["curve"], target)
        r[f"vs_{reference}"] = {
            "psnr_delta_db": r["curve"][-1]["psnr"] - target,
            "time_to_reference_psnr_s": reached,
            "time_to_reference_psnr_ratio": None if reached is None else round(reached / ref_time, 3),
        }
    device = torch.cuda.get_device_name() if cfg.device == "cuda" else \
        f"cpu ({platform.processor() or 'x86_64'}, {cfg.threads} threads per run, {cfg.jobs} runs at a time)"
    report = {
        "config": {k: str(v) for k, v in asdict(cfg).items() if k != "work_dir"},
        "device": device,
        "variants": {name: VARIANTS[name] for name in cfg.variants},
        "results": results,
    }
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=2))
    print(json.dumps({name: {"final_psnr": r["curve"][-1]["psnr"], **r[f"vs_{reference}"],
                             "expression_gain": r["expression_gain"]} for name, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
