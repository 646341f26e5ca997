"""Robustness benchmark: every malformed input of the test catalogue through the real commands.

    python scripts/bench_robustness.py [--output bench/robustness.json] [--only ns-train]

Builds a small synthetic dataset and a briefly trained avatar, then runs each case of
``tests/malformed_inputs.py`` (ns-train, ns-latentavatar-reenact / -ynet / -synth / -process) as a
subprocess, and writes how each one ended: one clear ``error:`` line, a reported skip, or a
failure (traceback, unclear error, malformed input accepted, timeout), plus whether a refused run
left output behind or wrote to its input.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from rich.progress import track

from latentavatar_ns.assets.cache import AssetMissingError, asset_path
from latentavatar_ns.demo.steps import train
from latentavatar_ns.synthetic import make_dataset

# The catalogue of malformed inputs lives with the tests that use it (it is not part of the package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import malformed_inputs  # noqa: E402


@dataclass
class BenchRobustness:
    output: Path = Path("bench/robustness.json")
    """Where the outcomes go."""
    only: Optional[str] = None
    """Run only the cases of this command (e.g. ns-train)."""
    timeout: float = 300.0
    """Seconds a case may run before it counts as a timeout."""


def _asset(name: str) -> Optional[Path]:
    try:
        return asset_path(name)
    except AssetMissingError:
        return None


def main() -> None:
    cfg = tyro.cli(BenchRobustness)
    began = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = make_dataset(root / "base" / "data", identity=0, num_frames=12, resolution=64, eval_fraction=0.25,
                               seed=0, progress=False)
        avatar = train(dataset, root / "base" / "runs", 10, "cpu", method="latentavatar-tiny")
        fixtures = malformed_inputs.Fixtures(dataset=dataset, avatar_config=avatar,
                                             face_video=_asset("single_face.mp4"),
                                             face_noface_video=_asset("face_noface.mov"),
                                             face_image=_asset("single_face.jpg"))
        cases = [c for c in malformed_inputs.all_cases() if cfg.only is None or c.command == cfg.only]
        outcomes, not_run = [], []
        for i, case in enumerate(track(cases, description="malformed inputs")):
            if not malformed_inputs.available(case, fixtures):
                not_run.append(case.name)
                continue
            outcome = malformed_inputs.run_case(case, root / f"case{i:03d}", fixtures, timeout=cfg.timeout)
            outcome.message = outcome.message.replace(str(root), "<work>")  # no machine paths in the report
            outcomes.append(outcome)
            if not outcome.ok:
                print(f"FAILED {case.name}: ended {outcome.ended}, partial output {outcome.partial_output}, "
                      f"input changed {outcome.input_changed}: {outcome.message}")
    result = {
        "cases_tried": len(outcomes),
        "cases_ok": sum(o.ok for o in outcomes),
        "endings": dict(Counter(o.ended for o in outcomes)),
        "by_command": {command: {"tried": sum(o.command == command for o in outcomes),
                                 "ok": sum(o.ok for o in outcomes if o.command == command)}
                       for command in sorted({o.command for o in outcomes})},
        "partial_outputs": sum(o.partial_output for o in outcomes),
        "inputs_changed": sum(o.input_changed for o in outcomes),
        "not_run": not_run,
        "wall_time_s": round(time.time() - began, 1),
        "cases": [o.to_dict() for o in outcomes],
    }
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=2))


if __name__ == "__main__":
    main()
