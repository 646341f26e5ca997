"""Contact sheet of synthetic heads, to eyeball the renderer after changing it.

One row per identity: neutral, jaw open, smile, wink with raised brows and sideways gaze, then a few
frames of a sampled performance. Prints the mean render time per frame.

    python scripts/synth_preview.py --identities 0 2 --output synth_preview.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from latentavatar_ns.data.format import CameraSpec
from latentavatar_ns.synthetic import (
    Expression,
    HeadIdentity,
    make_background,
    render_head,
    sample_expressions,
    sample_motion,
)
from latentavatar_ns.utils.image import to_uint8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--resolution", type=int, default=192)
    parser.add_argument("--output", default="synth_preview.png")
    args = parser.parse_args()

    camera = CameraSpec.official(args.resolution)
    front = np.array([0.0, 0.0, 0.0, 0.0, 0.013, 0.0])
    turned = np.array([0.05, 0.35, 0.0, 0.0, 0.013, 0.0])
    posed = [
        (Expression(), front),
        (Expression(jaw_open=1.0), front),
        (Expression(smile=1.0, jaw_open=0.3), turned),
        (Expression(blink_left=1.0, brow_raise=1.0, gaze_x=-0.8), -turned * [1, 1, 1, 0, -1, 0]),
    ]
    poses, scales = sample_motion(60, seed=0)
    sampled = [(e, poses[i], scales[i]) for i, e in enumerate(sample_expressions(60, seed=0)) if i % 15 == 7]
    rows, times = [], []
    for identity in args.identities:
        head = HeadIdentity.preset(identity)
        background = make_background(args.resolution, args.resolution, seed=identity)
        row = []
        for expression, pose, scale in [(e, p, 0.1) for e, p in posed] + sampled:
            start = time.perf_counter()
            rgb, _ = render_head(head, expression, pose, scale, camera, background)
            times.append(time.perf_counter() - start)
            row.append(rgb)
        rows.append(np.concatenate(row, axis=1))
    Image.fromarray(to_uint8(np.concatenate(rows, axis=0))).save(args.output)
    print(f"wrote {args.output}; {1000 * np.mean(times):.1f} ms per {args.resolution} px frame")


if __name__ == "__main__":
    main()
