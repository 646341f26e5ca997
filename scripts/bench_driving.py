"""Driving benchmark: an avatar driven through its encoder, through ARKit blendshapes, and by a constant code.

    python scripts/bench_driving.py [--synthetic-avatar RUN/config.yml] [--real-avatar RUN/config.yml]
                                    [--real-driver DATASET] [--ynet-steps 3000]

Cases (each avatar is ``latentavatar-tiny``, trained here unless given):

- ``synthetic_self``: a detailed synthetic head's held-out frames, driven by their own face crops
  (encoder), by their blendshapes through the avatar's blendshape mapping, and by the mean training
  code; scored against the ground truth (PSNR and LPIPS on the frame, and on the face, mouth and eyes
  boxes of the encoder's face square; the expression gain over the mean code) and by the expression score;
- ``real_self``: the same on the held-out frames of the real sample clip (single_face.mp4);
- ``real_cross``: the other sample clip (carphone_pristine.mp4) driving the first clip's avatar, by
  direct encoding, blendshapes, the mean code and (``--ynet-steps`` > 0) a Y-network; no ground truth
  exists, so the expression score alone.

The expression score (``evaluation/expression_score.py``) reads the blendshapes of each render and
of its driving frame with MediaPipe's landmarker; the renders it reads are made from the avatar's
frontal camera, so that the head's motion cannot stand in for the expression. Blendshapes a dataset
lacks are filled in by the landmarker (``ns-latentavatar-blendshapes fill``); a synthetic head made
here stores its exact ones.
Writes ``bench/driving.json`` and a side-by-side video (driver | avatar) per case and path beside it.
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

import numpy as np
import torch
import tyro

from latentavatar_ns.assets.cache import asset_path
from latentavatar_ns.blendshapes.fit import fit_for_avatar
from latentavatar_ns.blendshapes.frames import fill_blendshapes
from latentavatar_ns.blendshapes.mapping import load_mapping
from latentavatar_ns.data.format import list_frames, load_params
from latentavatar_ns.data.regions import REGIONS
from latentavatar_ns.demo.steps import console_script, train_command
from latentavatar_ns.evaluation.expression_score import expression_score, read_blendshapes
from latentavatar_ns.evaluation.expressiveness import RegionScorer
from latentavatar_ns.evaluation.metrics import psnr
from latentavatar_ns.model.lpips import load_lpips
from latentavatar_ns.process.face import FaceLandmarker
from latentavatar_ns.reenact.avatar import load_avatar
from latentavatar_ns.reenact.reenact import Driver, Reenactor, side_by_side
from latentavatar_ns.synthetic import make_dataset
from latentavatar_ns.synthetic.head import Expression
from latentavatar_ns.utils.image import to_uint8
from latentavatar_ns.utils.video import write_video


@dataclass
class BenchDriving:
    synthetic_avatar: Optional[Path] = None
    """config.yml of a latentavatar run on a synthetic head (default: one is made and trained here)."""
    real_avatar: Optional[Path] = None
    """config.yml of a latentavatar run on the processed single_face.mp4 (default: trained here)."""
    real_driver: Optional[Path] = None
    """The driving dataset of the cross-identity case (default: carphone_pristine.mp4, processed here)."""
    iterations: int = 2000
    """Training steps of the avatars trained here."""
    mapping_steps: int = 1500
    """Steps of each blendshape mapping fit."""
    ynet_steps: int = 0
    """Y-network steps for the cross-identity case (0 leaves that path out)."""
    device: str = "cpu"
    output: Path = Path("bench/driving.json")
    """Where the numbers go; the videos are written beside it."""
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "bench_driving")
    """Datasets, runs and mappings; finished ones are reused."""


def _run(cmd: List[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _processed(video: str, out: Path) -> Path:
    if not (out / "train").is_dir():
        _run([console_script("ns-latentavatar-process"), "--input", str(asset_path(video)), "--output-dir", str(out),
              "--resolution", "128"])
    return out


def _trained(data: Path, runs: Path, name: str, cfg: BenchDriving) -> Path:
    config = runs / name / "latentavatar-tiny" / "run" / "config.yml"
    if not list((config.parent / "nerfstudio_models").glob("*.ckpt")):
        _run(train_command(data, runs, cfg.iterations, cfg.device, experiment=name, extra_args=["--overwrite", "True"]))
    return config


class Scorer:
    """Ground-truth scores and the expression score of rendered frames."""

    def __init__(self, device: torch.device):
        self.regions = RegionScorer(load_lpips("alex", device=device))
        self.landmarker = FaceLandmarker(asset_path("face_landmarker.task"))
        self.landmarker_ms: List[float] = []

    def detect(self, image: np.ndarray) -> Optional[np.ndarray]:
        start = time.perf_counter()
        found = self.landmarker.detect(image)
        self.landmarker_ms.append(1000 * (time.perf_counter() - start))
        return None if found is None else found.blendshapes

    def blendshapes(self, images: List[np.ndarray]) -> np.ndarray:
        return read_blendshapes(images, self.detect)


def _render_path(reenactor: Reenactor, thetas: torch.Tensor, cameras) -> tuple:
    frames, start = [], time.perf_counter()
    for i in range(len(thetas)):
        frames.append(reenactor.render(thetas[i], cameras[i:i + 1]).cpu())
    return frames, 1000 * (time.perf_counter() - start) / max(len(thetas), 1)


def _paths(reenactor: Reenactor, driver: Driver, mapping, ynet=None) -> Dict[str, torch.Tensor]:
    avatar = reenactor.avatar
    num_train = len(reenactor.parser.parse_split("train").frames)
    mean_code = avatar.state["_model.frame_codes"][:num_train].mean(0, keepdim=True)
    with torch.no_grad():
        mean_theta = avatar.mapping(mean_code.to(next(avatar.mapping.parameters()).device))
    paths = {"encoder": reenactor.own_thetas(driver.crops)}
    if driver.blendshapes is not None:
        paths["blendshapes"] = reenactor.blendshape_thetas(mapping, driver.blendshapes)
    if ynet is not None:
        paths["ynet"] = reenactor.ynet_thetas(ynet, driver.crops)
    paths["mean_code"] = mean_theta.expand(len(driver), -1)
    return paths


def _case(name: str, config: Path, driving: Optional[Path], mapping_path: Path, scorer: Scorer, out_dir: Path,
          cfg: BenchDriving, ynet=None) -> Dict:
    """Every path on one avatar and driver: renders from the driver's head poses (scored against the ground
    truth in self-reenactment, and written as a video), and from the avatar's frontal camera for the
    expression score, so that only the expression, not the head's motion, can move the landmarker's reading."""
    avatar = load_avatar(config)
    mapping = load_mapping(mapping_path, avatar.fingerprint())
    reenactor = Reenactor(avatar, cfg.device)
    driver = reenactor.driver(driving or avatar.data_dir, "eval" if driving is None else "all")
    posed, frontal = reenactor.follow_cameras(driver), reenactor.fixed_cameras(len(driver))
    items = [driver.item(i) for i in range(len(driver))]
    driver_images = [to_uint8(item["image"].numpy()) for item in items]
    driver_shapes = scorer.blendshapes(driver_images)
    result: Dict = {"frames": len(driver), "paths": {}}
    for path, thetas in _paths(reenactor, driver, mapping, ynet).items():
        start = time.perf_counter()
        renders, render_ms = _render_path(reenactor, thetas, posed)
        images = [to_uint8(r.numpy()) for r in renders]
        fronts, _ = _render_path(reenactor, thetas, frontal)
        row: Dict = {"render_ms_per_frame": render_ms, "expression_score": expression_score(
            driver_shapes, scorer.blendshapes([to_uint8(r.numpy()) for r in fronts]))}
        if driving is None:  # self-reenactment: the driving frames are the ground truth
            regions: Dict[str, List[Dict]] = {}
            full = []
            for render, item in zip(renders, items):
                gt = item["image"]
                h, w = gt.shape[:2]
                boxes = {r: (round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))  # fractions of the frame
                         for r, (x0, y0, x1, y1) in zip(REGIONS, item["region_boxes"].tolist())}
                for region, scores in scorer.regions(render, gt, boxes).items():
                    regions.setdefault(region, []).append(scores)
                full.append(psnr(render.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None].float()))
            row["psnr"] = {"full": float(np.mean(full)),
                           **{r: float(np.mean([s["psnr"] for s in rows])) for r, rows in regions.items()}}
            row["lpips_alex"] = {r: float(np.mean([s["lpips"] for s in rows])) for r, rows in regions.items()}
        write_video(out_dir / f"driving_{name}_{path}.mp4",
                    (side_by_side(d, i) for d, i in zip(driver_images, images)), fps=10)
        row["seconds"] = time.perf_counter() - start
        result["paths"][path] = row
        print(name, path, json.dumps({k: v for k, v in row.items() if k != "expression_score"}),
              "score", row["expression_score"].get("mean_correlation"), flush=True)
    if "psnr" in result["paths"]["mean_code"]:
        ref = result["paths"]["mean_code"]["psnr"]
        for row in result["paths"].values():
            row["expression_gain_db"] = {k: row["psnr"][k] - ref[k] for k in ref}
    return result


def _blendshape_source(data: Path, filled: bool) -> str:
    """Where a dataset's blendshapes come from: the synthetic head's exact ones, or the landmarker's."""
    if filled:
        return "landmarker (filled in here)"
    params = load_params(list_frames(data / "train")[0].params)
    if "expression" in params.extra:
        exact = Expression.from_array(params.extra["expression"]).to_blendshapes()
        if np.allclose(params.extra["blendshapes"], exact, atol=1e-5):
            return "exact (the synthetic head's expression)"
    return "landmarker"


def main(cfg: BenchDriving) -> None:
    work = cfg.work_dir
    runs = work / "runs"
    synthetic_config = cfg.synthetic_avatar
    if synthetic_config is None:
        data = work / "data" / "synthetic"
        if not (data / "train").is_dir():
            make_dataset(data, identity=1, detail=True, num_frames=150, resolution=128, eval_fraction=0.15, seed=0)
        synthetic_config = _trained(data, runs, "synthetic", cfg)
    real_config = cfg.real_avatar or _trained(_processed("single_face.mp4", work / "data" / "real_a"), runs,
                                              "real_a", cfg)
    real_driver = cfg.real_driver or _processed("carphone_pristine.mp4", work / "data" / "real_b")

    device = torch.device(cfg.device)
    scorer = Scorer(device)
    sources: Dict[str, str] = {}
    mappings: Dict[str, Dict] = {}
    for label, config in (("synthetic", synthetic_config), ("real", real_config)):
        data = load_avatar(config).data_dir
        filled = fill_blendshapes(data, scorer.detect)
        sources[label] = _blendshape_source(data, bool(filled.written))
        start = time.perf_counter()
        path, report = fit_for_avatar(config, work / f"mapping_{label}.pt", cfg.mapping_steps, overwrite=True)
        mappings[label] = {**report.__dict__, "fit_seconds": time.perf_counter() - start}
    filled_driver = fill_blendshapes(real_driver, scorer.detect)

    ynet = None
    if cfg.ynet_steps > 0:
        from latentavatar_ns.reenact.train_ynet import load_ynet

        ynet_dir = work / "ynet"
        if not list((ynet_dir / "checkpoints").glob("*.pt")):
            _run([console_script("ns-latentavatar-ynet"), "--load-config", str(real_config), "--actor-data",
                  str(real_driver), "--output-dir", str(ynet_dir), "--steps", str(cfg.ynet_steps), "--overwrite"])
        ynet, _ = load_ynet(ynet_dir)

    out_dir = cfg.output.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = {
        "synthetic_self": _case("synthetic_self", synthetic_config, None, work / "mapping_synthetic.pt", scorer,
                                out_dir, cfg),
        "real_self": _case("real_self", real_config, None, work / "mapping_real.pt", scorer, out_dir, cfg),
        "real_cross": _case("real_cross", real_config, real_driver, work / "mapping_real.pt", scorer, out_dir, cfg,
                            ynet),
    }
    with torch.no_grad():
        mapping = load_mapping(work / "mapping_real.pt")
        weights = torch.rand(256, 52)
        start = time.perf_counter()
        for row in weights:
            mapping(row[None])
        mapping_ms = 1000 * (time.perf_counter() - start) / len(weights)
    report = {
        "benchmark": "driving",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "avatars": {"synthetic": str(synthetic_config), "real": str(real_config), "real_driver": str(real_driver)},
        "blendshape_source": {**sources, "real_driver": _blendshape_source(real_driver, bool(filled_driver.written))},
        "mappings": mappings,
        "latency_ms_per_frame": {"landmarker": float(np.median(scorer.landmarker_ms)), "mapping": mapping_ms,
                                 "render": float(np.median([p["render_ms_per_frame"] for c in cases.values()
                                                            for p in c["paths"].values()]))},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "cases": cases,
    }
    cfg.output.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["latency_ms_per_frame"]))
    scorer.landmarker.close()  # before interpreter shutdown, which would leave MediaPipe's own close failing


if __name__ == "__main__":
    main(tyro.cli(BenchDriving))
