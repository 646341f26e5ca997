"""The steps of ``scripts/gpu_check.sh`` that need code of their own; each writes one JSON file.

    python scripts/gpu_check.py preflight --mode gpu|cpu
    python scripts/gpu_check.py train --data DIR --runs DIR --out train.json [--steps 200] [--cpu]
    python scripts/gpu_check.py speed-tiny [bench_speed.py's arguments]
    python scripts/gpu_check.py console ns-latentavatar-synth [its arguments]
    python scripts/gpu_check.py samplers --data DIR --runs DIR --out samplers.json [--cpu]
    python scripts/gpu_check.py nerfacc --out nerfacc.json [--cpu]
    python scripts/gpu_check.py time-to-psnr --data DIR --runs DIR --out time_to_psnr.json [--cpu]
    python scripts/gpu_check.py summary --out DIR --mode gpu|cpu

Without ``--cpu`` each step runs on CUDA at the paper's size (``ns-train latentavatar``, 512^2 data);
with it, at ``latentavatar-tiny``'s size on the CPU, which checks the steps themselves in a few minutes.
``summary`` reads the other steps' files and imports no torch unless it is there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

SCRIPTS = Path(__file__).resolve().parent

# What the README's "Speed and memory" asks of the default (`ns-train latentavatar`) at 512^2 on a GPU.
TARGETS = {
    "fixed_expression_fps": 200.0,
    "new_expression_fps": 60.0,
    "speedup_over_paper": 5.0,
    "peak_memory_gb": 12.0,
}


def _write(path: str, data: Dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _device_name(device: str) -> str:
    import platform

    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _peak_memory_gb(device: str) -> Dict:
    """Peak memory so far: CUDA's allocated bytes (what the targets mean), or the process's peak RSS on a CPU."""
    import resource

    import torch

    if device == "cuda":
        return {"peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9,
                "peak_reserved_gb": torch.cuda.max_memory_reserved() / 1e9, "memory_kind": "cuda max allocated"}
    return {"peak_memory_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "memory_kind": "process peak RSS"}


def cmd_console(argv: List[str]) -> None:
    """Run one of this environment's console scripts (``ns-latentavatar-synth`` ...) by its entry point.

    The same on a GPU node, where the kit's scripts lie in a temporary folder, as in a virtualenv.
    """
    from importlib.metadata import entry_points

    found = list(entry_points(group="console_scripts", name=argv[0]))
    if not found:
        raise SystemExit(f"error: no console script {argv[0]!r} is installed")
    sys.argv = argv
    sys.exit(found[0].load()())


def _method(name: str):
    """The ``MethodSpecification`` of an ``ns-train`` method, found as nerfstudio finds it (entry points)."""
    from importlib.metadata import entry_points

    return next(iter(entry_points(group="nerfstudio.method_configs", name=name))).load()


def _configs_module():
    """The module that defines the methods (``paper_config``, ``default_config``, ``tiny_config``)."""
    import importlib
    from importlib.metadata import entry_points

    return importlib.import_module(next(iter(entry_points(group="nerfstudio.method_configs",
                                                           name="latentavatar"))).module)


def _import_script(name: str):
    """A benchmark of scripts/ as a module, to reuse its functions."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return __import__(name)


def _lpips_loss(model) -> str:
    cfg = model.config
    if cfg.lpips_loss_weight <= 0:
        return "off"
    return cfg.lpips_loss_net if model.lpips_loss is not None else f"off ({cfg.lpips_loss_net} weights not fetched)"


# ------------------------------------------------------------------------------------------- preflight


def cmd_preflight(args: argparse.Namespace) -> None:
    """What every step needs: PyTorch (with CUDA unless --mode cpu), the project's entry points, its code."""
    from importlib.metadata import entry_points

    try:
        import torch
    except Exception as err:
        raise SystemExit(f"PyTorch does not import: {err}")
    if args.mode == "gpu" and not torch.cuda.is_available():
        raise SystemExit(f"no CUDA device visible to PyTorch {torch.__version__} (--cpu runs the CPU mode)")
    for group, name in (("nerfstudio.method_configs", "latentavatar"), ("console_scripts", "ns-latentavatar-synth")):
        found = list(entry_points(group=group, name=name))
        if not found:
            raise SystemExit(f"'{name}' is not registered ({group}): run make gpu-kit again, or pip install -e . here")
        if group == "console_scripts":  # a light module; the method's is loaded by the steps that train
            try:
                found[0].load()
            except Exception as err:
                raise SystemExit(f"'{name}' does not load ({type(err).__name__}: {err}); "
                                 "if the code moved since the kit was made, run make gpu-kit again")
    package = Path(sys.modules[found[0].module.split(".")[0]].__file__).resolve().parent
    if package.parent != SCRIPTS.parent:
        print(f"note: the code checked is {package}, not this repository's")
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")


# ----------------------------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> None:
    """A real ``ns-train`` run (nerfstudio's command line, in this process), with each step timed."""
    import torch
    from nerfstudio.scripts import train as ns_train

    device = "cpu" if args.cpu else "cuda"
    method = "latentavatar-tiny" if args.cpu else "latentavatar"
    trainer_class = _method(method).config._target  # the class ns-train will make
    times: List[float] = []
    losses: List[float] = []
    seen: Dict = {}
    original = trainer_class.train_iteration

    def timed(self, step):
        _sync(device)
        start = time.perf_counter()
        out = original(self, step)
        _sync(device)
        times.append(time.perf_counter() - start)
        losses.append(float(out[0]))
        seen.setdefault("trainer", self)
        return out

    trainer_class.train_iteration = timed
    sys.argv = ["ns-train", method, "--data", args.data, "--output-dir", args.runs, "--vis", "tensorboard",
                "--machine.device-type", device, "--max-num-iterations", str(args.steps),
                "--steps-per-eval-batch", "0", "--steps-per-eval-image", "0", "--steps-per-eval-all-images", "0"]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    ns_train.entrypoint()
    wall = time.time() - start
    if len(times) != args.steps:
        raise SystemExit(f"error: ns-train ran {len(times)} steps, not {args.steps}")
    trainer = seen["trainer"]
    cameras = trainer.pipeline.datamanager.train_dataset.cameras
    skip = min(20, len(times) // 4)  # warm-up: allocator, cuDNN's algorithm search
    steady = sorted(times[skip:])
    median = steady[len(steady) // 2]
    _write(args.out, {
        "command": " ".join(sys.argv),
        "device": _device_name(device),
        "steps": len(times),
        "resolution": [int(cameras.height[0]), int(cameras.width[0])],
        "images_per_batch": trainer.config.pipeline.datamanager.images_per_batch,
        "sampler": trainer.pipeline.model.config.sampler,
        "lpips_loss": _lpips_loss(trainer.pipeline.model),
        "step_s_median": median,
        "step_s_mean": sum(steady) / len(steady),
        "steps_per_s": 1.0 / median,
        "warmup_steps_left_out": skip,
        "first_step_s": times[0],
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "wall_s": wall,
        **_peak_memory_gb(device),
    })


# ------------------------------------------------------------------------------------------ speed-tiny


def cmd_speed_tiny(argv: List[str]) -> None:
    """scripts/bench_speed.py with latentavatar-tiny's networks in place of the paper's (the CPU mode).

    bench_speed measures ``paper_config()``'s networks, ten seconds a step on a CPU. Here the
    configs module hands it ``tiny_config()`` instead; bench_speed runs each variant as
    ``python bench_speed.py --variant ...``, so those processes are started through this file too.
    """
    import runpy
    import subprocess

    configs = _configs_module()
    paper_config = configs.paper_config
    calls = []

    def tiny_networks():  # tiny_config() starts from paper_config(): the real one, while it runs
        calls.append(1)
        configs.paper_config = paper_config
        try:
            return configs.tiny_config()
        finally:
            configs.paper_config = tiny_networks

    configs.paper_config = tiny_networks
    bench = SCRIPTS / "bench_speed.py"
    run = subprocess.run

    def run_through_here(cmd, *a, **kw):
        if isinstance(cmd, list) and len(cmd) > 1 and Path(cmd[1]).resolve() == bench:
            cmd = [cmd[0], str(Path(__file__).resolve()), "speed-tiny", *cmd[2:]]
        return run(cmd, *a, **kw)

    subprocess.run = run_through_here
    sys.argv = [str(bench), *argv]
    runpy.run_path(str(bench), run_name="__main__")
    if "--variant" in argv and not calls:
        raise SystemExit(f"error: bench_speed.py no longer takes its networks from {configs.__name__}.paper_config: "
                         "speed-tiny measured the paper's")
    if "--variant" not in argv and "--output" in argv:  # the report: say which networks it measured
        output = Path(argv[argv.index("--output") + 1])
        report = json.loads(output.read_text())
        report["networks"] = "latentavatar-tiny's, in place of the paper's (scripts/gpu_check.py speed-tiny)"
        output.write_text(json.dumps(report, indent=2))


# -------------------------------------------------------------------------------------------- samplers


def cmd_samplers(args: argparse.Namespace) -> None:
    """Each sampler trained briefly on the shared data: step and frame times, field evaluations, PSNR, memory."""
    import gc

    import torch

    bench = _import_script("bench_sampling")
    device = "cpu" if args.cpu else "cuda"
    cfg = bench.BenchSampling(method="latentavatar-tiny" if args.cpu else "latentavatar",
                              iterations=args.iterations, device=device, output=Path(args.out))
    metrics = bench.ImageMetrics(lpips_nets=())  # PSNR and SSIM: no LPIPS weights needed
    results: Dict[str, Dict] = {}
    for sampler in ("uniform", "proposal", "occupancy"):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.time()
        # A folder of its own that outlives the run: nerfstudio's event writers stay open after it.
        trainer = bench.train(cfg, Path(args.data), sampler, Path(args.runs) / f"sampler_{sampler}")
        wall = time.time() - start
        results[sampler] = {
            "train_iterations": args.iterations,
            "train_wall_time_s": wall,
            "train": bench.train_step_time(trainer, steps=args.timed_steps),
            "render": bench.render_speed(trainer, device),
            "heldout_psnr": bench.evaluate_heldout(trainer.pipeline, metrics)["full_frame"]["psnr"],
            **_peak_memory_gb(device),
        }
        print(sampler, json.dumps(results[sampler]), flush=True)
        del trainer
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    ref = results["uniform"]
    for r in results.values():
        r["vs_uniform"] = {
            "train_step_time_ratio": r["train"]["s_per_step"] / ref["train"]["s_per_step"],
            "render_time_ratio": r["render"]["s_per_frame"] / ref["render"]["s_per_frame"],
            "field_evals_ratio_render": r["render"]["field_evals_per_ray"] / ref["render"]["field_evals_per_ray"],
        }
    _write(args.out, {"device": _device_name(device), "method": cfg.method, "data": Path(args.data).name,
                      "results": results})


# --------------------------------------------------------------------------------------------- nerfacc


# nvcc includes this header first in nerfacc's sources, for two things that stop nerfacc 0.5.2's build with
# CUDA 13 and a PyTorch that compiles extensions as C++20: it scans by key with cub::Equality, which CUB 3
# no longer has; and its lerp() clashes with C++20's std::lerp, which <math.h> also puts in the global
# namespace (nerfacc's is renamed, once the standard headers have declared theirs).
NERFACC_SHIM = """#pragma once
#include <cub/version.cuh>
#if CUB_VERSION >= 300000
#include <cuda/std/functional>
namespace cub { using Equality = ::cuda::std::equal_to<>; }
#endif
#if __cplusplus >= 202002L
#include <cmath>
#include <math.h>
#define lerp nerfacc_lerp
#endif
"""


def _cublas_headers() -> Optional[str]:
    """Where a CUDA toolkit without cuBLAS's headers (torch's include cublas_v2.h) can take them: PyTorch's own
    nvidia-* packages, put on CPATH. None when the toolkit has them or nothing is found."""
    import glob
    import importlib.util

    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None or (Path(CUDA_HOME) / "include" / "cublas_v2.h").exists():
        return None
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for header in sorted(glob.glob(os.path.join(root, "*", "include", "cublas_v2.h"))):
            folder = os.path.dirname(header)
            os.environ["CPATH"] = folder + (os.pathsep + os.environ["CPATH"] if os.environ.get("CPATH") else "")
            return folder
    return None


def cmd_nerfacc(args: argparse.Namespace) -> None:
    """nerfacc's occupancy-grid estimator on a sphere: its CUDA kernels build, load, and sample where they should.

    The grid is updated from a ball's occupancy; rays from a camera in front of it must get samples
    only near the ball, none when they miss it. The first sampling call builds nerfacc's CUDA
    extension (nvcc and ninja; a minute or so) unless torch's extension cache has it. nerfacc's
    sampling kernels exist only for CUDA: on the CPU only the grid update (plain torch) is checked.
    """
    import tempfile

    import nerfacc
    import torch

    device = "cpu" if args.cpu else "cuda"
    resolution, radius = 64, 0.5
    estimator = nerfacc.OccGridEstimator(roi_aabb=[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], resolution=resolution)
    estimator = estimator.to(device).train()
    torch.manual_seed(0)
    for step in range(4):
        estimator.update_every_n_steps(step, lambda x: (x.norm(dim=-1, keepdim=True) < radius).float(), n=1)
    occupied = float(estimator.binaries.float().mean())
    ball = 4 / 3 * math.pi * radius**3 / 8
    result: Dict = {"nerfacc": nerfacc.__version__, "device": _device_name(device), "grid_resolution": resolution,
                    "occupied_fraction": occupied, "ball_fraction": ball}
    problems = []
    if not 0.8 * ball <= occupied <= 1.6 * ball:
        problems.append(f"occupied fraction {occupied:.3f}, the ball fills {ball:.3f}")
    if device == "cpu":
        result["sampling"] = "not run: nerfacc's sampling kernels are CUDA only"
    else:
        n = 1 << 16
        target = torch.rand(n, 3, device=device) * 1.6 - 0.8
        target[:, 2] = 0.0
        origins = torch.tensor([0.0, 0.0, 3.0], device=device).expand(n, 3).contiguous()
        dirs = torch.nn.functional.normalize(target - origins, dim=-1)
        step_size = 2.0 / 256

        def sample():
            return estimator.sampling(origins, dirs, render_step_size=step_size, near_plane=0.0, far_plane=10.0)

        with tempfile.TemporaryDirectory() as tmp:
            shim = Path(tmp) / "nerfacc_shim.h"
            shim.write_text(NERFACC_SHIM)
            os.environ["NVCC_PREPEND_FLAGS"] = f"-include {shim} " + os.environ.get("NVCC_PREPEND_FLAGS", "")
            result["cpath_added"] = _cublas_headers()
            start = time.perf_counter()
            ray_indices, t_starts, t_ends = sample()  # builds the extension, or loads a cached build
            torch.cuda.synchronize()
            first = time.perf_counter() - start
        times = []
        for _ in range(10):
            torch.cuda.synchronize()
            start = time.perf_counter()
            sample()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        mids = origins[ray_indices] + dirs[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
        counts = torch.bincount(ray_indices.long(), minlength=n)
        miss = torch.linalg.cross(origins, dirs).norm(dim=-1) > radius + 4 / resolution  # distance to the centre
        cell = 2 * math.sqrt(3) / resolution
        result.update({
            "first_call_s": first,
            "sampling_s_median": sorted(times)[len(times) // 2],
            "rays": n,
            "samples_per_ray": float(counts.float().mean()),
            "max_sample_radius": float(mids.norm(dim=-1).max()) if len(mids) else None,
            "samples_on_missing_rays": int(counts[miss].sum()),
        })
        if not len(mids):
            problems.append("no samples")
        elif result["max_sample_radius"] > radius + cell + step_size:
            problems.append(f"a sample at radius {result['max_sample_radius']:.3f}, outside the ball's cells")
        if result["samples_on_missing_rays"]:
            problems.append("rays that miss the ball got samples")
    result["problems"] = problems
    _write(args.out, result)
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------- time-to-psnr


def _variants(cpu: bool) -> Dict[str, Callable]:
    """The paper's configuration and the default; on the CPU, latentavatar-tiny without and with region losses.

    The CPU pair only checks the step: the default's proposal sampler costs seconds a step on a CPU
    at this size, where the tiny avatar keeps the uniform one.
    """
    configs = _configs_module()
    if not cpu:
        return {"paper": configs.paper_config, "default": configs.default_config}

    def tiny_paper():
        config = configs.tiny_config()
        model = config.pipeline.model
        model.face_loss_weight = model.mouth_loss_weight = model.eye_loss_weight = 0.0
        model.mask_loss_weight = 0.1
        return config

    return {"paper": tiny_paper, "default": configs.tiny_config}


# How each variant is asked for on the command line.
_NO_REGIONS = ("--pipeline.model.face-loss-weight 0 --pipeline.model.mouth-loss-weight 0 "
               "--pipeline.model.eye-loss-weight 0 --pipeline.model.mask-loss-weight 0.1")
HOW = {
    False: {"paper": f"ns-train latentavatar --pipeline.model.sampler uniform {_NO_REGIONS} --lr-final-factor 1",
            "default": "ns-train latentavatar"},
    True: {"paper": f"ns-train latentavatar-tiny {_NO_REGIONS}", "default": "ns-train latentavatar-tiny"},
}


def _time_to_reach(curve: List[Dict], psnr: float) -> Optional[float]:
    """Training seconds at which a curve first reaches ``psnr`` (linear between its points), or None."""
    previous = {"train_s": 0.0, "psnr": -math.inf}
    for point in curve:
        if point["psnr"] >= psnr:
            if previous["psnr"] == -math.inf:
                return point["train_s"]
            f = (psnr - previous["psnr"]) / (point["psnr"] - previous["psnr"])
            return previous["train_s"] + f * (point["train_s"] - previous["train_s"])
        previous = point
    return None


def cmd_time_to_psnr(args: argparse.Namespace) -> None:
    """The paper's configuration and the default trained for the same seconds on the same data, scored as they go."""
    import gc

    import torch

    bench = _import_script("bench_sampling")  # the held-out scoring, as the sampling benchmark does it
    device = "cpu" if args.cpu else "cuda"
    metrics = bench.ImageMetrics(lpips_nets=())
    runs: Dict[str, Dict] = {}
    for name, make in _variants(args.cpu).items():
        torch.manual_seed(0)
        config = make()
        config.pipeline.datamanager.data = Path(args.data)
        config.machine.device_type = device
        config.vis = "tensorboard"
        config.max_num_iterations = 10**9
        config.output_dir = Path(args.runs) / f"time_to_psnr_{name}"
        config.set_timestamp()
        trainer = config.setup()
        trainer.setup()
        trainer.pipeline.train()
        # A few steps off the clock for each: one-off costs (CUDA's kernels loading, cuDNN's search)
        # would otherwise fall on whichever configuration runs first.
        for step in range(args.warmup):
            trainer.train_iteration(step)
        clock, step, curve = 0.0, args.warmup, []
        for i in range(1, args.points + 1):
            while clock < args.budget * i / args.points:
                _sync(device)
                start = time.perf_counter()
                trainer.train_iteration(step)
                _sync(device)
                clock += time.perf_counter() - start
                step += 1
            psnr = bench.evaluate_heldout(trainer.pipeline, metrics)["full_frame"]["psnr"]
            trainer.pipeline.train()
            curve.append({"train_s": clock, "step": step, "psnr": psnr})
        runs[name] = {"how": HOW[args.cpu][name], "sampler": config.pipeline.model.sampler,
                      "lpips_loss": _lpips_loss(trainer.pipeline.model), "steps": step,
                      "warmup_steps_off_the_clock": args.warmup, "steps_per_s": (step - args.warmup) / clock,
                      "final_psnr": curve[-1]["psnr"], "curve": curve}
        print(name, json.dumps(runs[name]), flush=True)
        del trainer
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    paper, default = runs["paper"], runs["default"]
    reach = _time_to_reach(default["curve"], paper["final_psnr"])
    comparison = {
        "step_rate_ratio": default["steps_per_s"] / paper["steps_per_s"],
        "paper_final_psnr": paper["final_psnr"],
        "default_seconds_to_paper_psnr": reach,
        "time_ratio": paper["curve"][-1]["train_s"] / reach if reach else None,
    }
    target = TARGETS["speedup_over_paper"]
    comparison["meets_target"] = comparison["step_rate_ratio"] >= target or (reach is not None
                                                                             and comparison["time_ratio"] >= target)
    _write(args.out, {"device": _device_name(device), "data": Path(args.data).name, "budget_s_each": args.budget,
                      "size": "latentavatar-tiny" if args.cpu else "paper", "runs": runs, "comparison": comparison})


# --------------------------------------------------------------------------------------------- summary


def _read_json(path: Path) -> Optional[Dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _junit_counts(path: Path) -> Optional[Dict]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    counts["skipped_tests"] = [f"{case.get('classname')}::{case.get('name')}: {skip.get('message', '')}"
                               for suite in suites for case in suite.iter("testcase") for skip in case.iter("skipped")]
    return counts


def _environment() -> Dict:
    env: Dict = {"python": sys.version.split()[0]}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception as err:  # a broken torch is itself a finding
        env["torch"] = f"not importable: {err}"
    return env


def _targets(out: Path) -> Dict:
    """The README's GPU targets against this run's numbers (measured by the default configuration)."""
    speed = _read_json(out / "speed_cuda.json") or {}
    default = speed.get("results", {}).get("proposal", {})  # the default's sampler on the paper's networks
    train = _read_json(out / "train.json") or {}
    ttp = (_read_json(out / "time_to_psnr.json") or {}).get("comparison", {})

    def row(value, target, at_least: bool, source: str) -> Dict:
        met = None if value is None else (value >= target if at_least else value <= target)
        return {"value": value, "target": ("≥ " if at_least else "≤ ") + f"{target:g}", "met": met, "from": source}

    speedup = TARGETS["speedup_over_paper"]
    return {
        "fixed_expression_fps": row(default.get("render_fixed_expression_fps"), TARGETS["fixed_expression_fps"],
                                    True, "speed_cuda.json, variant proposal"),
        "new_expression_fps": row(default.get("render_new_expression_fps"), TARGETS["new_expression_fps"],
                                  True, "speed_cuda.json, variant proposal"),
        "training_vs_paper": {
            "value": {"step_rate_ratio": ttp.get("step_rate_ratio"), "time_ratio": ttp.get("time_ratio")},
            "target": f"step rate ≥ {speedup:g}× the paper configuration's, "
                      f"or its PSNR in ≤ 1/{speedup:g} of its time",
            "met": ttp.get("meets_target"), "from": "time_to_psnr.json"},
        "peak_memory_gb_batch_2": row(train.get("peak_memory_gb"), TARGETS["peak_memory_gb"], False,
                                      "train.json (torch.cuda.max_memory_allocated)"),
    }


def cmd_summary(args: argparse.Namespace) -> None:
    out = Path(args.out)
    steps = []
    table = out / "logs" / "steps.tsv"
    for line in (table.read_text().splitlines() if table.exists() else []):
        name, status, seconds, limit, rc, outputs = (line.split("\t") + [""] * 6)[:6]
        promised = [o for o in outputs.split(",") if o]
        step = {"name": name, "status": status, "seconds": float(seconds), "limit_s": int(limit), "exit_code": int(rc),
                "log": f"logs/{name}.log", "outputs": [o for o in promised if (out / o).exists()],
                "missing_outputs": [o for o in promised if not (out / o).exists()]}
        if name == "cuda_tests":
            step["tests"] = _junit_counts(out / "cuda_tests.xml")
        steps.append(step)
    notes = [line for line in args.note if line]
    lpips = (_read_json(out / "train.json") or {}).get("lpips_loss", "")
    if lpips.startswith("off ("):
        notes.append(f"the LPIPS loss was {lpips}: step times and memory leave it out "
                     "(make gpu-kit GPU_KIT_LPIPS=1, or set LATENTAVATAR_CACHE)")
    summary = {
        "mode": args.mode,
        "ok": bool(steps) and all(s["status"] == "ok" for s in steps) and not args.stopped,
        "stopped": args.stopped,
        "seconds": sum(s["seconds"] for s in steps),
        "limit_s": sum(s["limit_s"] for s in steps),
        "notes": notes,
        "environment": _environment(),
        "steps": steps,
    }
    if args.mode == "gpu":
        summary["targets"] = _targets(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    verdict = f"STOPPED: {args.stopped}" if args.stopped else "all steps ok" if summary["ok"] else "SOME STEPS FAILED"
    lines = [f"gpu_check ({args.mode} mode): {verdict}, {summary['seconds']:.0f} s of {summary['limit_s']} s allowed",
             f"{'step':<14}{'status':<9}{'seconds':>8}{'limit':>7}  outputs"]
    for s in steps:
        files = " ".join(s["outputs"] + [f"({o} missing)" for o in s["missing_outputs"]])
        lines.append(f"{s['name']:<14}{s['status']:<9}{s['seconds']:>8.1f}{s['limit_s']:>7}  {files}")
    lines += [f"note: {n}" for n in summary["notes"]]
    for name, t in summary.get("targets", {}).items():
        values = t["value"] if isinstance(t["value"], dict) else {"": t["value"]}
        value = ", ".join(f"{k} {'n/a' if v is None else f'{v:.3g}'}".strip() for k, v in values.items())
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"target {name}: {value} ({t['target']}) {verdict}")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("speed-tiny", "console"):
        (cmd_speed_tiny if sys.argv[1] == "speed-tiny" else cmd_console)(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("preflight", help="PyTorch, CUDA and the project's entry points, or one line on what is missing")
    p.add_argument("--mode", choices=("gpu", "cpu"), required=True)
    p = sub.add_parser("train", help="a timed ns-train run")
    p.add_argument("--steps", type=int, default=200)
    p = sub.add_parser("samplers", help="uniform, proposal and occupancy sampling, briefly trained")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--timed-steps", type=int, default=10)
    sub.add_parser("nerfacc", help="nerfacc's occupancy-grid estimator")
    p = sub.add_parser("time-to-psnr", help="paper configuration against the default, same data and seconds")
    p.add_argument("--budget", type=float, default=25.0, help="training seconds of each configuration")
    p.add_argument("--points", type=int, default=5, help="held-out evaluations along each run")
    p.add_argument("--warmup", type=int, default=2, help="steps of each before its clock starts")
    p = sub.add_parser("summary", help="summary.json and summary.txt from the steps' files")
    p.add_argument("--mode", choices=("gpu", "cpu"), required=True)
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--stopped", default=None, help="why the check stopped before its steps")
    for name, p in sub.choices.items():
        if name == "preflight":
            continue
        p.add_argument("--out", required=True, help="the JSON file to write (summary: the output folder)")
        if name in ("train", "samplers", "time-to-psnr"):
            p.add_argument("--data", required=True, help="a dataset (ns-latentavatar-synth)")
            p.add_argument("--runs", required=True, help="a scratch folder for runs")
        if name != "summary":
            p.add_argument("--cpu", action="store_true", help="latentavatar-tiny on the CPU")
    args = parser.parse_args()
    if getattr(args, "runs", None):
        Path(args.runs).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    commands = {"preflight": cmd_preflight, "train": cmd_train, "samplers": cmd_samplers, "nerfacc": cmd_nerfacc,
                "time-to-psnr": cmd_time_to_psnr, "summary": cmd_summary}
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
