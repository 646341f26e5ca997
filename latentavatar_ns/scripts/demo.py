"""``ns-latentavatar-demo``: make a synthetic head dataset, train ``latentavatar-tiny`` on it with the real
``ns-train``, then render a turntable video and a held-out comparison and print where they are. Runs on
two CPU cores in a few minutes (the work is :mod:`latentavatar_ns.demo.synthetic`)."""

from __future__ import annotations

from typing import Optional, Sequence

import tyro

from latentavatar_ns.demo.steps import print_outputs
from latentavatar_ns.demo.synthetic import DemoConfig, run_demo
from latentavatar_ns.utils.errors import cli_command


@cli_command()
def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    cfg = tyro.cli(DemoConfig, args=argv)
    results, config_path = run_demo(cfg)
    psnr = results["heldout"]["full_frame"]["psnr"]
    print(f"\nDemo finished in {results['wall_time_s']:.0f} s. Held-out PSNR {psnr:.2f} dB (full frame).")
    print_outputs(cfg.output_dir, config_path)


if __name__ == "__main__":
    entrypoint()
