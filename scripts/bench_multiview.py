"""Multi-view benchmark: an avatar trained on every training view against one trained on the frontal view alone.

    python scripts/bench_multiview.py [--iterations 1500] [--num-views 5] [--heldout-views 1 3] [--device cpu]

One synthetic multi-view capture (cameras on an arc in front of the head, some views held out
entirely). Both avatars are trained with the real ``ns-train`` for the same number of steps and
images per step; the encoder of both sees the same frontal crops. Scored on the held-out views,
at the training moments (novel view, seen expression) and at the held-out moments (novel view
and expression), on the full frame and on the head box (the ground-truth matte's bounding box).
Writes ``bench/multiview.json``.
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
from typing import Dict, List, Tuple

import numpy as np
import torch
import tyro
from rich.progress import track

from latentavatar_ns.data.dataparser import LatentAvatarDataParserConfig
from latentavatar_ns.data.dataset import LatentAvatarDataset
from latentavatar_ns.demo.steps import train_command
from latentavatar_ns.synthetic import make_dataset
from latentavatar_ns.evaluation.metrics import ImageMetrics, mean_metrics


@dataclass
class BenchMultiview:
    iterations: int = 1500
    """Training steps of each avatar."""
    method: str = "latentavatar-tiny"
    """Method to train (the CPU budget suits latentavatar-tiny)."""
    num_frames: int = 100
    """Moments of the synthetic capture (the last 15% held out)."""
    num_views: int = 5
    """Cameras on the arc."""
    view_spread: float = 180.0
    """Degrees from the leftmost to the rightmost camera (180: views at -90, -45, 0, 45, 90)."""
    heldout_views: Tuple[int, ...] = (1, 3)
    """Views never trained on (scored)."""
    views_per_moment: int = 1
    """Multi-view avatar: views of one moment in each 2-image batch."""
    resolution: int = 128
    identity: int = 0
    seed: int = 0
    device: str = "cpu"
    """cpu or cuda."""
    output: Path = Path("bench/multiview.json")
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "bench_multiview")
    """Dataset and runs (replaced unless --reuse)."""
    arms: Tuple[str, ...] = ("multiview", "frontal_only")
    """Which avatars to train and score."""
    reuse: bool = False
    """Keep the dataset and any finished run in work-dir (lets the arms train in separate processes)."""


def ns_train(cfg: BenchMultiview, data: Path, out: Path, name: str, extra: List[str]) -> Path:
    """One real ``ns-train`` run (no evaluation during training, one checkpoint at the end); returns its config.yml."""
    cmd = train_command(data, out, cfg.iterations, cfg.device, cfg.method, experiment=name,
                        extra_args=["--steps-per-eval-batch", str(10**9), "--steps-per-eval-image", str(10**9),
                                    "--steps-per-save", str(cfg.iterations), *extra])
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return out / name / cfg.method / "run" / "config.yml"


def finished_run(cfg: BenchMultiview, out: Path, name: str) -> Tuple[Path, float] | None:
    """A run of this budget already in work-dir: its config.yml and training wall time (config to last checkpoint)."""
    config = out / name / cfg.method / "run" / "config.yml"
    last = config.parent / "nerfstudio_models" / f"step-{cfg.iterations - 1:09d}.ckpt"
    if not (config.exists() and last.exists()):
        return None
    return config, last.stat().st_mtime - config.stat().st_mtime


def head_box(matte: torch.Tensor, margin: int = 2) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the ground-truth matte, a few pixels wider."""
    ys, xs = torch.nonzero(matte[..., 0] > 0.5, as_tuple=True)
    h, w = matte.shape[:2]
    return (max(int(xs.min()) - margin, 0), max(int(ys.min()) - margin, 0),
            min(int(xs.max()) + 1 + margin, w), min(int(ys.max()) + 1 + margin, h))


@torch.no_grad()
def score(pipeline, data: Path, views: Tuple[str, ...], split: str, metrics: ImageMetrics) -> Dict:
    """Every image of ``views`` in a split, its code encoded from the moment's frontal crop."""
    parser = LatentAvatarDataParserConfig(data=data, train_views=views, eval_views=views).setup()
    outputs = parser.get_dataparser_outputs(split="train" if split == "train" else "val")
    dataset = LatentAvatarDataset(outputs, crop_size=pipeline.model.config.encoder_crop_size)
    model = pipeline.model
    model.eval()
    full, box, per_view = [], [], {}
    for i in track(range(len(dataset)), description=f"Scoring {split} moments", transient=True):
        item = dataset.get_data(i)
        rgb = model.get_outputs_for_camera(dataset.cameras[i : i + 1], batch=item)["rgb"]
        gt = item["image"].to(rgb.device)
        full.append(metrics(rgb, gt))
        x0, y0, x1, y1 = head_box(item["mask"])
        box.append(metrics(rgb[y0:y1, x0:x1], gt[y0:y1, x0:x1]))
        per_view.setdefault(outputs.metadata["image_views"][i], []).append(full[-1]["psnr"])
    return {"full_frame": mean_metrics(full), "head_box": mean_metrics(box), "images": len(dataset),
            "psnr_by_view": {view: float(np.mean(v)) for view, v in per_view.items()}}


def main() -> None:
    cfg = tyro.cli(BenchMultiview)
    from nerfstudio.utils.eval_utils import eval_setup

    work = cfg.work_dir
    data = work / "data"
    if not (cfg.reuse and (data / "synth.json").exists()):
        make_dataset(data, identity=cfg.identity, num_frames=cfg.num_frames, resolution=cfg.resolution,
                     eval_fraction=0.15, seed=cfg.seed, overwrite=True, num_views=cfg.num_views,
                     view_spread=cfg.view_spread, heldout_views=cfg.heldout_views)
    info = json.loads((data / "synth.json").read_text())
    parser = LatentAvatarDataParserConfig(data=data).setup()
    parser.get_dataparser_outputs("train")
    frontal = parser.parse_split("train").frames[0].view
    heldout = tuple(info["heldout_views"])
    train_views = parser.views_of("train")
    print(f"views {info['views']} at yaw {info['view_yaws_deg']}; encoder (frontal) {frontal}; "
          f"training views {train_views}; held out {heldout}", flush=True)
    arms = {
        "multiview": ["--pipeline.datamanager.views-per-moment", str(cfg.views_per_moment)],
        "frontal_only": ["--pipeline.datamanager.dataparser.train-views", frontal],
    }
    metrics = ImageMetrics(lpips_nets=("vgg", "alex"))
    results: Dict[str, Dict] = {}
    for name in cfg.arms:
        done = finished_run(cfg, work / "runs", name) if cfg.reuse else None
        if done is None:
            start = time.time()
            config = ns_train(cfg, data, work / "runs", name, arms[name])
            wall = time.time() - start
        else:
            config, wall = done
            print(f"{name}: reusing the finished run {config}", flush=True)
        _, pipeline, _, step = eval_setup(config, test_mode="test")
        results[name] = {
            "train_views": sorted(set(pipeline.datamanager.train_dataset.metadata["image_views"])),
            "train_images": len(pipeline.datamanager.train_dataset),
            "view_dependent": pipeline.model.field.view_dependent,
            "steps": step + 1,
            "train_wall_time_s": round(wall, 1),
            "heldout_views_train_moments": score(pipeline, data, heldout, "train", metrics),
            "heldout_views_eval_moments": score(pipeline, data, heldout, "eval", metrics),
            "frontal_view_eval_moments": score(pipeline, data, (frontal,), "eval", metrics),
        }
        print(name, json.dumps(results[name]), flush=True)
    # The work folder is this machine's scratch space, not a setting of the measurement.
    config = {k: str(v) for k, v in asdict(cfg).items() if k != "work_dir"}
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    if set(results) != set(arms):
        cfg.output.write_text(json.dumps({"config": config, "results": results}, indent=2))
        return
    delta = {}
    for key in ("heldout_views_train_moments", "heldout_views_eval_moments", "frontal_view_eval_moments"):
        m, f = results["multiview"][key], results["frontal_only"][key]
        delta[key] = {region: {metric: m[region][metric] - f[region][metric] for metric in m[region]}
                      for region in ("full_frame", "head_box")}
    device = (torch.cuda.get_device_name() if cfg.device == "cuda"
              else f"cpu ({platform.machine()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    report = {"config": config, "device": device,
              "capture": {"views": info["views"], "view_yaws_deg": info["view_yaws_deg"], "encoder_view": frontal,
                          "heldout_views": list(heldout), "train_moments": info["num_train"],
                          "eval_moments": info["num_eval"]},
              "results": results, "multiview_minus_frontal_only": delta}
    cfg.output.write_text(json.dumps(report, indent=2))
    print(json.dumps(delta, indent=2))


if __name__ == "__main__":
    main()
