"""scripts/probe_error_regions.py: disjoint parts of the face box and each part's share of the error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from probe_error_regions import (  # noqa: E402
    FRAME_PARTS,
    PARTS,
    frame_masks,
    region_masks,
    signed_error_picture,
    silhouette_share,
    split_error,
    split_frame_error,
)

BOXES = {"face": (4, 4, 36, 36), "eyes": (10, 12, 30, 16), "mouth": (14, 26, 26, 32)}


def _matte() -> np.ndarray:
    matte = np.zeros((40, 40), bool)
    matte[8:40, 8:32] = True  # a head whose outline crosses the face box on three sides
    return matte


def test_parts_are_disjoint_and_cover_the_face_box():
    masks = region_masks(_matte(), BOXES, band=2)
    assert list(masks) == list(PARTS)
    stacked = np.stack([masks[p] for p in PARTS]).astype(int)
    face = np.zeros((40, 40), bool)
    face[4:36, 4:36] = True
    assert np.array_equal(stacked.sum(0), face.astype(int))
    # the outline is the band within 2 px of the matte's edge: its left edge runs along x = 8
    assert masks["outline"][20, 6:10].all() and not masks["outline"][20, 5] and not masks["outline"][20, 10]
    assert not masks["outline"][35, 20], "the frame's bottom edge is not an outline"
    at_edge = region_masks(_matte(), {**BOXES, "face": (4, 4, 36, 40)}, band=2)
    assert not at_edge["outline"][38:40, 12:28].any(), "where the head leaves the frame, its edge is no outline"
    assert at_edge["outline"][38, 6:10].all(), "the head's side stays outline down to the frame's edge"


def test_error_shares_and_the_outline_levelled_to_the_rest():
    masks = region_masks(_matte(), BOXES, band=2)
    error = np.zeros((40, 40))
    error[4:36, 4:36] = 0.01
    error[masks["outline"]] = 0.04
    out = split_error(error, masks)
    outline_area = masks["outline"].sum() / (32 * 32)
    assert out["outline_area_share"] == pytest.approx(outline_area)
    expected_share = 0.04 * outline_area / (0.04 * outline_area + 0.01 * (1 - outline_area))
    assert out["outline_error_share"] == pytest.approx(expected_share)
    assert sum(out[f"{p}_error_share"] for p in PARTS) == pytest.approx(1.0)
    assert out["face_psnr"] == pytest.approx(-10 * np.log10(0.04 * outline_area + 0.01 * (1 - outline_area)))
    assert out["face_psnr_outline_as_rest"] == pytest.approx(20.0)


def test_frame_parts_cover_the_frame_and_their_contributions_add_up_to_its_error():
    matte = _matte()
    masks = frame_masks(matte, BOXES["face"], band=2)
    assert list(masks) == list(FRAME_PARTS)
    assert np.array_equal(np.stack([masks[p] for p in FRAME_PARTS]).astype(int).sum(0), np.ones((40, 40), int))
    # below the face box the head's edge at x = 8 is outline, its inside head, and left of the band background
    assert masks["outline_below"][38, 6:10].all() and masks["head"][38, 20] and masks["background"][38, 2]
    assert not masks["outline"].any(), "the head leaves the face box only at the bottom; inside, the box has it"
    error = np.where(masks["background"], 0.0, 0.01)
    error[masks["outline"] | masks["outline_below"]] = 0.09
    out = split_frame_error(error, masks)
    assert sum(out[f"frame_{p}_mse"] for p in FRAME_PARTS) == pytest.approx(error.mean())
    assert out["frame_background_error_share"] == 0.0
    assert out["frame_outline_below_error_share"] == pytest.approx(0.09 * masks["outline_below"].sum() / error.sum())
    assert out["frame_psnr"] == pytest.approx(-10 * np.log10(error.mean()))


def test_signed_error_is_red_where_brighter_and_blue_where_darker():
    gt = np.full((2, 2, 3), 0.5)
    render = gt.copy()
    render[0, 0] += 0.1
    render[1, 1] -= 0.2
    picture = signed_error_picture(gt, render)
    assert picture.shape == (2, 6, 3)
    assert picture[0, 4].tolist() == pytest.approx([0.4, 0.0, 0.0])
    assert picture[1, 5].tolist() == pytest.approx([0.0, 0.0, 0.8])


def test_silhouette_share_counts_only_the_pixels_where_render_and_matte_disagree():
    matte = _matte()
    rendered = matte.copy()
    rendered[8:40, 32:34] = True  # the render's head two pixels too wide on the right
    face = np.zeros((40, 40), bool)
    face[4:36, 4:36] = True
    error = np.where(face, 0.01, 0.0)
    error[8:36, 32:34] = 0.5
    out = silhouette_share(error, matte, rendered, face)
    wrong = 28 * 2  # rows 8..35 inside the face box, two columns
    assert out["silhouette_area_share"] == pytest.approx(wrong / (32 * 32))
    assert out["silhouette_error_share"] == pytest.approx(0.5 * wrong / (0.5 * wrong + 0.01 * (32 * 32 - wrong)))
    assert silhouette_share(error, matte, matte, face)["silhouette_error_share"] == 0.0
