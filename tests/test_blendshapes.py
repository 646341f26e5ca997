"""ARKit blendshapes: Live Link Face files, filling a dataset, the mapping to an avatar's code, and driving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from clitools import run_cli
from PIL import Image

from latentavatar_ns.blendshapes.frames import fill_blendshapes, frame_blendshapes
from latentavatar_ns.blendshapes.livelink import BlendshapeFileError, read_livelink_csv, write_livelink_csv
from latentavatar_ns.blendshapes.mapping import (
    MappingError,
    fit_mapping,
    load_mapping,
    save_mapping,
)
from latentavatar_ns.blendshapes.names import ARKIT_NAMES, BLENDSHAPE_NAMES, LIVELINK_COLUMNS, index
from latentavatar_ns.data.format import list_frames, load_params
from latentavatar_ns.evaluation.expression_score import expression_score, read_blendshapes
from latentavatar_ns.synthetic.head import Expression


def test_names_follow_mediapipe_and_live_link_face() -> None:
    assert len(BLENDSHAPE_NAMES) == 52 and BLENDSHAPE_NAMES[0] == "_neutral" and len(set(BLENDSHAPE_NAMES)) == 52
    assert len(LIVELINK_COLUMNS) == 51 and LIVELINK_COLUMNS["JawOpen"] == "jawOpen"
    assert set(LIVELINK_COLUMNS.values()) == set(ARKIT_NAMES)


def test_live_link_csv_round_trip_and_bad_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = rng.random((7, 52))
    weights[:, 0] = 0.0  # _neutral is not a Live Link Face column
    head = rng.normal(0, 0.2, (7, 3))
    write_livelink_csv(tmp_path / "take.csv", weights, head)
    track = read_livelink_csv(tmp_path / "take.csv")
    assert len(track) == 7
    np.testing.assert_allclose(track.weights, weights, atol=1e-6)
    np.testing.assert_allclose(track.head_yaw_pitch_roll, head, atol=1e-6)

    (tmp_path / "other.csv").write_text("Timecode,Foo,Bar\n00:00:00:00.000,1,2\n")
    with pytest.raises(BlendshapeFileError, match=r"other\.csv: no blendshape column\(s\) BrowDownLeft"):
        read_livelink_csv(tmp_path / "other.csv")
    lines = (tmp_path / "take.csv").read_text().splitlines()
    (tmp_path / "bad.csv").write_text("\n".join([lines[0], lines[1], lines[2].replace("0.", "x.", 1)]) + "\n")
    with pytest.raises(BlendshapeFileError, match=r"bad\.csv: row 3"):
        read_livelink_csv(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(BlendshapeFileError, match=r"empty\.csv: empty file"):
        read_livelink_csv(tmp_path / "empty.csv")


def test_mapping_recovers_a_known_relation_and_refuses_another_avatar(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = torch.tensor(rng.random((300, 52)), dtype=torch.float32)
    true_map = torch.tensor(rng.normal(0, 1, (52, 16)), dtype=torch.float32)
    codes = torch.tanh(weights @ true_map / 4.0) * 3.0 + 1.0
    mapping, report = fit_mapping(weights, codes, steps=600)
    assert report.train_r2 > 0.98 and report.val_r2 > 0.9, report
    save_mapping(tmp_path / "m.pt", mapping, {"teacher_sha256": "a"}, report)
    loaded = load_mapping(tmp_path / "m.pt", {"teacher_sha256": "a"})
    assert torch.equal(loaded(weights[:5]), mapping(weights[:5]))
    with pytest.raises(MappingError, match=r"m\.pt: this mapping was fitted for another avatar"):
        load_mapping(tmp_path / "m.pt", {"teacher_sha256": "b"})
    (tmp_path / "junk.pt").write_bytes(b"not a mapping")
    with pytest.raises(MappingError, match=r"junk\.pt: cannot read the blendshape mapping"):
        load_mapping(tmp_path / "junk.pt")


def test_expression_score_rewards_following_the_driver_only() -> None:
    rng = np.random.default_rng(0)
    driver = rng.random((20, 52))
    same = expression_score(driver, driver.copy())
    assert same["faces_found"] == 1.0 and same["mean_correlation"] == pytest.approx(1.0) and same["mean_mae"] == 0.0
    constant = expression_score(driver, np.repeat(driver[:1], 20, axis=0))
    assert constant["mean_correlation"] == 0.0 and constant["mean_mae"] > 0.1
    shuffled = expression_score(driver, driver[::-1].copy())
    assert abs(shuffled["mean_correlation"]) < 0.5
    images = [np.full((4, 4, 3), i, dtype=np.uint8) for i in range(4)]
    read = read_blendshapes(images, lambda image: None if image[0, 0, 0] == 2 else driver[int(image[0, 0, 0])])
    assert np.isnan(read[2]).all() and np.array_equal(read[3], driver[3])
    partial = expression_score(driver[:4], read)
    assert partial["faces_found"] == 0.75 and partial["mean_correlation"] == pytest.approx(1.0)


def test_synthetic_frames_store_their_exact_blendshapes(synthetic_dataset: Path) -> None:
    for frame in list_frames(synthetic_dataset / "train")[:5]:
        params = load_params(frame.params)
        expression = Expression.from_array(params.extra["expression"])
        stored = frame_blendshapes(frame.params)
        assert stored is not None
        assert stored[index("jawOpen")] == pytest.approx(np.clip(expression.jaw_open, 0, 1), abs=1e-6)
        assert stored[index("eyeBlinkLeft")] == pytest.approx(np.clip(expression.blink_left, 0, 1), abs=1e-6)


def test_fill_writes_each_face_frame_and_keeps_the_rest(dataset_factory) -> None:
    data = dataset_factory(counts={"train": 3, "eval": 1})
    frames = list_frames(data / "train") + list_frames(data / "eval")
    before = {f.params: load_params(f.params) for f in frames}
    no_face = frames[1].image

    def detect(rgb: np.ndarray):
        return None if np.array_equal(rgb, np.asarray(Image.open(no_face).convert("RGB"))) else np.full(52, 0.25)

    report = fill_blendshapes(data, detect)
    assert report.no_face == [no_face] and len(report.written) == 3 and not report.kept
    for frame in frames:
        after = load_params(frame.params)
        np.testing.assert_array_equal(after.pose, before[frame.params].pose)  # the rest of the file is kept
        stored = frame_blendshapes(frame.params)
        assert (stored is None) if frame.image == no_face else np.allclose(stored, 0.25)
    assert not list(data.rglob(".*"))  # no temporary left behind
    again = fill_blendshapes(data, lambda rgb: np.full(52, 0.5))
    assert len(again.kept) == 3 and len(again.written) == 1  # without --overwrite only the faceless frame is new


@pytest.mark.slow
def test_fit_and_drive_by_blendshapes_through_the_commands(tiny_trained_run: Path, synthetic_dataset: Path,
                                                          dataset_factory, tmp_path: Path) -> None:
    # ns-train fitted one at the end of training (the synthetic frames store their blendshapes).
    assert (tiny_trained_run.parent / "blendshape_mapping.pt").is_file()
    mapping = tmp_path / "mapping.pt"
    result = run_cli(["ns-latentavatar-blendshapes", "fit", "--load-config", str(tiny_trained_run), "--output",
                      str(mapping), "--steps", "300"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Mapping saved to" in result.stdout and mapping.is_file()

    from latentavatar_ns.utils.video import read_video

    out = tmp_path / "self.mp4"
    result = run_cli(["ns-latentavatar-reenact", "--load-config", str(tiny_trained_run), "--self", "--via",
                      "blendshapes", "--mapping", str(mapping), "--output-path", str(out), "--side-by-side"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(read_video(out)) == len(list_frames(synthetic_dataset / "eval"))  # one frame per held-out frame

    csv = tmp_path / "take.csv"
    weights = np.zeros((6, 52))
    weights[:, index("jawOpen")] = np.linspace(0, 1, 6)
    write_livelink_csv(csv, weights, np.zeros((6, 3)))
    out_csv = tmp_path / "csv.mp4"
    result = run_cli(["ns-latentavatar-reenact", "--load-config", str(tiny_trained_run), "--driving-blendshapes",
                      str(csv), "--mapping", str(mapping), "--output-path", str(out_csv), "--side-by-side",
                      "--smooth", "3"])
    assert result.returncode == 0, result.stderr[-2000:]
    frames = read_video(out_csv)
    assert len(frames) == 6 and frames[0].shape[1] > frames[0].shape[0]  # the blendshape panel beside the render

    # A face video, read by the landmarker frame by frame: one output frame per frame with a face.
    from latentavatar_ns.assets.cache import asset_path
    from latentavatar_ns.utils.video import write_video

    clip = tmp_path / "clip.mp4"
    write_video(clip, iter(read_video(asset_path("single_face.mp4"))[:8]), fps=10)
    out_video = tmp_path / "video.mp4"
    result = run_cli(["ns-latentavatar-reenact", "--load-config", str(tiny_trained_run), "--driving", str(clip),
                      "--via", "blendshapes", "--mapping", str(mapping), "--output-path", str(out_video),
                      "--side-by-side"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "landmarker" in result.stdout and len(read_video(out_video)) == 8
    blank = tmp_path / "blank.mp4"
    write_video(blank, (np.full((64, 64, 3), 128, dtype=np.uint8) for _ in range(3)), fps=10)
    result = run_cli(["ns-latentavatar-reenact", "--load-config", str(tiny_trained_run), "--driving", str(blank),
                      "--via", "blendshapes", "--mapping", str(mapping), "--output-path", str(tmp_path / "b.mp4")])
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == \
        f"error: {blank}: no face found in any of its 3 frames"

    plain = dataset_factory()  # frames without blendshapes (and without faces: random pixels)
    result = run_cli(["ns-latentavatar-blendshapes", "fill", "--data", str(plain)])
    assert result.returncode == 0 and "0 frame(s) given blendshapes" in result.stdout \
        and "6 without a face" in result.stdout, result.stdout + result.stderr[-2000:]
    moved = tmp_path / "moved" / "config.yml"  # the same avatar, its config pointing at that dataset
    moved.parent.mkdir()
    config = yaml.load(tiny_trained_run.read_text(), Loader=yaml.Loader)
    config.pipeline.datamanager.data = config.pipeline.datamanager.dataparser.data = plain
    moved.write_text(yaml.dump(config))
    result = run_cli(["ns-latentavatar-blendshapes", "fit", "--load-config", str(moved)])
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == \
        f"error: {plain}: the training frames have no blendshapes; fill them in with ns-latentavatar-blendshapes " \
        f"fill --data {plain}"
    assert not (moved.parent / "blendshape_mapping.pt").exists()
    result = run_cli(["ns-latentavatar-reenact", "--load-config", str(tiny_trained_run), "--driving", str(plain),
                      "--via", "blendshapes", "--mapping", str(mapping), "--output-path", str(tmp_path / "p.mp4")])
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == \
        f"error: {plain}: its frames have no blendshapes; fill them in with ns-latentavatar-blendshapes fill " \
        f"--data {plain}"

    (tmp_path / "nocols.csv").write_text("Timecode,Foo\n0,1\n")
    result = run_cli(["ns-latentavatar-reenact", "--load-config", str(tiny_trained_run), "--driving-blendshapes",
                      str(tmp_path / "nocols.csv"), "--mapping", str(mapping), "--output-path",
                      str(tmp_path / "x.mp4")])
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(
        f"error: {tmp_path / 'nocols.csv'}: no blendshape column(s)")
    assert not (tmp_path / "x.mp4").exists()
