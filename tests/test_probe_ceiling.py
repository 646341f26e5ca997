"""scripts/probe_expression_ceiling.py: the signal each parameter group leaves in each region."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from probe_expression_ceiling import signal_mse  # noqa: E402

from latentavatar_ns.synthetic import make_dataset  # noqa: E402


def test_signal_is_where_the_varied_parameters_act(tmp_path: Path):
    data = make_dataset(tmp_path / "head", identity=1, num_frames=12, resolution=48, eval_fraction=0.25, seed=1,
                        detail=True, progress=False)
    every = signal_mse(data)
    assert set(every) == {"full", "face", "mouth", "eyes"} and all(len(s) == 3 for s in every.values())
    assert every["mouth"].mean() > 0 and every["face"].mean() > 0
    lids, gaze = signal_mse(data, ["blink_left", "blink_right"]), signal_mse(data, ["gaze_x", "gaze_y"])
    assert np.all(lids["mouth"] == 0) and np.all(gaze["mouth"] == 0), "the eyes leave the mouth alone"
    assert gaze["eyes"].mean() > 0
    mouth = signal_mse(data, ["jaw_open", "smile"])
    assert np.allclose(mouth["mouth"], every["mouth"]), "only the jaw and smile change the mouth box"


def test_signal_refuses_a_driven_dataset(tmp_path: Path):
    driver = make_dataset(tmp_path / "a", identity=1, num_frames=4, resolution=32, eval_fraction=0.25,
                          progress=False)
    driven = make_dataset(tmp_path / "b", identity=2, resolution=32, drive_from=driver, progress=False)
    with pytest.raises(SystemExit, match="own performance"):
        signal_mse(driven)
