"""``ns-latentavatar-process``: turn a video (or a folder of images) of one person into a latentavatar dataset
(head crops, mattes, per-frame head pose, encoder face crops, a train/eval split) and print a summary of
what was kept (the work is :mod:`latentavatar_ns.process.video_to_dataset`)."""

from __future__ import annotations

from typing import Optional, Sequence

import tyro

from latentavatar_ns.process.video_to_dataset import SHEET_FILE, SUMMARY_FILE, ProcessConfig, process
from latentavatar_ns.utils.errors import cli_command


@cli_command()
def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    cfg = tyro.cli(ProcessConfig, args=argv)
    summary = process(cfg)
    skipped = summary["skipped"]
    listed = ", ".join(str(s["source_frame"]) for s in skipped[:20]) + (" ..." if len(skipped) > 20 else "")
    print(f"Wrote {cfg.output_dir}: {summary['num_train']} train + {summary['num_eval']} eval frames at "
          f"{cfg.resolution}x{cfg.resolution} from {summary['frames_decoded']} frames of {cfg.input} "
          f"in {summary['wall_time_s']:.1f} s")
    if skipped:
        print(f"  skipped {len(skipped)} frames without a usable face: {listed}")
    print(f"  landmark reprojection {summary['reprojection_px']['mean']:.2f} px (mean), "
          f"mask coverage {summary['mask_coverage']['mean']:.0%} (mean)")
    print(f"  check it at a glance: {cfg.output_dir / SHEET_FILE}")
    print(f"  summary: {cfg.output_dir / SUMMARY_FILE}")


if __name__ == "__main__":
    entrypoint()
