"""Speed and memory benchmark: the paper-faithful configuration against each speed lever and all of them.

    python scripts/bench_speed.py                       # CPU: reduced resolution (128^2 output)
    python scripts/bench_speed.py --device cuda --resolution 512

Every variant is the paper's networks (``latentavatar``: tri-plane 3x32x256^2, SR x4) at the
given output resolution, run in its own process (so peak memory is its own), on the same synthetic
frames. Writes ``bench/speed.json``: seconds per training step at batch 2; rendered frames per
second with a fixed expression (tri-plane cached) and with a new expression every frame
(generator included); peak memory; each also as a ratio to ``paper`` measured in the same run.

Also the floor of one rendered frame on this device: the larger of its FLOPs over the measured
matmul rate and the bytes it must move over the measured copy rate, and how many times slower
each render is than its floor. The bytes are what no implementation can avoid: the weights the
frame runs, the tri-plane read (and, for a new expression, written), and the image written;
intermediate activations are left out, as a fused kernel could keep them on chip.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import tyro

# name -> config overrides on top of the paper configuration (the model's, or the trainer's where it has the field)
VARIANTS: Dict[str, Dict] = {
    "paper": {},
    "glibc_heap": {"cpu_heap_threshold_mib": 0},  # glibc's default mmap thresholds; CPU only
    "proposal": {"sampler": "proposal"},
    "patch": {"train_patch_size": "half"},
    "bf16_render": {"inference_dtype": "bfloat16"},
    "compiled": {"compile_networks": True},
    "all": {"sampler": "proposal", "train_patch_size": "half", "inference_dtype": "bfloat16"},
}
CPU_ONLY = ("glibc_heap",)


@dataclass
class BenchSpeed:
    variants: Optional[List[str]] = None
    """Variants to measure; the first is the reference of the ratios. Default: all (but the CPU-only ones on cuda)."""
    device: str = "cpu"
    """cpu or cuda."""
    resolution: int = 128
    """Output side in pixels (512 is the paper's; the CPU default renders 32^2 rays and super-resolves x4)."""
    train_steps: int = 6
    """Timed training steps per variant (after 2 warm-up steps)."""
    frames: int = 8
    """Timed rendered frames per measurement (after 1 warm-up frame)."""
    output: Path = Path("bench/speed.json")
    quality_config: Optional[Path] = None
    """A trained run's config.yml: also score its held-out frames rendered in float32 and in bfloat16."""
    variant: Optional[str] = None
    """Internal: measure this one variant in this process and print its JSON."""
    data: Optional[Path] = None
    """Internal: the shared synthetic dataset."""


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, count: int, device: str) -> float:
    times = []
    for _ in range(count):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _best_time(fn, count: int, device: str) -> float:
    """Fastest of ``count`` runs after one warm-up: a device's rate is its best, not its typical."""
    fn()
    return min(_median_time(fn, 1, device) for _ in range(count))


def _matmul_rate(device: str, dtype: torch.dtype) -> float:
    """Measured dense matmul FLOP/s of this device (the floor's compute denominator)."""
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _best_time(lambda: a @ b, 10, device)


def _copy_rate(device: str) -> float:
    """Measured bytes/s of a large on-device copy, counting bytes read and written (the floor's memory denominator)."""
    n = (1 << 28) if device == "cuda" else (1 << 25)  # 1 GiB on a GPU, 128 MiB on a CPU: far beyond any cache
    src = torch.empty(n // 4, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    return 2 * n / _best_time(lambda: dst.copy_(src), 10, device)


def _frame_bytes(model, planes_bytes: int, image_bytes: int, new_expression: bool) -> int:
    """Bytes one frame cannot avoid moving: weights it runs, the tri-plane, the image (see the module docstring)."""
    render_modules = [model.field, model.renderer, model.superres]
    expression_modules = [model.encoder, model.mapping, model.generator] if new_expression else []
    weights = sum(t.numel() * t.element_size() for m in render_modules + expression_modules
                  for t in list(m.parameters()) + list(m.buffers()))
    return weights + planes_bytes * (2 if new_expression else 1) + image_bytes


def measure(cfg: BenchSpeed) -> Dict:
    from torch.utils.flop_counter import FlopCounterMode

    from latentavatar_ns.method.configs import paper_config

    assert cfg.variant is not None and cfg.data is not None
    torch.manual_seed(0)
    config = paper_config()
    config.pipeline.datamanager.data = cfg.data
    config.machine.device_type = cfg.device
    config.vis = "tensorboard"
    config.pipeline.model.lpips_loss_weight = 0.0 if cfg.device == "cpu" else config.pipeline.model.lpips_loss_weight
    for key, value in VARIANTS[cfg.variant].items():
        if value == "half":
            value = cfg.resolution // config.pipeline.model.sr_scale // 2
        setattr(config if hasattr(config, key) else config.pipeline.model, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        config.output_dir = Path(tmp)
        config.set_timestamp()
        trainer = config.setup()
        trainer.setup()
        if cfg.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        step = iter(range(10**9))
        for _ in range(2):
            trainer.train_iteration(next(step))
        train_s = _median_time(lambda: trainer.train_iteration(next(step)), cfg.train_steps, cfg.device)
        train_peak = (torch.cuda.max_memory_allocated() / 2**20 if cfg.device == "cuda"
                      else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

        model = trainer.pipeline.model
        model.eval()
        cameras = trainer.pipeline.datamanager.train_dataset.cameras
        n = len(cameras)
        with torch.no_grad():
            fixed = cameras[0:1]
            model.get_outputs_for_camera(fixed)
            fixed_s = _median_time(lambda: model.get_outputs_for_camera(fixed), cfg.frames, cfg.device)
            order = iter(range(10**9))

            def new_expression():
                # Frames a short run never trained on share one stored code: drop the cache so that
                # every frame really runs the generator, whatever the codes.
                model.clear_plane_cache()
                i = next(order) % n
                model.get_outputs_for_camera(cameras[i:i + 1])

            new_expression()
            changing_s = _median_time(new_expression, cfg.frames, cfg.device)
            model.get_outputs_for_camera(fixed)  # caches its tri-plane
            with FlopCounterMode(display=False) as counter:
                model.get_outputs_for_camera(fixed)
            fixed_flops = counter.get_total_flops()
            with FlopCounterMode(display=False) as counter:
                model.clear_plane_cache()
                out = model.get_outputs_for_camera(cameras[1:2])
            flops = counter.get_total_flops()
        # Renders keep the tri-plane in the inference precision; the image is written in float32.
        generator = model.generator
        planes_bytes = 3 * generator.plane_channels * generator.resolution**2 * (
            4 if model.config.inference_dtype == "float32" else 2)
        image_bytes = out["rgb"].numel() * 4
        render_peak = (torch.cuda.max_memory_allocated() / 2**20 if cfg.device == "cuda"
                       else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result = {
        "train_step_s": train_s,
        "render_fixed_expression_fps": 1.0 / fixed_s,
        "render_new_expression_fps": 1.0 / changing_s,
        "frame_gflop": flops / 1e9,
        "fixed_frame_gflop": fixed_flops / 1e9,
        "peak_memory_mib": round(max(train_peak, render_peak), 1),
        "memory_kind": ("cuda max allocated" if cfg.device == "cuda"
                        else f"process peak RSS (baseline {rss_before:.0f})"),
        "field_evals_per_ray": float(model.get_outputs(cameras[0:1])["field_evals_per_ray"]),
    }
    dtype = torch.bfloat16 if VARIANTS[cfg.variant].get("inference_dtype") == "bfloat16" else torch.float32
    rate, copy = _matmul_rate(cfg.device, dtype), _copy_rate(cfg.device)
    result["matmul_tflops"] = rate / 1e12
    result["copy_gb_per_s"] = copy / 1e9
    for name, frame_flops, seconds, new in (("fixed_expression", fixed_flops, fixed_s, False),
                                            ("new_expression", flops, changing_s, True)):
        frame_bytes = _frame_bytes(model, planes_bytes, image_bytes, new)
        floor = max(frame_flops / rate, frame_bytes / copy)
        result[f"{name}_floor"] = {"mbytes": frame_bytes / 1e6, "floor_s": floor,
                                   "bound": "compute" if frame_flops / rate >= frame_bytes / copy else "memory",
                                   "measured_over_floor": seconds / floor}
    return result


def render_precision_quality(config_path: Path) -> Dict:
    """Held-out PSNR/SSIM/LPIPS of one trained avatar rendered in float32 and in bfloat16."""
    from nerfstudio.utils.eval_utils import eval_setup

    from latentavatar_ns.evaluation.metrics import ImageMetrics, evaluate_heldout

    config, pipeline, _, step = eval_setup(config_path, test_mode="test")
    metrics = ImageMetrics(lpips_nets=("vgg",))
    data = Path(config.data or "").name or "its data"
    scores = {"avatar": f"{config.method_name} trained {step + 1} steps on {data}"}
    for dtype in ("float32", "bfloat16"):
        pipeline.model.config.inference_dtype = dtype
        pipeline.model.clear_plane_cache()
        scores[dtype] = evaluate_heldout(pipeline, metrics)
    return scores


def main() -> None:
    cfg = tyro.cli(BenchSpeed)
    if cfg.variants is None:
        cfg.variants = [v for v in VARIANTS if cfg.device == "cpu" or v not in CPU_ONLY]
    if cfg.variant is not None:
        print("RESULT " + json.dumps(measure(cfg)), flush=True)
        return
    if not cfg.variants:
        raise SystemExit("error: --variants names no variant to measure")
    from latentavatar_ns.synthetic import make_dataset

    results: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", identity=0, num_frames=12, resolution=cfg.resolution,
                            eval_fraction=0.2, seed=0, progress=False)
        for name in cfg.variants:
            cmd = [sys.executable, __file__, "--variant", name, "--data", str(data), "--device", cfg.device,
                   "--resolution", str(cfg.resolution), "--train-steps", str(cfg.train_steps),
                   "--frames", str(cfg.frames)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                raise SystemExit(f"error: variant {name} failed:\n{proc.stderr[-3000:]}")
            results[name] = json.loads(lines[-1][len("RESULT "):])
            print(name, json.dumps(results[name]), flush=True)
            report = _report(cfg, results)  # after every variant: a run cut short keeps what it measured
    if cfg.quality_config is not None:
        report["render_precision_quality"] = render_precision_quality(cfg.quality_config)
        cfg.output.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v["vs_" + cfg.variants[0]] for k, v in results.items()}, indent=2))


def _report(cfg: BenchSpeed, results: Dict[str, Dict]) -> Dict:
    """Write ``cfg.output`` with the variants measured so far, each against the first; ``not_measured`` lists the
    rest."""
    assert cfg.variants is not None
    ref = results[cfg.variants[0]]
    for r in results.values():
        r["vs_" + cfg.variants[0]] = {
            "train_step_speedup": ref["train_step_s"] / r["train_step_s"],
            "fixed_expression_speedup": r["render_fixed_expression_fps"] / ref["render_fixed_expression_fps"],
            "new_expression_speedup": r["render_new_expression_fps"] / ref["render_new_expression_fps"],
            "peak_memory_ratio": r["peak_memory_mib"] / ref["peak_memory_mib"],
        }
    device = (torch.cuda.get_device_name() if cfg.device == "cuda"
              else f"cpu ({platform.machine()}, {os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())} threads)")
    report = {"config": {k: str(v) for k, v in asdict(cfg).items() if k not in ("variant", "data", "quality_config")},
              "device": device, "variants": {k: VARIANTS[k] for k in cfg.variants}, "results": results,
              "not_measured": [name for name in cfg.variants if name not in results]}
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
