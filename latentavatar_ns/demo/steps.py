"""The steps both demos share: train with the real ``ns-train``, render a turntable and a held-out
comparison, and say where the results are (also used by the benchmarks to run ``ns-train``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from latentavatar_ns.utils.errors import OutputExistsError


def console_script(name: str) -> str:
    """A console script of this environment (ns-train next to the running python)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def train_command(data: Path, output_dir: Path, iterations: int, device: str, method: str = "latentavatar-tiny",
                  experiment: str = "demo", extra_args: Sequence[str] = ()) -> List[str]:
    """The real ``ns-train`` command line of a run named ``<output_dir>/<experiment>/<method>/run``."""
    return [
        console_script("ns-train"), method, "--data", str(data), "--output-dir", str(output_dir),
        "--experiment-name", experiment, "--timestamp", "run", "--vis", "tensorboard",
        "--machine.device-type", device, "--max-num-iterations", str(iterations),
        "--steps-per-eval-image", str(max(iterations // 4, 1)), *extra_args,
    ]


def train(data: Path, output_dir: Path, iterations: int, device: str, method: str = "latentavatar-tiny",
          extra_args: Sequence[str] = ()) -> Path:
    """Run the real ``ns-train`` command (``extra_args`` appended) and return the run's config.yml."""
    cmd = train_command(data, output_dir, iterations, device, method, extra_args=extra_args)
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return output_dir / "demo" / method / "run" / "config.yml"


@torch.no_grad()
def render_results(config_path: Path, output_dir: Path) -> Dict:
    """Turntable video (orbit while the expression plays) and a ground truth | render sheet of held-out frames."""
    from nerfstudio.utils.eval_utils import eval_setup
    from PIL import Image

    from latentavatar_ns.evaluation.expressiveness import contact_sheet
    from latentavatar_ns.utils.image import to_uint8
    from latentavatar_ns.evaluation.metrics import ImageMetrics, evaluate_heldout
    from latentavatar_ns.utils.video import write_video
    from latentavatar_ns.utils.views import frontal_camera, orbit, with_codes

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    model = pipeline.model
    num_train = model.num_train_frames
    steps = 72
    yaws = 30.0 * np.sin(np.linspace(0.0, 2.0 * np.pi, steps, endpoint=False))
    parser = pipeline.datamanager.dataparser
    cams = with_codes(orbit(frontal_camera(parser), yaws),  # type: ignore[arg-type]
                      np.linspace(0, num_train - 1, steps).round().astype(int))
    frames = [model.get_outputs_for_camera(cams[i : i + 1])["rgb"].cpu().numpy() for i in range(steps)]
    write_video(output_dir / "turntable.mp4", frames, fps=24)

    picks = expressive_frames(pipeline.datamanager.eval_dataset, 4)
    sheet = contact_sheet(pipeline, picks, lambda split, i, w, h: {}, zoom=2)
    Image.fromarray(to_uint8(sheet)).save(output_dir / "heldout_comparison.png")
    return evaluate_heldout(pipeline, ImageMetrics(required=False))


def expressive_frames(dataset, count: int) -> List[int]:
    """Held-out frames to show: those farthest from a neutral face when the dataset stores ground-truth
    expressions (synthetic heads: open mouths, closed eyes), else evenly spaced ones, in video order."""
    from latentavatar_ns.data.format import load_params

    n = len(dataset)
    params = [Path(str(f)).with_name(Path(str(f)).name.replace("img_", "params_")).with_suffix(".npz")
              for f in dataset.image_filenames]
    try:
        strength = np.array([np.abs(load_params(p).extra["expression"]).sum() for p in params])
    except (KeyError, OSError, ValueError):
        strength = None
    if strength is None or n <= count:
        return np.linspace(0, n - 1, min(count, n)).round().astype(int).tolist()
    return sorted(np.argsort(-strength)[:count].tolist())


def fresh_output_dir(out: Path, overwrite: bool) -> None:
    """A demo's output folder: refused when it holds anything, unless --overwrite (then emptied)."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)


def print_outputs(out: Path, config_path: Path, *extra: str) -> None:
    """Where a demo's results are, and how to look at the avatar."""
    for line in (*extra, f"  turntable video:       {out / 'turntable.mp4'}",
                 f"  held-out comparison:   {out / 'heldout_comparison.png'}  (ground truth | render | average face)",
                 f"  trained avatar:        {config_path}",
                 f"  view it:               ns-viewer --load-config {config_path}"):
        print(line)

