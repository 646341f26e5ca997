"""Fitting the blendshape mapping of a trained avatar (``ns-latentavatar-blendshapes fit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from latentavatar_ns.blendshapes.frames import frame_blendshapes, split_frames
from latentavatar_ns.blendshapes.mapping import MAPPING_FILE, FitReport, MappingError, fit_mapping, save_mapping
from latentavatar_ns.utils.errors import OutputExistsError


def fit_for_avatar(config_path: Path, output: Optional[Path] = None, steps: int = 1500, overwrite: bool = False,
                   progress: Optional[Callable[[int, float], None]] = None) -> Tuple[Path, FitReport]:
    """Fit the mapping from the avatar's training frames' blendshapes to their stored codes, and save it
    (default: ``blendshape_mapping.pt`` beside the config)."""
    from latentavatar_ns.reenact.avatar import load_avatar

    avatar = load_avatar(config_path)
    output = Path(output) if output is not None else Path(config_path).parent / MAPPING_FILE
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} already exists; pass --overwrite to fit it again")
    frames = split_frames(avatar.data_dir, "train")
    codes = avatar.state["_model.frame_codes"][: len(frames)]
    rows, weights = [], []
    for i, frame in enumerate(frames):
        found = frame_blendshapes(frame.params)
        if found is not None:
            rows.append(i)
            weights.append(found)
    if not rows:
        raise MappingError(f"{avatar.data_dir}: the training frames have no blendshapes; fill them in with "
                           f"ns-latentavatar-blendshapes fill --data {avatar.data_dir}")
    code_rows = codes[torch.tensor(rows)]
    if not bool((code_rows.abs().sum(dim=1) > 0).all()):
        raise MappingError(f"{avatar.checkpoint}: some training frames have no stored code yet (train longer)")
    mapping, report = fit_mapping(torch.from_numpy(np.stack(weights)), code_rows, steps=steps, progress=progress)
    report.extra = {"frames_without_blendshapes": len(frames) - len(rows), "checkpoint_step": avatar.step}
    save_mapping(output, mapping, avatar.fingerprint(), report)
    return output, report
