"""``ns-latentavatar-reenact``: render a trained avatar making a driver's expressions and head motion, through
a Y-network trained for the pair (or the avatar's own encoder with ``--self``), and write the video (the
rendering is :mod:`latentavatar_ns.reenact.reenact`).

    ns-latentavatar-reenact --load-config RUN/config.yml --ynet ynet/anna-bob --driving data/bob --output-path out.mp4
"""

from __future__ import annotations

from typing import Optional, Sequence

import tyro

from latentavatar_ns.reenact.reenact import ReenactConfig, reenact
from latentavatar_ns.utils.errors import cli_command


@cli_command()
def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    cfg = tyro.cli(ReenactConfig, args=argv)
    output, count = reenact(cfg)
    print(f"Wrote {output} ({count} frames)")


if __name__ == "__main__":
    entrypoint()
