"""Does a trained avatar read a real video's mouth from the head pose instead of from the code?

    python scripts/probe_pose_key.py --data DATASET --runs RUN_DIR [RUN_DIR ...] --output OUT.json

On a real video the tracked head pose can move with the expression (a nod with each smile, or a tracker
that reads a smile as a nod). An avatar trained on it can then draw each mouth for the pose it came
with, and leave its code nothing to carry. This probe measures both sides, on the processed dataset
``--data`` (``ns-latentavatar-process`` output, with landmarks) and the ``ns-train`` runs that learned it:

- the correlation of each stored head-pose component with the lip gap (inner lips apart, over the face's
  height, from the landmarks), over every frame;
- per run, the mouth gain (PSNR with the frame's own code minus with the mean training code) of the
  training and the held-out frames, for the frames with the mouth shut and those with it open. An avatar
  that reads the mouth from its code draws the mean mouth for both, and the own code wins on both; one
  that reads it from the pose draws each frame's mouth with either code;
- a contact sheet per run (``OUT_<run>.png``: ground truth | own code | mean code, for the most shut and
  the most open training frame).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np
import tyro
from nerfstudio.utils.eval_utils import eval_setup
from PIL import Image

from bench_expression import _boxes_of
from latentavatar_ns.data.format import list_frames, load_params
from latentavatar_ns.evaluation.expressiveness import RegionScorer, contact_sheet, score_split
from latentavatar_ns.utils.image import to_uint8

# MediaPipe face-mesh indices: inner upper and lower lip, forehead top and chin.
_INNER_LIPS, _FACE_SPAN = (13, 14), (10, 152)


@dataclass
class ProbePoseKey:
    """Whether avatars trained on a real video read its mouth from the head pose rather than from the code."""

    data: Path
    """Processed real video (``ns-latentavatar-process`` output; its frames carry landmarks)."""
    runs: List[Path] = field(default_factory=list)
    """``ns-train`` run directories (holding ``config.yml``) trained on ``data``."""
    output: Path = Path("bench/pose_key.json")
    """Where the numbers go; the contact sheets are written beside it."""
    shut_below: float = 0.02
    """Lip gap (over the face's height) below which a frame's mouth counts as shut."""


def lip_gaps(data: Path, split: str) -> np.ndarray:
    """Inner-lip gap over the face's height per frame of a split, from its landmarks."""
    gaps = []
    for frame in list_frames(data / split):
        extra = load_params(frame.params).extra
        if "landmarks" not in extra:
            raise SystemExit(f"error: {frame.params}: no landmarks; this probe needs a processed real video")
        points = np.asarray(extra["landmarks"], dtype=np.float64)
        gaps.append(np.linalg.norm(points[_INNER_LIPS[0]] - points[_INNER_LIPS[1]])
                    / np.linalg.norm(points[_FACE_SPAN[0]] - points[_FACE_SPAN[1]]))
    return np.asarray(gaps)


def pose_correlation(data: Path, gaps: Dict[str, np.ndarray]) -> List[float]:
    """Pearson correlation of each stored head-pose component (axis-angle, translation) with the lip gap."""
    poses = np.stack([load_params(f.params).pose.reshape(6) for s in ("train", "eval") for f in list_frames(data / s)])
    every = np.concatenate([gaps["train"], gaps["eval"]])
    return [float(np.corrcoef(poses[:, k], every)[0, 1]) for k in range(6)]


def probe_run(run: Path, data: Path, gaps: Dict[str, np.ndarray], cfg: ProbePoseKey, sheet: Path) -> Dict:
    """Mouth gain (own code minus mean code) of one run's training and held-out frames, shut and open apart."""
    if not (run / "config.yml").is_file():
        raise SystemExit(f"error: {run / 'config.yml'}: not found; --runs takes ns-train run directories")
    _, pipeline, _, _ = eval_setup(run / "config.yml", test_mode="test")
    boxes_of = _boxes_of(data)
    out: Dict = {}
    for split, key in (("train", "train"), ("eval", "heldout")):
        frames = score_split(pipeline, split, list(range(len(gaps[split]))), boxes_of, RegionScorer())["frames"]
        for name, chosen in (("shut", gaps[split] < cfg.shut_below), ("open", gaps[split] >= cfg.shut_below)):
            gains = [f["gain_db"]["mouth"] for f in frames if chosen[f["index"]]]
            out[f"{key}_{name}"] = {"frames": len(gains), "mouth_gain_db": float(np.mean(gains)) if gains else None}
    picks = [int(np.argmin(gaps["train"])), int(np.argmax(gaps["train"]))]
    Image.fromarray(to_uint8(contact_sheet(pipeline, picks, boxes_of, split="train", zoom=2))).save(sheet)
    return out


def main() -> None:
    cfg = tyro.cli(ProbePoseKey)
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    gaps = {split: lip_gaps(cfg.data, split) for split in ("train", "eval")}
    result: Dict = {"data": str(cfg.data), "pose_lip_gap_correlation": pose_correlation(cfg.data, gaps), "runs": {}}
    print("correlation of pose components with the lip gap:", [round(c, 2) for c in result["pose_lip_gap_correlation"]])
    for run in cfg.runs:
        name = run.parent.parent.name if run.name == "run" else run.name
        sheet = cfg.output.with_name(f"{cfg.output.stem}_{name}.png")
        result["runs"][name] = probe_run(run, cfg.data, gaps, cfg, sheet)
        print(name, json.dumps(result["runs"][name]), flush=True)
    cfg.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
