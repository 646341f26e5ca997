"""Where a synthetic frame's mouth and eyes are, in pixels, from its ground truth.

:func:`region_boxes` projects the canonical boxes of :data:`~latentavatar_ns.synthetic.head.CANONICAL_REGIONS`
through a frame's pose and camera; :func:`region_boxes_of_frame` does it for a frame of a dataset on
disk. They bound the regions where an avatar's expressiveness shows, for region metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from latentavatar_ns.data.format import (
    IMAGE_SUFFIXES,
    CameraSpec,
    DatasetError,
    frame_paths,
    load_params,
    read_camera,
    read_rig,
)
from latentavatar_ns.synthetic.head import CANONICAL_REGIONS
from latentavatar_ns.synthetic.primitives import _box_corners
from latentavatar_ns.synthetic.raycast import canonical_to_pixel


def region_boxes(pose: np.ndarray, scale: float, camera: CameraSpec) -> Dict[str, Tuple[int, int, int, int]]:
    """Pixel boxes ``{"mouth": (x0, y0, x1, y1), "eyes": (...)}`` of one frame, from the ground truth.

    ``pose`` (6,) is axis-angle then translation and ``scale`` is S, as in params files; ``camera``
    is the dataset's (``read_camera`` at the image size, or a view of a multi-view rig). Each box
    bounds the projection of the eight corners of its box in :data:`CANONICAL_REGIONS`, whatever the
    expression, so a metric restricted to it compares the same region in every frame and method.
    Boxes are half-open pixel ranges clipped to the image: ``image[y0:y1, x0:x1]`` (H x W x C) is the
    region, empty (x0 == x1 or y0 == y1) if it is out of view.
    """
    width, height = int(camera.width), int(camera.height)
    boxes = {}
    for name, (lo, hi) in CANONICAL_REGIONS.items():
        uv = canonical_to_pixel(_box_corners(lo, hi), pose, scale, camera)
        (x0, y0), (x1, y1) = np.floor(uv.min(axis=0)), np.ceil(uv.max(axis=0))
        boxes[name] = (int(np.clip(x0, 0, width)), int(np.clip(y0, 0, height)),
                       int(np.clip(x1, 0, width)), int(np.clip(y1, 0, height)))
    return boxes


def region_boxes_of_frame(dataset_dir: Path, split: str, index: int,
                          view: Optional[str] = None) -> Dict[str, Tuple[int, int, int, int]]:
    """:func:`region_boxes` of frame ``index`` of ``split`` (``train`` or ``eval``) of a dataset on disk.

    Pose and scale come from the frame's params file, the camera from ``camera.json`` rescaled to the
    frame's image size (the official camera if there is none; a per-frame ``intrinsics`` overrides
    its K). A multi-view capture needs ``view`` (e.g. ``"cam01"``): the moment's boxes in that view.
    """
    dataset_dir = Path(dataset_dir)
    rig = read_rig(dataset_dir)
    if rig is None and view is not None:
        raise DatasetError(f"{dataset_dir}: a single-camera dataset has no view {view!r}")
    if rig is not None and view not in rig.views:
        raise DatasetError(f"{dataset_dir}: a multi-view capture; name one of its views ({', '.join(rig.names)}), "
                           f"got {view!r}")
    files = frame_paths(dataset_dir / split, index, view=view)
    image = next((files.image.with_suffix(suffix) for suffix in IMAGE_SUFFIXES
                  if files.image.with_suffix(suffix).exists()), None)
    if image is None:
        raise DatasetError(f"{files.image.with_suffix('')}: no image ({', '.join(IMAGE_SUFFIXES)}) for frame {index}")
    from PIL import Image

    with Image.open(image) as img:  # reads the header only
        width, height = img.size
    # (a multi-view capture's ``view`` was checked above to be one of its views)
    camera = (read_camera(dataset_dir, width, height) if rig is None
              else rig.rescaled(width, height).views[view])  # type: ignore[index]
    params = load_params(files.params)
    if params.intrinsics is not None:
        k = params.intrinsics
        camera = CameraSpec(width, height, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]),
                            camera.world_to_camera)
    return region_boxes(params.pose, params.scale, camera)
