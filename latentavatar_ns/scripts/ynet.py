"""``ns-latentavatar-ynet``: train the Y-network (shared encoder, avatar and actor decoders) and the mapping
to a trained avatar's theta, for one avatar and one actor, and print the ``ns-latentavatar-reenact`` command
that uses it (the training is :mod:`latentavatar_ns.reenact.train_ynet`).

    ns-latentavatar-ynet --load-config RUN/config.yml --actor-data data/bob --output-dir ynet/anna-bob
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import tyro

from latentavatar_ns.reenact.train_ynet import PREVIEW_FILE, YNetTrainConfig, train_ynet
from latentavatar_ns.utils.errors import cli_command


@cli_command()
def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    cfg = tyro.cli(YNetTrainConfig, args=argv)
    result = train_ynet(cfg)
    print(f"Y-network saved to {result.checkpoint} ({result.seconds:.0f} s); preview: "
          f"{Path(cfg.output_dir) / PREVIEW_FILE}")
    print(f"reenact: ns-latentavatar-reenact --load-config {cfg.load_config} --ynet {cfg.output_dir} "
          f"--driving {cfg.actor_data} --output-path reenacted.mp4")


if __name__ == "__main__":
    entrypoint()
