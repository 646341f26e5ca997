"""Cross-identity reenactment benchmark on synthetic heads with exact ground truth.

    python scripts/bench_reenact.py [--avatar-iterations 2500] [--ynet-steps 2000] [--device cpu]

Person A (identity 0) is the avatar, person B (identity 1) the actor. A is trained with the real
``ns-train latentavatar-tiny``, then the Y-network for (A, B). The ground truth of "A making B's
expressions with B's head motion" is rendered by the synthetic head generator
(``make_dataset(identity=0, drive_from=B)``). On B's held-out frames, A is rendered with its head
following B's (normalised as ``ns-latentavatar-reenact`` does) and compared with that ground truth:

1. ``ynet``: B's crops -> Y-network shared encoder -> mapping -> A's theta (the method, trained from
   random weights as in the paper), and ``ynet_from_avatar``: the same with the shared encoder and the
   mapping started as copies of A's own (``ns-latentavatar-ynet --init-from-avatar``);
2. ``direct``: B's crops straight into A's own encoder and mapping (no Y-network);
3. ``self``: A's own held-out frames through its own encoder, from its own cameras (other frames, so
   no strict bound), and ``own_code``: the ground-truth frames themselves (A making B's expressions)
   through A's own encoder and mapping, from the same cameras as the driving paths: the code A's own
   face gives those expressions, the strict self-reenactment bound on the driving frames;

plus ``mean_theta``: A's mean theta over its training frames for every frame (no expression
transfer at all), and the Y-networks / ``direct`` from the ground-truth cameras (pose normalisation
taken out). Metrics: PSNR, SSIM, LPIPS (VGG, Alex) on the full frame and on the face box, PSNR on
the face box's lower half (mouth and jaw), each path's PSNR gain over ``mean_theta`` (what the
transferred expression adds to a constant face), and an
expression error that needs no rendering: the avatar training frame whose theta is nearest to
the predicted one, and the mean absolute difference between its ground-truth expression
parameters and the driver's (references: the best training frame, and the mean expression).
Writes ``bench/reenact.json`` and ``bench/reenact_examples.png`` (columns: B, ground truth, ynet,
ynet_from_avatar, direct).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import tyro
from PIL import Image

from bench_expression import VARIANTS, variant_options
from latentavatar_ns.demo.steps import train
from latentavatar_ns.reenact.avatar import load_avatar, load_crops, open_splits, parser_for
from latentavatar_ns.reenact.reenact import Reenactor
from latentavatar_ns.reenact.train_ynet import YNetTrainConfig, load_ynet, train_ynet
from latentavatar_ns.synthetic import make_dataset
from latentavatar_ns.utils.image import to_uint8
from latentavatar_ns.evaluation.metrics import ImageMetrics, face_box, mean_metrics, mouth_box, psnr


YNETS = {"ynet": False, "ynet_from_avatar": True}
"""The Y-networks compared: name -> ``init_from_avatar`` (each trains in the work folder under its name)."""


@dataclass
class BenchReenact:
    avatar_iterations: int = 2500
    """ns-train latentavatar-tiny steps for the avatar."""
    ynet_steps: int = 3000
    """Y-network training steps (``ns-latentavatar-ynet`` trains 20000 by default; a CPU affords a fraction)."""
    ynet_batch_size: int = 8
    """Crops per domain per Y-network step."""
    num_frames: int = 400
    """Frames of the avatar's synthetic video (the last 15% held out). Long enough that the avatar sees
    most expressions the actor makes (with 150 frames person A never raised the brows)."""
    actor_frames: int = 300
    """Frames of the actor's synthetic video."""
    actor_eval_fraction: float = 0.2
    """Share of the actor's frames held out as driving frames (the rest train the Y-network)."""
    resolution: int = 128
    """Frame side in pixels."""
    seed: int = 0
    detail: bool = False
    """Render both people as detailed heads (``make_dataset(detail=True)``: crisp eyes, lips and teeth, winks,
    wider expressions), whose expressions change more pixels than the smooth heads'."""
    avatar_variant: str = ""
    """Options for the avatar on top of latentavatar-tiny's defaults, named as ``bench_expression.py``'s
    VARIANTS (``a+b`` combines two), e.g. ``static_start500``; empty: the defaults."""
    device: str = "cpu"
    """cpu or cuda."""
    output: Path = Path("bench/reenact.json")
    """Where the numbers go (the example sheet goes next to it, as ``<name>_examples.png``)."""
    work_dir: Optional[Path] = None
    """Keep datasets, the avatar and the Y-network here (default: a temporary folder)."""
    reuse: bool = False
    """Reuse the datasets, avatar and Y-network already in --work-dir instead of making them again (their
    wall times are read back from --work-dir's wall_times.json)."""


def _score(metrics: ImageMetrics, renders: List[torch.Tensor], gts: List[torch.Tensor],
           affines: List[np.ndarray]) -> Dict[str, Dict[str, float]]:
    full, face, mouth = [], [], []
    for pred, gt, affine in zip(renders, gts, affines):
        pred, gt = pred.cpu(), gt.cpu()
        full.append(metrics(pred, gt))
        box = face_box(affine, gt.shape[1], gt.shape[0])
        x0, y0, x1, y1 = box
        face.append(metrics(pred[y0:y1, x0:x1], gt[y0:y1, x0:x1]))
        x0, y0, x1, y1 = mouth_box(box)
        mouth.append(psnr(pred[y0:y1, x0:x1], gt[y0:y1, x0:x1]))
    return {"full_frame": mean_metrics(full), "face_box": mean_metrics(face), "mouth": {"psnr": float(np.mean(mouth))}}


def _expressions(parser_config, data: Path, split: str) -> np.ndarray:
    """Ground-truth expression parameters of a synthetic dataset's frames (N, 7)."""
    return np.stack([p.extra["expression"] for p in parser_for(parser_config, data).parse_split(split).params])


def main() -> None:
    cfg = tyro.cli(BenchReenact)
    unknown = [part for part in cfg.avatar_variant.split("+") if part and part not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: --avatar-variant names unknown variant(s) {unknown}; variants: {list(VARIANTS)}")
    avatar_args = variant_options(cfg.avatar_variant)
    torch.manual_seed(cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(cfg.work_dir) if cfg.work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # Stage wall times live beside the work they timed, so a --reuse run reports the real ones.
        times_file = work / "wall_times.json"
        times: Dict[str, float] = json.loads(times_file.read_text()) if cfg.reuse and times_file.exists() else {}

        def stage(name: str, done: bool, run) -> None:
            if cfg.reuse and done:
                print(f"reusing {name.removesuffix('_s')} from {work}", flush=True)
                return
            start = time.time()
            run()
            times[name] = time.time() - start
            times_file.write_text(json.dumps(times))

        data_b, data_a, data_ab = work / "B", work / "A", work / "A_driven_by_B"

        def datasets() -> None:
            make_dataset(data_b, identity=1, num_frames=cfg.actor_frames, resolution=cfg.resolution,
                         eval_fraction=cfg.actor_eval_fraction, seed=cfg.seed, detail=cfg.detail, overwrite=True)
            make_dataset(data_a, identity=0, num_frames=cfg.num_frames, resolution=cfg.resolution,
                         eval_fraction=0.15, seed=cfg.seed, detail=cfg.detail, overwrite=True)
            make_dataset(data_ab, identity=0, drive_from=data_b, seed=cfg.seed, resolution=cfg.resolution,
                         detail=cfg.detail, overwrite=True)

        stage("datasets_s", (data_ab / "synth.json").exists(), datasets)
        config_path = work / "runs" / "demo" / "latentavatar-tiny" / "run" / "config.yml"
        stage("avatar_train_s", config_path.exists(),
              lambda: train(data_a, work / "runs", cfg.avatar_iterations, cfg.device, extra_args=avatar_args))
        ynet_dirs = {name: work / name for name in YNETS}
        for name, folder in ynet_dirs.items():
            stage(f"{name}_train_s", (folder / "checkpoints").is_dir(), lambda folder=folder, name=name: train_ynet(
                YNetTrainConfig(load_config=config_path, actor_data=data_b, output_dir=folder, steps=cfg.ynet_steps,
                                batch_size=cfg.ynet_batch_size, device="cuda" if cfg.device == "cuda" else "cpu",
                                seed=cfg.seed, steps_per_save=max(cfg.ynet_steps // 4, 1), overwrite=True,
                                init_from_avatar=YNETS[name])))

        start = time.time()
        avatar = load_avatar(config_path)
        reenactor = Reenactor(avatar, "cuda" if cfg.device == "cuda" else "cpu")
        crop = reenactor.crop_size
        driver = reenactor.driver(data_b, "eval")
        truth = open_splits(parser_for(avatar.parser_config, data_ab), "eval", crop)[0]
        gts = [truth.get_data(i)["image"] for i in range(len(truth))]
        affines = [truth.crop_affines[i] for i in range(len(truth))]
        follow = reenactor.follow_cameras(driver)
        thetas = {name: reenactor.ynet_thetas(load_ynet(folder)[0], driver.crops) for name, folder in ynet_dirs.items()}
        thetas["direct"] = reenactor.own_thetas(driver.crops)
        thetas["own_code"] = reenactor.own_thetas(load_crops([truth], crop))
        own = reenactor.driver(data_a, "eval")
        train_theta = reenactor.own_thetas(reenactor.driver(data_a, "train").crops)
        thetas["mean_theta"] = train_theta.mean(dim=0, keepdim=True).expand(len(driver), -1)

        def render(theta, cameras):
            return [reenactor.render(theta[i], cameras[i:i + 1]) for i in range(len(theta))]

        # Expression transfer without rendering: the avatar training frame whose theta is nearest to the
        # predicted theta, and how far its ground-truth expression is from the one asked for (mean |diff|).
        train_expr = _expressions(avatar.parser_config, data_a, "train")

        def expression_error(theta, wanted):
            nearest = torch.cdist(theta.cpu(), train_theta.cpu()).argmin(dim=1).numpy()
            return float(np.abs(train_expr[nearest] - wanted).mean())

        drive_expr = _expressions(avatar.parser_config, data_b, "eval")
        metrics = ImageMetrics()
        renders = {name: render(theta, follow) for name, theta in thetas.items()}
        results = {name: {**_score(metrics, images, gts, affines),
                          "expression_error": expression_error(thetas[name], drive_expr)}
                   for name, images in renders.items()}
        for name in (*YNETS, "direct", "own_code"):
            results[f"{name}_gt_cameras"] = _score(metrics, render(thetas[name], truth.cameras), gts, affines)
        own_gts = [own.item(i)["image"] for i in range(len(own))]
        own_affines = [own.crop_affine(i) for i in range(len(own))]
        own_theta = reenactor.own_thetas(own.crops)
        results["self"] = {**_score(metrics, render(own_theta, reenactor.follow_cameras(own)), own_gts, own_affines),
                           "expression_error": expression_error(own_theta, _expressions(avatar.parser_config, data_a,
                                                                                        "eval"))}
        best = np.abs(train_expr[None] - drive_expr[:, None]).sum(-1).argmin(1)
        expression_reference = {"best_training_frame": float(np.abs(train_expr[best] - drive_expr).mean()),
                                "mean_expression": float(np.abs(train_expr.mean(0) - drive_expr).mean())}
        times["evaluation_s"] = time.time() - start

        rows = []
        for i in np.linspace(0, len(driver) - 1, min(4, len(driver))).round().astype(int):
            cells = [driver.item(int(i))["image"], gts[i], *(renders[name][i] for name in YNETS), renders["direct"][i]]
            rows.append(np.concatenate([c.cpu().numpy() for c in cells], axis=1))
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
        examples = cfg.output.with_name(cfg.output.stem + "_examples.png")
        Image.fromarray(to_uint8(np.concatenate(rows, axis=0))).save(examples)

    device = torch.cuda.get_device_name() if cfg.device == "cuda" else \
        f"cpu ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    result = {
        "config": {k: str(v) for k, v in asdict(cfg).items() if k not in ("work_dir", "reuse")},
        "avatar_args": avatar_args,
        "device": device,
        "frames": len(gts),
        "wall_time_s": {k: round(v, 1) for k, v in times.items()},
        "results": results,
        "expression_error_reference": expression_reference,
        # Expression transfer: how much closer to the truth than one constant code (A's mean theta).
        "gain_over_mean_theta_db": {
            name: {region: results[name][region]["psnr"] - results["mean_theta"][region]["psnr"]
                   for region in ("full_frame", "face_box", "mouth")}
            for name in (*YNETS, "direct", "own_code")},
        # How far each driving path stays below the code A's own face gives the same frames.
        "below_own_code_db": {
            name: {region: results["own_code"][region]["psnr"] - results[name][region]["psnr"]
                   for region in ("full_frame", "face_box", "mouth")}
            for name in (*YNETS, "direct")},
        # The bar this benchmark sets: the Y-network path beats B's crops straight into A's encoder on LPIPS and PSNR.
        "beats_direct": {
            name: {region: {"lpips_vgg": results[name][region]["lpips_vgg"] < results["direct"][region]["lpips_vgg"],
                            "psnr": results[name][region]["psnr"] > results["direct"][region]["psnr"]}
                   for region in ("full_frame", "face_box")}
            for name in YNETS},
    }
    cfg.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
