"""A head whose stored poses nod with its jaw (bench_expression.py), and the probe that looks for it on real video."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_expression import MOUTH_NOD_CANONICAL, MOUTH_NOD_DEG, _expressions, _pose_follows_mouth  # noqa: E402
from probe_pose_key import lip_gaps  # noqa: E402

from latentavatar_ns.data.format import list_frames, load_params  # noqa: E402


def test_stored_training_poses_nod_with_the_jaw_and_keep_the_true_pose(synthetic_dataset: Path, tmp_path: Path):
    data = tmp_path / "head"
    shutil.copytree(synthetic_dataset, data)
    _pose_follows_mouth(data)
    jaw = _expressions(data, "train")[:, 0]
    z = (jaw - jaw.mean()) / jaw.std()
    originals = list_frames(synthetic_dataset / "train")
    for k, frame in enumerate(list_frames(data / "train")):
        params = load_params(frame.params)
        true = params.extra["true_pose"]
        assert np.allclose(true, load_params(originals[k].params).pose)
        error = Rotation.from_rotvec(params.pose[:3]) * Rotation.from_rotvec(true[:3]).inv()
        assert np.allclose(error.as_rotvec(), [np.deg2rad(-MOUTH_NOD_DEG * z[k]), 0.0, 0.0], atol=1e-6)
        assert np.allclose(params.pose[3:] - true[3:], [0.0, MOUTH_NOD_CANONICAL * z[k] * params.scale, 0.0],
                           atol=1e-6)
    for before, after in zip(list_frames(synthetic_dataset / "eval"), list_frames(data / "eval")):
        assert np.array_equal(load_params(before.params).pose, load_params(after.params).pose)


def test_pose_key_probe_names_a_frame_without_landmarks(synthetic_dataset: Path):
    with pytest.raises(SystemExit, match="no landmarks"):
        lip_gaps(synthetic_dataset, "train")
