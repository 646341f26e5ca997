"""Shared fixtures: small datasets written on the fly in the official layout."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
from PIL import Image

from latentavatar_ns.data.format import FrameParams, frame_paths, save_params


def write_official_dataset(root: Path, counts: Dict[str, int] = None, size: int = 32, seed: int = 0) -> Path:
    """Random frames with plausible poses, the official layout with no camera.json."""
    rng = np.random.default_rng(seed)
    for split, n in (counts or {"train": 4, "eval": 2}).items():
        split_dir = root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            files = frame_paths(split_dir, i)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(files.image)
            Image.fromarray((rng.random((size, size)) > 0.5).astype(np.uint8) * 255).save(files.mask)
            pose = np.concatenate([rng.normal(0, 0.15, 3), rng.normal(0, 0.01, 3)])
            save_params(files.params, FrameParams(pose=pose, scale=float(rng.uniform(0.09, 0.12))))
    return root


@pytest.fixture
def official_dataset(tmp_path: Path) -> Path:
    return write_official_dataset(tmp_path / "official")


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A small synthetic head video (64 px), shared by the training tests."""
    from latentavatar_ns.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synth") / "head", identity=0, num_frames=48, resolution=64,
                        eval_fraction=0.125, seed=0)


@pytest.fixture
def dataset_factory(tmp_path: Path) -> Callable[..., Path]:
    return lambda **kw: write_official_dataset(tmp_path / "ds", **kw)


@pytest.fixture(scope="session")
def tiny_trained_run(synthetic_dataset: Path, tmp_path_factory) -> Path:
    """One short real ``ns-train latentavatar-tiny`` run (CPU) shared by the viewer and rendering tests; its
    config.yml."""
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("tiny_runs")
    cmd = [str(Path(sys.executable).parent / "ns-train"), "latentavatar-tiny", "--data", str(synthetic_dataset),
           "--output-dir", str(out), "--experiment-name", "t", "--timestamp", "a", "--vis", "tensorboard",
           "--machine.device-type", "cpu", "--max-num-iterations", "60", "--steps-per-save", "60"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "t" / "latentavatar-tiny" / "a" / "config.yml"
