"""An expression score for reenactment where no ground truth exists: does the avatar make the driver's faces?

MediaPipe's face landmarker reads the 52 blendshapes of every rendered frame and of the frame that
drove it. Per scored expression (jaw open, smile, blink left and right, brow raise; see
:data:`~latentavatar_ns.blendshapes.names.SCORED`) the score is the Pearson correlation of the two
over the frames, and their mean absolute difference. The landmarker reads both sides the same way,
so its own biases largely cancel; a render that does not change scores a correlation of 0, whatever
its image quality (an expression the driver never changes has none: None).
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import numpy as np
from jaxtyping import Float

from latentavatar_ns.blendshapes.names import SCORED, index


def read_blendshapes(images: Iterable[np.ndarray], detect: Callable[[np.ndarray], Optional[np.ndarray]]
                     ) -> Float[np.ndarray, "N 52"]:
    """The blendshapes ``detect`` reads in each (H, W, 3) uint8 image; a row of NaN where it finds no face."""
    rows = []
    for image in images:
        found = detect(image)
        rows.append(np.full(52, np.nan) if found is None else np.asarray(found, dtype=np.float64).reshape(52))
    return np.stack(rows) if rows else np.zeros((0, 52))


def _scored(weights: np.ndarray) -> Dict[str, np.ndarray]:
    return {name: weights[:, [index(n) for n in names]].mean(axis=1) for name, names in SCORED.items()}


def expression_score(driver: Float[np.ndarray, "N 52"], rendered: Float[np.ndarray, "N 52"]) -> Dict:
    """Correlation and mean absolute difference per scored expression, over frames with a face on both sides."""
    both = ~np.isnan(driver).any(axis=1) & ~np.isnan(rendered).any(axis=1)
    out: Dict = {"frames": int(len(driver)), "faces_found": float(both.mean()) if len(driver) else 0.0,
                 "correlation": {}, "mae": {}}
    if both.sum() < 2:
        return out
    drv, ren = _scored(driver[both]), _scored(rendered[both])
    for name in SCORED:
        a, b = drv[name], ren[name]
        if a.std() <= 1e-6:
            out["correlation"][name] = None
        else:
            out["correlation"][name] = float(np.corrcoef(a, b)[0, 1]) if b.std() > 1e-6 else 0.0
        out["mae"][name] = float(np.abs(a - b).mean())
    values = [v for v in out["correlation"].values() if v is not None]
    out["mean_correlation"] = float(np.mean(values)) if values else None
    out["mean_mae"] = float(np.mean(list(out["mae"].values())))
    return out
