"""Can the avatar draw an expression when its code is exact? The expressiveness benchmark with a perfect encoder.

    python scripts/probe_oracle_code.py --case detailed [--bench.iterations 3000] [--work-dir DIR]

``latentavatar-tiny``, with its defaults, is trained in-process on a synthetic case of
``bench_expression.py``, except that the expression encoder is replaced by an oracle: each frame's code
is a learned linear map of the ground-truth expression parameters that made the frame (jaw, smile,
blinks, brows, gaze...), standardised over the training frames. The oracle finds the frame by its
face crop (the nearest clean crop of the training and held-out frames), so it stands where the
encoder stands, in training and in every render of the benchmark. The avatar is then scored exactly
as ``bench_expression.py`` scores an ``ns-train`` run.

Against the same benchmark's default run at the same budget, this tells an encoder that misses an
expression (the oracle's gain is high where the encoder's is not) from a generator and renderer that
cannot draw it within the budget (the oracle's gain is no higher either).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, Optional, Type

import numpy as np
import torch
import tyro
from jaxtyping import Float
from torch import Tensor, nn

from bench_expression import CASES, BenchExpression, _expressions, _make_case, _score_pipeline, _summary
from latentavatar_ns.evaluation.expressiveness import RegionScorer
from latentavatar_ns.method.configs import tiny_config
from latentavatar_ns.model.latentavatar import LatentAvatarModel
from latentavatar_ns.model.lpips import load_lpips


class ExpressionOracle(nn.Module):
    """A code from the ground-truth expression of the frame whose clean face crop is nearest the input."""

    def __init__(self, num_parameters: int, code_dim: int):
        super().__init__()
        self.linear = nn.Linear(num_parameters, code_dim)
        self.frame_norm = None  # the encoder's code standardisation: the parameters are standardised already
        self.register_buffer("crops", torch.zeros(0), persistent=False)
        self.register_buffer("expressions", torch.zeros(0), persistent=False)

    def set_frames(self, crops: Float[Tensor, "N 3 S S"], expressions: Float[Tensor, "N K"]) -> None:
        self.crops = crops.flatten(1).float()
        self.expressions = expressions.float()

    def forward(self, crops: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B D"]:
        if self.crops.numel() == 0:
            raise RuntimeError("ExpressionOracle: set_frames() was not called before the first code")
        nearest = torch.cdist(crops.flatten(1).float(), self.crops).argmin(dim=1)
        return self.linear(self.expressions[nearest])


class OracleCodeModel(LatentAvatarModel):
    """``latentavatar-tiny``'s model with the expression encoder replaced by :class:`ExpressionOracle`."""

    num_parameters: ClassVar[int] = 0

    def populate_modules(self) -> None:
        super().populate_modules()
        self.encoder = ExpressionOracle(OracleCodeModel.num_parameters, self.config.code_dim)


@dataclass
class ProbeOracleCode:
    case: str = "detailed"
    """A synthetic case of bench_expression.py (its ground-truth expressions are the oracle's input)."""
    work_dir: Optional[Path] = None
    """Keep the dataset and the run here (default: a temporary folder); bench_expression.py's --work-dir
    shares its datasets: an existing one is reused."""
    output: Optional[Path] = None
    """Where the numbers go (default bench/expression_oracle_code_<case>.json); the contact sheet goes beside it."""
    seed: int = 0
    """Torch seed of the run."""
    expression_planes: int = 0
    """Tri-plane blend shapes of the avatar (``--pipeline.model.expression-planes``): with an exact code, do
    texel-wise bases let the renderer draw what the convolutions alone do not?"""
    bench: BenchExpression = field(default_factory=BenchExpression)
    """Budget, dataset and scoring options, as in bench_expression.py (steps, frames, resolution, training
    frames scored)."""


def _standardised(data: Path) -> Float[Tensor, "N K"]:
    """Ground-truth expressions of the training then held-out frames, standardised over the training frames."""
    train, held = _expressions(data, "train"), _expressions(data, "eval")
    if train is None or held is None:
        raise SystemExit(f"error: {data}: frames without ground-truth expressions; the oracle needs a synthetic case")
    mean, std = train.mean(0), train.std(0) + 1e-6
    return torch.from_numpy((np.concatenate([train, held]) - mean) / std)


def _clean_crops(model: LatentAvatarModel, datasets) -> Float[Tensor, "N 3 S S"]:
    """Every frame's face crop as the encoder sees it, noise-free (training frames first)."""
    crops = [dataset.get_data(i)["encoder_crop"] for dataset in datasets for i in range(len(dataset))]
    return model.encoder_crops(torch.stack(crops))


def main() -> None:
    cfg = tyro.cli(ProbeOracleCode)
    if cfg.case not in CASES or CASES[cfg.case].real:
        raise SystemExit(f"error: --case {cfg.case}: not a synthetic case of bench_expression.py "
                         f"({[name for name, case in CASES.items() if not case.real]})")
    output = cfg.output or Path(f"bench/expression_oracle_code_{cfg.case}.json")
    with tempfile.TemporaryDirectory() as tmp:
        report = _run(cfg, cfg.work_dir if cfg.work_dir is not None else Path(tmp), output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=1))


def _run(cfg: ProbeOracleCode, work: Path, output: Path) -> Dict:
    """Train the oracle-coded avatar in ``work`` and score it; the report, with its contact sheet beside ``output``."""
    bench = cfg.bench
    data = _make_case(cfg.case, CASES[cfg.case], bench, work)
    expressions = _standardised(data)
    OracleCodeModel.num_parameters = expressions.shape[1]

    config = tiny_config()
    model_target: Type = OracleCodeModel
    config.pipeline.model._target = model_target
    config.pipeline.datamanager.data = data
    config.pipeline.model.expression_planes = cfg.expression_planes
    name = "oracle_code" + (f"+expression_planes{cfg.expression_planes}" if cfg.expression_planes else "")
    config.output_dir, config.experiment_name = work / "runs", f"{cfg.case}__{name}"
    config.vis = "tensorboard"
    config.timestamp, config.overwrite, config.fit_blendshape_mapping = "run", True, False
    config.max_num_iterations, config.steps_per_eval_image = bench.iterations, max(bench.iterations // 4, 1)
    config.machine.device_type, config.viewer.quit_on_train_completion = bench.device, True
    torch.manual_seed(cfg.seed)
    trainer = config.setup()
    trainer.setup()
    pipeline = trainer.pipeline
    datamanager = pipeline.datamanager
    crops = _clean_crops(pipeline.model, (datamanager.train_dataset, datamanager.eval_dataset))
    pipeline.model.encoder.set_frames(crops.to(pipeline.model.device), expressions.to(pipeline.model.device))
    start = time.time()
    trainer.train()
    seconds = round(time.time() - start, 1)

    scorer = RegionScorer(load_lpips("alex", required=False))
    sheets = output.parent / f"{output.stem}_sheets"
    sheets.mkdir(parents=True, exist_ok=True)
    result = _score_pipeline(pipeline, data, bench, scorer, sheets / f"{cfg.case}__{name}.png")
    result["train_seconds"] = seconds
    results = {cfg.case: {name: result}}
    return {
        "config": {"case": cfg.case, "iterations": str(bench.iterations), "output": str(output), "seed": str(cfg.seed),
                   "expression_planes": str(cfg.expression_planes)},
        "device": f"cpu ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)",
        "expression_parameters": json.loads((data / "synth.json").read_text())["expression_keys"],
        "summary": _summary(results, name),
        "results": results,
    }


if __name__ == "__main__":
    main()
