"""``ns-latentavatar-reenact``: render a trained avatar making a driver's expressions and head motion, through
a Y-network trained for the pair (or the avatar's own encoder with ``--self``, or ARKit blendshapes through
the avatar's blendshape mapping), and write the video (the rendering is :mod:`latentavatar_ns.reenact.reenact`).

    ns-latentavatar-reenact --load-config RUN/config.yml --ynet ynet/anna-bob --driving data/bob --output-path out.mp4
    ns-latentavatar-reenact --load-config RUN/config.yml --driving bob.mp4 --via blendshapes --output-path out.mp4
    ns-latentavatar-reenact --load-config RUN/config.yml --driving-blendshapes take.csv --output-path out.mp4
"""

from __future__ import annotations

from typing import Optional, Sequence

import tyro

from latentavatar_ns.reenact.reenact import ReenactConfig, reenact
from latentavatar_ns.utils.errors import cli_command


@cli_command()
def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    cfg = tyro.cli(ReenactConfig, args=argv)
    report = reenact(cfg)
    landmarker = f"landmarker {report.landmarker_ms:.1f} ms, " if report.landmarker_ms else ""
    print(f"Wrote {report.output} ({report.frames} frames, {report.fps:.1f} fps; per frame: {landmarker}codes "
          f"{report.codes_ms:.1f} ms, render {report.render_ms:.1f} ms)")


if __name__ == "__main__":
    entrypoint()
