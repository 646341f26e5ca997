"""How much expression gain is there to win? The ceiling of ``bench_expression.py``'s gain on a synthetic case.

    python scripts/probe_expression_ceiling.py --cases detailed detailed_seed1 detailed_seed2 \\
        --results bench/expression_static_start_coarse.json --output bench/expression_ceiling.json

The expression gain of a region is PSNR(own code) - PSNR(mean code). How high it can be depends on
how much the held-out frames' expressions change the region at all, and on how well the avatar draws
it. For each held-out frame the synthetic head is rendered from the frame's camera, on its backdrop,
with every training frame's expression, and the renders are averaged: the best image (least squares)
that an avatar ignoring the expression can draw there. Its MSE against the frame rendered with its own
expression is the region's expression *signal* on that frame.

An avatar whose own-code render misses by MSE e, and whose mean-code render draws that best average
with the same error, gains 10 log10(1 + signal / e) (``expression_gain_ceiling``). Per case and
region the probe writes the best average's PSNR, the own-code PSNR at which the ceiling reaches the
issue's targets (1 dB on the eyes, 3 dB on the mouth), and, for every run of the ``--results`` files
on that case, the ceiling at the own-code PSNR the run measured (also per group) next to the gain it
measured.

``--groups`` splits the signal by what makes it: for a group of parameters (the lids, the gaze...)
the average is over the training frames' values of those parameters only, the others kept at the
frame's own, so its signal is what that group alone changes in each region.
"""

from __future__ import annotations

import json
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import tyro
from rich.progress import track

from bench_expression import CASES, BenchExpression, _boxes_of, _make_case
from latentavatar_ns.data.format import list_frames, load_params, read_camera
from latentavatar_ns.evaluation.expressiveness import expression_gain_ceiling, psnr_for_gain_ceiling
from latentavatar_ns.synthetic import EXPRESSION_KEYS, Expression, HeadIdentity, render_head, synthetic_background

TARGETS_DB = {"eyes": 1.0, "mouth": 3.0}
"""The issue's held-out expression-gain targets per region."""


@dataclass
class ProbeCeiling:
    cases: List[str] = field(default_factory=lambda: ["detailed", "detailed_seed1", "detailed_seed2"])
    """Synthetic cases of ``bench_expression.py`` (its CASES); made as it makes them if missing."""
    results: List[Path] = field(default_factory=list)
    """``bench_expression.py`` outputs whose runs on these cases are set against their ceiling."""
    work_dir: Optional[Path] = None
    """Where the benchmark's datasets are (``data/<case>``), as its ``--work-dir``; default a temporary folder."""
    groups: Dict[str, List[str]] = field(default_factory=lambda: {
        "jaw_and_smile": ["jaw_open", "smile"], "lids": ["blink_left", "blink_right"], "brows": ["brow_raise"],
        "gaze": ["gaze_x", "gaze_y"]})
    """Parameter groups whose signal is also measured alone, each a list of names of EXPRESSION_KEYS."""
    train_stride: int = 1
    """Average over every this-many-th training frame's expression (1: all of them; each costs a render)."""
    output: Path = Path("bench/expression_ceiling.json")
    """Where the numbers go. The per-frame signals of an earlier output there, made with the same
    --train-stride, are reused, so new --results cost no renders."""


def _render(info: Dict, expression: np.ndarray, params, camera, background: np.ndarray) -> np.ndarray:
    rgb, _ = render_head(HeadIdentity.preset(info["identity"]), Expression.from_array(expression), params.pose,
                         params.scale, camera, background, detail=info["detail"])
    return rgb.astype(np.float64)


def signal_mse(data: Path, varied: Optional[List[str]] = None, train_stride: int = 1) -> Dict[str, np.ndarray]:
    """Per region, per held-out frame: MSE between the frame and the best image blind to the ``varied``
    parameters (all if None): the average over the training frames' values of them, the rest kept."""
    info = json.loads((data / "synth.json").read_text())
    if info.get("drive_from") or info.get("num_views", 1) > 1:
        raise SystemExit(f"error: {data}: the probe needs a single-camera synthetic dataset of its own performance")
    width, height = info["resolution"]
    camera, background = read_camera(data, width, height), synthetic_background(data)
    train = np.stack([load_params(f.params).extra["expression"] for f in list_frames(data / "train")[::train_stride]])
    columns = [EXPRESSION_KEYS.index(k) for k in (varied or EXPRESSION_KEYS)]
    boxes_of = _boxes_of(data)
    out: Dict[str, List[float]] = {}
    label = f"Rendering {data.name}" + (f", {'+'.join(varied)} varied" if varied else "")
    for index, frame in enumerate(track(list_frames(data / "eval"), description=label)):
        params = load_params(frame.params)
        own = _render(info, params.extra["expression"], params, camera, background)
        mixed = np.repeat(params.extra["expression"][None], len(train), axis=0)
        mixed[:, columns] = train[:, columns]
        blind = np.mean([_render(info, e, params, camera, background) for e in mixed], axis=0)
        boxes = {"full": (0, 0, width, height), **boxes_of("eval", index, width, height)}
        for region, (x0, y0, x1, y1) in boxes.items():
            out.setdefault(region, []).append(float(((own - blind)[y0:y1, x0:x1] ** 2).mean()))
    return {region: np.asarray(values) for region, values in out.items()}


def _mean_psnr(signal: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Per region: the PSNR of a blind average's MSE against the truth, averaged over the frames (a mean of
    per-frame PSNRs would let one frame the average draws exactly outweigh the rest)."""
    return {r: float(-10 * np.log10(max(float(np.mean(s)), 1e-12))) for r, s in signal.items()}


def main() -> None:
    cfg = tyro.cli(ProbeCeiling)
    bad_keys = sorted({k for keys in cfg.groups.values() for k in keys} - set(EXPRESSION_KEYS))
    if bad_keys:
        raise SystemExit(f"error: --groups names {bad_keys}, not expression parameters {list(EXPRESSION_KEYS)}")
    unknown = [c for c in cfg.cases if c not in CASES or CASES[c].real]
    if unknown:
        raise SystemExit(f"error: {unknown} are not synthetic cases of bench_expression.py; "
                         f"choose from {[c for c in CASES if not CASES[c].real]}")
    missing = [str(p) for p in cfg.results if not p.is_file()]
    if missing:
        raise SystemExit(f"error: results file(s) not found: {missing}")
    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="expression_ceiling_"))
    bench = BenchExpression(work_dir=work)
    results = {str(p): json.loads(p.read_text())["results"] for p in cfg.results}
    config = {**asdict(cfg), "results": [str(p) for p in cfg.results], "output": str(cfg.output)}
    config.pop("work_dir")
    report: Dict = {"config": config,
                    "device": platform.processor() or platform.machine(), "targets_db": TARGETS_DB, "cases": {}}
    earlier = json.loads(cfg.output.read_text()) if cfg.output.is_file() else {}
    for case in cfg.cases:
        data = _make_case(case, CASES[case], bench, work)
        signals = earlier.get("cases", {}).get(case, {}).get("signal_mse", {}) \
            if earlier.get("config", {}).get("train_stride") == cfg.train_stride else {}
        for name, keys in [("all", None), *cfg.groups.items()]:
            if name not in signals:
                signals[name] = {r: s.tolist() for r, s in signal_mse(data, keys, cfg.train_stride).items()}
        signal = {r: np.asarray(s) for r, s in signals["all"].items()}
        row: Dict = {"best_blind_psnr": _mean_psnr(signal),
                     "best_blind_psnr_per_group": {g: _mean_psnr({r: np.asarray(s) for r, s in signals[g].items()})
                                                   for g in cfg.groups},
                     "own_psnr_for_target": {r: psnr_for_gain_ceiling(signal[r], t) for r, t in TARGETS_DB.items()},
                     "runs": {}}
        for path, per_case in results.items():
            for variant, run in per_case.get(case, {}).items():
                held = run["heldout"]
                row["runs"][f"{path}:{variant}"] = {
                    r: {"own_psnr": held["own"][r]["psnr"], "gain_db": held["gain_db"][r],
                        "ceiling_db": expression_gain_ceiling(signal[r], held["own"][r]["psnr"]),
                        "ceiling_db_per_group": {g: expression_gain_ceiling(np.asarray(signals[g][r]),
                                                                            held["own"][r]["psnr"])
                                                 for g in cfg.groups}}
                    for r in signal}
        report["cases"][case] = {**row, "signal_mse": signals}
        print(case, json.dumps({k: row[k] for k in ("best_blind_psnr", "best_blind_psnr_per_group",
                                                     "own_psnr_for_target")}, indent=1), flush=True)
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=2))
    print(f"wrote {cfg.output}")


if __name__ == "__main__":
    main()
