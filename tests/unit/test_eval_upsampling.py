"""The upsampling evaluation's metrics on hand-computed arrays, and one behaviour check of stage 4b."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval_upsampling import Scene, abs_rel, delta1, edge_band, fill_invalid, rmse, upsample_and_refine

PRED = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
GT = np.array([[2.0, 2.0], [2.0, 5.0]], np.float32)
ALL = np.ones((2, 2), bool)


def test_abs_rel_by_hand() -> None:
    # |1-2|/2, |2-2|/2, |3-2|/2, |4-5|/5 = 0.5, 0, 0.5, 0.2
    assert abs_rel(PRED, GT, ALL) == pytest.approx(1.2 / 4)
    mask = np.array([[True, True], [False, True]])
    assert abs_rel(PRED, GT, mask) == pytest.approx(0.7 / 3)


def test_delta1_by_hand() -> None:
    # ratios max(p/g, g/p): 2, 1, 1.5, 1.25 -- only the exact 1 is < 1.25 (1.25 itself is not)
    assert delta1(PRED, GT, ALL) == pytest.approx(0.25)
    assert delta1(PRED, GT, np.array([[False, True], [False, False]])) == 1.0
    # 1.2 and 1/1.2 are inside, 1.3 and 1/1.3 are not
    pred = np.array([1.2, 1 / 1.2, 1.3, 1 / 1.3], np.float32)
    assert delta1(pred, np.ones(4, np.float32), np.ones(4, bool)) == pytest.approx(0.5)


def test_delta1_zero_or_negative_prediction_is_a_miss_without_warnings() -> None:
    pred = np.array([0.0, -1.0, 1.0], np.float32)
    gt = np.ones(3, np.float32)
    assert delta1(pred, gt, np.ones(3, bool)) == pytest.approx(1 / 3)  # warnings are errors here


def test_rmse_by_hand() -> None:
    # differences -1, 0, 1, -1
    assert rmse(PRED, GT, ALL) == pytest.approx(math.sqrt(3 / 4))
    assert rmse(PRED, GT, np.array([[True, True], [False, False]])) == pytest.approx(math.sqrt(1 / 2))


def test_invalid_pixels_are_ignored() -> None:
    gt = np.array([[2.0, np.inf], [0.0, 4.0]], np.float32)  # inf and 0: invalid ground truth
    pred = np.array([[3.0, np.nan], [5.0, 4.0]], np.float32)
    valid = np.isfinite(gt) & (gt > 0)
    assert abs_rel(pred, gt, valid) == pytest.approx((0.5 + 0.0) / 2)
    assert delta1(pred, gt, valid) == pytest.approx(0.5)
    assert rmse(pred, gt, valid) == pytest.approx(math.sqrt(1 / 2))


def test_empty_mask_gives_nan_without_warnings() -> None:
    none = np.zeros((2, 2), bool)
    assert math.isnan(abs_rel(PRED, GT, none))
    assert math.isnan(delta1(PRED, GT, none))
    assert math.isnan(rmse(PRED, GT, none))


def step(row: list, rows: int = 3) -> np.ndarray:
    return np.array([row] * rows, np.float32)


def test_edge_band_marks_both_sides_of_a_step_and_nothing_else() -> None:
    gt = step([1, 1, 1, 1, 2, 2, 2, 2])
    valid = np.ones_like(gt, dtype=bool)
    cols = lambda band: np.flatnonzero(band[1])  # noqa: E731
    assert np.array_equal(cols(edge_band(gt, valid, 0)), [3, 4])
    assert np.array_equal(cols(edge_band(gt, valid, 1)), [2, 3, 4, 5])
    assert np.array_equal(cols(edge_band(gt, valid, 2)), [1, 2, 3, 4, 5, 6])
    assert (edge_band(gt, valid, 1) == edge_band(gt, valid, 1)[1]).all()  # every row alike


def test_edge_band_threshold_is_relative_and_slants_are_not_edges() -> None:
    valid = np.ones((3, 6), bool)
    assert not edge_band(step([1, 1, 1, 1.04, 1.04, 1.04]), valid, 3, 0.05).any()
    assert edge_band(step([1, 1, 1, 1.06, 1.06, 1.06]), valid, 0, 0.05).any()
    assert edge_band(step([10, 10, 10, 10.6, 10.6, 10.6]), valid, 0, 0.05).any()
    ramp = step([10.0 + 0.2 * i for i in range(6)])  # +4% over the 3x3 window: a slant, not an edge
    assert not edge_band(ramp, valid, 3, 0.05).any()
    assert not edge_band(np.full((4, 4), 7, np.float32), np.ones((4, 4), bool), 3).any()


def test_edge_band_respects_the_valid_mask() -> None:
    gt = step([1, 1, 1, 1, 2, 2, 2, 2])
    valid = np.ones_like(gt, dtype=bool)
    valid[:, 4] = False
    gt[:, 4] = np.inf  # an invalid pixel's value is never used
    band = edge_band(gt, valid, 1)
    assert not band[:, 4].any()
    # the invalid pixel is filled with the smaller neighbour (1), so the step moves to columns 4|5
    assert np.array_equal(np.flatnonzero(band[1]), [3, 5, 6])


def test_fill_invalid_takes_the_farther_side_of_a_hole() -> None:
    gt = np.array([[1, 0, 0, 5], [4, 0, 2, 0], [0, 0, 0, 0]], np.float32)
    valid = gt > 0
    filled = fill_invalid(gt, valid)
    assert np.array_equal(filled[0], [1, 1, 1, 5])
    assert np.array_equal(filled[1], [4, 2, 2, 2])  # left of 2 is min(4, 2); right of 2 is 2
    # an empty row takes its pixels' nearest valid values (column 1 is a tie between 4 and 2)
    assert (filled[2, 0], filled[2, 2], filled[2, 3]) == (4, 2, 2)
    assert np.array_equal(filled[valid], gt[valid])


def disc_scene(height: int = 384, width: int = 512, seed: int = 0) -> Scene:
    """A near disc (disparity 30) on a far background (10), darker in the photo, with sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = (x - 251.3) ** 2 + (y - 190.7) ** 2 < 101.4 ** 2
    gt = np.where(disc, 30.0, 10.0).astype(np.float32)
    gray = np.where(disc, 60.0, 190.0) + rng.normal(0, 3, (height, width))
    photo = np.clip(gray, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    return Scene("disc", photo, gt, np.ones((height, width), bool))


def test_guided_beats_bicubic_in_the_edge_band_of_a_clean_step() -> None:
    scene = disc_scene()
    band = edge_band(scene.gt, scene.valid, 3)
    bicubic = upsample_and_refine(scene, "bicubic", target=128)  # network grid 96x128: scale 4
    guided = upsample_and_refine(scene, "guided", target=128)  # the app's defaults
    err_bicubic, err_guided = abs_rel(bicubic, scene.gt, band), abs_rel(guided, scene.gt, band)
    assert err_guided < 0.7 * err_bicubic, (err_guided, err_bicubic)
    assert abs_rel(guided, scene.gt, scene.valid) < abs_rel(bicubic, scene.gt, scene.valid)
