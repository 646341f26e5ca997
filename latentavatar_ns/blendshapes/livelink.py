"""Live Link Face recordings: the iPhone app's CSV of ARKit blendshapes and head rotation per frame.

The app writes a header row, ``Timecode,BlendShapeCount,EyeBlinkLeft,...,TongueOut,HeadYaw,HeadPitch,
HeadRoll,LeftEyeYaw,...``, then one row per frame: blendshape weights in [0, 1] and angles in radians.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from jaxtyping import Float

from latentavatar_ns.blendshapes.names import BLENDSHAPE_NAMES, LIVELINK_COLUMNS
from latentavatar_ns.utils.errors import LatentAvatarError

HEAD_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll")


class BlendshapeFileError(LatentAvatarError, ValueError):
    """A blendshape recording that cannot be read."""


@dataclass
class BlendshapeTrack:
    """Blendshape weights per frame, in :data:`BLENDSHAPE_NAMES` order, and the head's rotation when recorded."""

    weights: Float[np.ndarray, "T 52"]
    head_yaw_pitch_roll: Optional[Float[np.ndarray, "T 3"]]
    """Radians, as the app records them; None when the file has no head columns."""

    def __len__(self) -> int:
        return len(self.weights)


def read_livelink_csv(path: Path) -> BlendshapeTrack:
    """Read a Live Link Face CSV; one clear error naming the file for anything else."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BlendshapeFileError(f"{path}: cannot read the blendshape CSV ({err})") from None
    if not rows:
        raise BlendshapeFileError(f"{path}: empty file; expected Live Link Face's CSV (a header row, then one row "
                                  "per frame)")
    header = [name.strip() for name in rows[0]]
    missing = [column for column in LIVELINK_COLUMNS if column not in header]
    if missing:
        raise BlendshapeFileError(f"{path}: no blendshape column(s) {', '.join(missing[:4])}"
                                  f"{f' and {len(missing) - 4} more' if len(missing) > 4 else ''}; expected Live "
                                  "Link Face's CSV header (Timecode,BlendShapeCount,EyeBlinkLeft,...)")
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not body:
        raise BlendshapeFileError(f"{path}: the header has no frames under it")
    weights = np.zeros((len(body), len(BLENDSHAPE_NAMES)))
    columns = {name: header.index(name) for name in (*LIVELINK_COLUMNS, *HEAD_COLUMNS) if name in header}
    has_head = all(name in columns for name in HEAD_COLUMNS)
    head = np.zeros((len(body), 3))
    for i, row in enumerate(body):
        try:
            for column, name in LIVELINK_COLUMNS.items():
                weights[i, BLENDSHAPE_NAMES.index(name)] = float(row[columns[column]])
            if has_head:
                head[i] = [float(row[columns[name]]) for name in HEAD_COLUMNS]
        except (ValueError, IndexError):
            raise BlendshapeFileError(f"{path}: row {i + 2} is short or holds something that is not a number") \
                from None
    if not np.isfinite(weights).all() or not np.isfinite(head).all():
        raise BlendshapeFileError(f"{path}: holds NaN or infinite values")
    return BlendshapeTrack(weights.clip(0.0, 1.0), head if has_head else None)


def write_livelink_csv(path: Path, weights: Float[np.ndarray, "T 52"],
                       head_yaw_pitch_roll: Optional[Float[np.ndarray, "T 3"]] = None, fps: int = 60) -> None:
    """Write weights (:data:`BLENDSHAPE_NAMES` order) in Live Link Face's layout, for tests and examples."""
    header: List[str] = ["Timecode", "BlendShapeCount", *LIVELINK_COLUMNS, "TongueOut", *HEAD_COLUMNS]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for i, frame in enumerate(np.asarray(weights)):
            seconds, sub = divmod(i, fps)
            row: Sequence = [f"00:00:{seconds:02d}:{sub:02d}.000", 61,
                             *[f"{frame[BLENDSHAPE_NAMES.index(name)]:.6f}" for name in LIVELINK_COLUMNS.values()], "0",
                             *([f"{v:.6f}" for v in head_yaw_pitch_roll[i]] if head_yaw_pitch_roll is not None
                               else ["0", "0", "0"])]
            writer.writerow(row)
