"""Each frame's blendshapes in a dataset: read from its params file, or found by MediaPipe and written there.

``ns-latentavatar-process`` stores them for every kept frame (``blendshapes``, (52,), in
:data:`~latentavatar_ns.blendshapes.names.BLENDSHAPE_NAMES` order); a dataset made another way gets
them from ``ns-latentavatar-blendshapes fill``, which runs the landmarker on each frame's image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import numpy as np
from jaxtyping import Float

from latentavatar_ns.blendshapes.names import BLENDSHAPE_NAMES
from latentavatar_ns.data.format import FrameFiles, FrameParams, list_frames, load_params, read_rig, save_params
from latentavatar_ns.utils.errors import LatentAvatarError
from latentavatar_ns.utils.io import atomic_write

SPLITS = ("train", "eval")


def frame_blendshapes(params_path: Path) -> Optional[Float[np.ndarray, "52"]]:
    """The frame's stored blendshapes, or None when its params file has none."""
    return params_blendshapes(load_params(params_path), params_path)


def params_blendshapes(params: FrameParams, params_path: Path) -> Optional[Float[np.ndarray, "52"]]:
    """The blendshapes a frame's params hold (read from ``params_path``), checked; None when it has none."""
    if "blendshapes" not in params.extra:
        return None
    weights = np.asarray(params.extra["blendshapes"], dtype=np.float64).reshape(-1)
    if weights.shape != (len(BLENDSHAPE_NAMES),) or not np.isfinite(weights).all():
        raise LatentAvatarError(f"{params_path}: 'blendshapes' must hold {len(BLENDSHAPE_NAMES)} finite weights, "
                                f"found shape {weights.shape}")
    return weights


def has_blendshapes(data: Path) -> bool:
    """Whether a monocular dataset's every training frame stores blendshapes (False for other layouts)."""
    try:
        frames = split_frames(data, "train")
        return bool(frames) and all("blendshapes" in load_params(f.params).extra for f in frames)
    except LatentAvatarError:
        return False


def split_frames(data: Path, split: str) -> List[FrameFiles]:
    """The frames of a monocular dataset's split (blendshapes belong to a face video, one view)."""
    if read_rig(Path(data)) is not None:
        raise LatentAvatarError(f"{data}: a multi-view capture; blendshapes are read from monocular datasets only")
    split_dir = Path(data) / split
    if not split_dir.is_dir():
        raise LatentAvatarError(f"{split_dir}: split folder is missing")
    return list_frames(split_dir)


@dataclass
class FillReport:
    """What ``fill`` did, per frame."""

    written: List[Path] = field(default_factory=list)
    kept: List[Path] = field(default_factory=list)
    """Params files that had blendshapes already (left as they were, without --overwrite)."""
    no_face: List[Path] = field(default_factory=list)
    """Images in which the landmarker found no face (their params files are left as they were)."""


def fill_blendshapes(data: Path, detect: Callable[[np.ndarray], Optional[np.ndarray]], overwrite: bool = False,
                     progress: Callable[[Iterable, int], Iterable] = lambda it, n: it) -> FillReport:
    """Write the blendshapes ``detect`` finds in each frame's image into its params file (atomically).

    ``detect`` maps an (H, W, 3) uint8 image to 52 weights, or None when it finds no face.
    """
    from PIL import Image

    report = FillReport()
    frames = [frame for split in SPLITS for frame in split_frames(data, split)]
    for frame in progress(frames, len(frames)):
        params = load_params(frame.params)
        if "blendshapes" in params.extra and not overwrite:
            report.kept.append(frame.params)
            continue
        with Image.open(frame.image) as image:
            weights = detect(np.asarray(image.convert("RGB")))
        if weights is None:
            report.no_face.append(frame.image)
            continue
        params.extra["blendshapes"] = np.asarray(weights, dtype=np.float32).reshape(len(BLENDSHAPE_NAMES))
        with atomic_write(frame.params) as tmp:
            save_params(tmp, params)
        report.written.append(frame.params)
    return report
