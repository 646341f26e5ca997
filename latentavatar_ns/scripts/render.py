"""``ns-latentavatar-render {turntable,spiral}``: novel-view videos of a trained avatar around its head.

    ns-latentavatar-render turntable --load-config RUN/config.yml --output-path turntable.mp4
    ns-latentavatar-render spiral --load-config RUN/config.yml --output-path spiral.mp4 --frame 12

The paths and the rendering are :mod:`latentavatar_ns.render.novel_views`.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import tyro
from typing_extensions import Annotated

from latentavatar_ns.render.novel_views import Spiral, Turntable, render_path
from latentavatar_ns.utils.errors import cli_command

Commands = Union[
    Annotated[Turntable, tyro.conf.subcommand(name="turntable")],
    Annotated[Spiral, tyro.conf.subcommand(name="spiral")],
]


@cli_command()
def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    cfg = tyro.cli(Commands, args=argv)
    path = render_path(cfg)
    print(f"wrote {path}")


if __name__ == "__main__":
    entrypoint()
