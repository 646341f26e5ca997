"""Procedural 3D heads rendered by analytic ray casting, for datasets with exact ground truth.

One job per module: :mod:`.head` (identity, expression and where the features sit),
:mod:`.primitives` and :mod:`.scene` (the head's geometry and paint), :mod:`.raycast` (rendering a
frame), :mod:`.motion` (a performance over time), :mod:`.boxes` (ground-truth mouth and eye boxes)
and :mod:`.writer` (datasets on disk). ``ns-latentavatar-synth`` is ``latentavatar_ns.scripts.synth``.
"""

from latentavatar_ns.synthetic.boxes import region_boxes, region_boxes_of_frame
from latentavatar_ns.synthetic.head import (
    CANONICAL_REGIONS,
    EXPRESSION_KEYS,
    EYE_X,
    EYE_Y,
    FACE_REGION,
    HEAD_SCALE,
    MOUTH_Y,
    NECK_BOTTOM,
    NOSE_TIP,
    Expression,
    HeadIdentity,
)
from latentavatar_ns.synthetic.motion import sample_expressions, sample_motion
from latentavatar_ns.synthetic.raycast import canonical_to_pixel, make_background, render_head
from latentavatar_ns.synthetic.writer import (
    SYNTH_FILE,
    DatasetOptions,
    camera_rig,
    make_dataset,
    synthetic_background,
    view_yaws,
)

__all__ = [
    "CANONICAL_REGIONS",
    "EXPRESSION_KEYS",
    "EYE_X",
    "EYE_Y",
    "FACE_REGION",
    "HEAD_SCALE",
    "MOUTH_Y",
    "NECK_BOTTOM",
    "NOSE_TIP",
    "SYNTH_FILE",
    "DatasetOptions",
    "Expression",
    "HeadIdentity",
    "camera_rig",
    "canonical_to_pixel",
    "make_background",
    "make_dataset",
    "region_boxes",
    "region_boxes_of_frame",
    "render_head",
    "sample_expressions",
    "sample_motion",
    "synthetic_background",
    "view_yaws",
]
