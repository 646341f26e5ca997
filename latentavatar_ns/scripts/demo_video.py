"""``ns-latentavatar-demo-video``: the real-video path of the demo. Process a talking-face video (by default
the sample clip ``single_face.mp4`` from the asset cache) into a dataset, train ``latentavatar-tiny`` on it
with the real ``ns-train``, render a turntable and a held-out comparison of the clip's end, and print where
they are (the work is :mod:`latentavatar_ns.demo.video`)."""

from __future__ import annotations

from typing import Optional, Sequence

import tyro

from latentavatar_ns.demo.steps import print_outputs
from latentavatar_ns.demo.video import DemoVideoConfig, run_demo_video
from latentavatar_ns.utils.errors import cli_command


@cli_command()
def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    cfg = tyro.cli(DemoVideoConfig, args=argv)
    results, config_path = run_demo_video(cfg)
    out = cfg.output_dir
    psnr = results["heldout"]["full_frame"]["psnr"]
    print(f"\nDemo finished in {results['wall_time_s']:.0f} s (processing {results['process_s']:.0f} s). "
          f"Held-out PSNR {psnr:.2f} dB (full frame).")
    print_outputs(out, config_path, f"  dataset contact sheet: {out / 'data' / 'contact_sheet.png'}")


if __name__ == "__main__":
    entrypoint()
