"""Argument checks shared by the reenactment commands; pure pathlib, so bad input fails fast."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from latentavatar_ns.utils.errors import LatentAvatarError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".wmv", ".flv")


class ReenactError(LatentAvatarError, ValueError):
    """Bad input to the reenactment tools; the message is one line naming the file and the problem."""


def check_dataset_dir(path: Optional[Path], what: str) -> Path:
    """A dataset folder argument: it exists and is a folder; a video file gets a pointer to preprocessing."""
    if path is None:
        raise ReenactError(f"no {what} given")
    path = Path(path)
    if not path.exists():
        raise ReenactError(f"{path}: {what} not found")
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            raise ReenactError(f"{path}: {what} is a video file; run ns-latentavatar-process on it first and "
                               "pass the dataset folder it writes")
        raise ReenactError(f"{path}: {what} must be a dataset folder (with train/ and eval/), not a file")
    return path


def check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ReenactError(f"{path}: {what} not found")
    return path


def check_new_file(path: Path, overwrite: bool) -> Path:
    """An output file that may be replaced only with --overwrite."""
    path = Path(path)
    if path.is_dir():
        raise ReenactError(f"{path}: output path is a folder; give a file name such as out.mp4")
    if path.exists() and not overwrite:
        raise ReenactError(f"{path} already exists; pass --overwrite to replace it")
    return path


def check_outside(output: Path, inputs: Dict[str, Optional[Path]]) -> Path:
    """Outputs never go inside an input folder (a dataset, the avatar's run): refuse, naming both."""
    output = Path(output).resolve()
    for what, folder in inputs.items():
        if folder is not None and Path(folder).is_dir() and Path(folder).resolve() in (output, *output.parents):
            raise ReenactError(f"{output}: output would be written inside the {what} ({folder}); "
                               "choose a path outside it")
    return output
