"""A contact sheet: sampled output frames with the matte tinted, detected landmarks and the
template re-projected through the recorded pose and intrinsics, so a person can check at a glance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np


@dataclass
class SheetTile:
    image: np.ndarray
    """(R, R, 3) uint8 output frame."""
    mask: np.ndarray
    """(R, R) float matte in [0, 1]."""
    landmarks: np.ndarray
    """(478, 2) detected landmarks in output pixels."""
    reprojected: np.ndarray
    """(K, 2) rigid template points projected with the recorded pose and camera."""
    face_corners: np.ndarray
    """(4, 2) the encoder's face square in output pixels."""
    label: str


def draw_tile(tile: SheetTile, size: int) -> np.ndarray:
    import cv2

    img = tile.image.astype(np.float32)
    tint = np.array([40.0, 200.0, 255.0], dtype=np.float32)
    outside = (1.0 - tile.mask[..., None]) * 0.55
    img = img * (1.0 - outside) + tint * outside * 0.35  # matte: background darkened and tinted blue
    img = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA)
    s = size / tile.image.shape[0]
    edge = (cv2.Canny((tile.mask * 255).astype(np.uint8), 64, 192) > 0).astype(np.uint8)
    on_edge = cv2.resize(edge, (size, size), interpolation=cv2.INTER_NEAREST) > 0
    img[on_edge] = (255, 255, 0)
    for x, y in tile.landmarks * s:
        cv2.circle(img, (int(x), int(y)), 1, (0, 255, 0), -1, lineType=cv2.LINE_AA)
    for x, y in tile.reprojected * s:
        cv2.circle(img, (int(x), int(y)), 3, (255, 0, 0), 1, lineType=cv2.LINE_AA)
    corners = (tile.face_corners * s).astype(np.int32)
    cv2.polylines(img, [corners[[0, 1, 3, 2]]], True, (255, 0, 255), 1, lineType=cv2.LINE_AA)
    cv2.putText(img, tile.label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def write_contact_sheet(path: Path, tiles: Sequence[SheetTile], title: str, tile_size: int = 192,
                        columns: int = 4) -> Path:
    """Tiles in a grid under a one-line title. Legend: green = detected landmarks, red circles =
    template re-projected through the stored pose, magenta = encoder face crop, yellow = matte edge."""
    import cv2
    from PIL import Image

    rows = max(1, -(-len(tiles) // columns))
    header = 36
    sheet = np.zeros((header + rows * tile_size, columns * tile_size, 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[header + r * tile_size : header + (r + 1) * tile_size, c * tile_size : (c + 1) * tile_size] = \
            draw_tile(tile, tile_size)
    lines: List[str] = [title, "green: landmarks  red: template through stored pose  magenta: encoder crop  "
                        "yellow: matte edge"]
    for k, line in enumerate(lines):
        cv2.putText(sheet, line[: columns * tile_size // 7], (6, 14 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    Image.fromarray(sheet).save(path)
    return path
