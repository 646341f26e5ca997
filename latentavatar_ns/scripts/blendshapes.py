"""``ns-latentavatar-blendshapes {fill,fit}``: ARKit blendshapes for a dataset, and an avatar's mapping from them.

    ns-latentavatar-blendshapes fill --data data/anna                  # each frame's 52 weights, by MediaPipe
    ns-latentavatar-blendshapes fit --load-config RUN/config.yml       # RUN/blendshape_mapping.pt

Then ``ns-latentavatar-reenact --load-config RUN/config.yml --driving-blendshapes take.csv`` drives the
avatar with a Live Link Face recording, with no training per driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import tyro
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn, track
from typing_extensions import Annotated

from latentavatar_ns.utils.errors import cli_command


@dataclass
class FillBlendshapes:
    """Run MediaPipe's face landmarker on every frame of a dataset and store its 52 blendshape weights in the
    frame's params file (``blendshapes``); ns-latentavatar-process already does this for the datasets it makes."""

    data: Path
    """The dataset folder (train/ and eval/)."""
    overwrite: bool = False
    """Replace blendshapes a params file already holds (by default such frames are left as they are)."""


@dataclass
class FitMapping:
    """Fit the mapping from a trained avatar's training frames' blendshapes to their expression codes
    (seconds on a CPU), stored beside the avatar's config as blendshape_mapping.pt."""

    load_config: Path
    """The avatar: config.yml of an ns-train latentavatar run."""
    output: Optional[Path] = None
    """Where to write the mapping (default: blendshape_mapping.pt beside the config)."""
    steps: int = 1500
    """Full-batch Adam steps."""
    overwrite: bool = False
    """Replace an existing mapping."""


Commands = Union[
    Annotated[FillBlendshapes, tyro.conf.subcommand(name="fill")],
    Annotated[FitMapping, tyro.conf.subcommand(name="fit")],
]


def _fill(cmd: FillBlendshapes) -> None:
    from latentavatar_ns.assets.cache import asset_path
    from latentavatar_ns.blendshapes.frames import fill_blendshapes
    from latentavatar_ns.process.face import FaceLandmarker

    with FaceLandmarker(asset_path("face_landmarker.task")) as landmarker:
        def detect(rgb):
            found = landmarker.detect(rgb)
            return None if found is None else found.blendshapes

        report = fill_blendshapes(cmd.data, detect, cmd.overwrite,
                                  progress=lambda it, n: track(it, total=n, description="Finding blendshapes"))
    print(f"{len(report.written)} frame(s) given blendshapes, {len(report.kept)} kept as they were"
          f"{' (--overwrite replaces them)' if report.kept else ''}, {len(report.no_face)} without a face")
    for image in report.no_face[:10]:
        print(f"  no face: {image}")
    if len(report.no_face) > 10:
        print(f"  ... and {len(report.no_face) - 10} more")


def _fit(cmd: FitMapping) -> None:
    from latentavatar_ns.blendshapes.fit import fit_for_avatar

    with Progress(TextColumn("Fitting the blendshape mapping"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[loss]}"), transient=True) as progress:
        task = progress.add_task("", total=cmd.steps, loss="")
        path, report = fit_for_avatar(cmd.load_config, cmd.output, cmd.steps, cmd.overwrite,
                                      progress=lambda step, loss: progress.update(task, completed=step + 1,
                                                                                  loss=f"loss {loss:.4f}"))
    print(f"Mapping saved to {path}: {report.frames} frames, R² of the codes {report.train_r2:.3f} on them, "
          f"{report.val_r2:.3f} on every 10th frame held out of a separate fit")


@cli_command()
def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    cmd = tyro.cli(Commands, args=argv, prog="ns-latentavatar-blendshapes",
                   description="ARKit blendshapes for a dataset, and a trained avatar's mapping from them.")
    if isinstance(cmd, FillBlendshapes):
        _fill(cmd)
    else:
        _fit(cmd)


if __name__ == "__main__":
    entrypoint()
