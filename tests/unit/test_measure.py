"""Metric depth from a few known distances: the least-squares fit in inverse-depth space, through the
API, and every way calibration input can be wrong."""

from __future__ import annotations

import io

import numpy as np
import pytest

from app.imaging.measure import CalibrationError, calibrate, fit, metric
from support.forms import form_data


def test_fit_recovers_scale_and_shift_exactly_from_two_points() -> None:
    scale, shift = 0.02, 0.05
    metres = np.array([1.5, 8.0])
    rel = (1.0 / metres - shift) / scale
    assert fit(rel, metres) == pytest.approx((scale, shift))


def test_least_squares_with_noisy_points_and_metric_map() -> None:
    rng = np.random.default_rng(1)
    scale, shift = 0.004, 0.02
    truth = rng.uniform(1.0, 20.0, (60, 80)).astype(np.float32)
    truth = np.sort(truth, axis=1)  # smooth enough for the median window
    rel = ((1.0 / truth - shift) / scale).astype(np.float32)
    pts = [(u, 0.5, float(truth[30, int(u * 80)])) for u in (0.1, 0.4, 0.7, 0.95)]
    result = calibrate(rel, pts)
    assert result.scale == pytest.approx(scale, rel=0.05) and result.shift == pytest.approx(shift, abs=0.01)
    metres = metric(rel, result.scale, result.shift)
    assert np.nanmedian(np.abs(metres - truth) / truth) < 0.05


def test_metric_is_nan_beyond_infinity() -> None:
    out = metric(np.array([[10.0, 0.0, -5.0]], np.float32), scale=0.1, shift=-0.2)
    assert out[0, 0] == pytest.approx(1.0 / 0.8) and np.isnan(out[0, 1]) and np.isnan(out[0, 2])


@pytest.mark.parametrize(
    "samples, metres",
    [
        ([5.0], [2.0]),  # one point
        ([5.0, 5.0], [2.0, 4.0]),  # the same relative depth
        ([10.0, 5.0], [8.0, 2.0]),  # the nearer-looking point given as farther
    ],
)
def test_impossible_calibrations_are_refused(samples, metres) -> None:
    with pytest.raises(CalibrationError):
        fit(samples, metres)


@pytest.fixture(scope="module")
def uploaded(app, samples):
    client = app.test_client()
    r = client.post(
        "/api/v1/depth", **form_data({"image": (samples["coffee"], "coffee.png"), "views": "none"})
    )
    depth = np.load(io.BytesIO(client.get(f"/api/v1/depth/{r.json['depth_id']}.npy").data))
    return r.json["depth_id"], depth


def test_calibrate_and_export_metric_depth_through_the_api(client, uploaded) -> None:
    depth_id, depth = uploaded
    scale, shift = 1.0 / (2.0 * float(depth.max())), 0.05  # a room-sized scene: 1.8 m … 20 m
    h, w = depth.shape
    points = []
    for u, v in ((0.2, 0.3), (0.5, 0.5), (0.8, 0.7)):
        y, x = int(v * h), int(u * w)
        d = float(np.median(depth[y - 2 : y + 3, x - 2 : x + 3]))
        points.append({"u": u, "v": v, "metres": 1.0 / (scale * d + shift)})
    r = client.post(f"/api/v1/depth/{depth_id}/calibrate", json={"points": points})
    assert r.status_code == 200, r.json
    assert r.json["scale"] == pytest.approx(scale, rel=1e-4) and r.json["shift"] == pytest.approx(
        shift, rel=1e-3
    )
    assert r.json["rmse_m"] < 1e-3 and len(r.json["points"]) == 3
    m = client.get(
        f"/api/v1/depth/{depth_id}/metric.npy",
        query_string={"scale": r.json["scale"], "shift": r.json["shift"]},
    )
    assert m.status_code == 200 and "metres.npy" in m.headers["Content-Disposition"]
    metres = np.load(io.BytesIO(m.data))
    assert metres.shape == depth.shape and metres.dtype == np.float32
    np.testing.assert_allclose(metres, 1.0 / (scale * depth.astype(np.float64) + shift), rtol=1e-3)


def test_preview_npy_is_the_downscaled_raw_depth(client, uploaded) -> None:
    depth_id, depth = uploaded
    small = np.load(io.BytesIO(client.get(f"/api/v1/depth/{depth_id}/preview.npy?max_side=64").data))
    assert max(small.shape) == 64 and small.dtype == np.float32
    assert depth.min() - 1e-3 <= small.min() and small.max() <= depth.max() + 1e-3


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"points": [{"u": 0.5, "v": 0.5, "metres": 2}]}, 422, "bad_calibration"),
        (
            {"points": [{"u": 0.5, "v": 0.5, "metres": 2}, {"u": 0.5, "v": 0.5, "metres": 3}]},
            422,
            "bad_calibration",
        ),
        (
            {"points": [{"u": 0.1, "v": 0.5, "metres": -2}, {"u": 0.9, "v": 0.5, "metres": 3}]},
            422,
            "bad_calibration",
        ),
        (
            {"points": [{"u": 1.5, "v": 0.5, "metres": 2}, {"u": 0.9, "v": 0.5, "metres": 3}]},
            422,
            "bad_calibration",
        ),
        ({"points": [{"u": 0.1, "v": 0.5}, {"u": 0.9, "v": 0.5, "metres": 3}]}, 422, "bad_calibration"),
        (
            {"points": [{"u": "a", "v": 0.5, "metres": 1}, {"u": 0.9, "v": 0.5, "metres": 3}]},
            422,
            "bad_calibration",
        ),
        ({"points": "many"}, 422, "bad_calibration"),
        ({}, 422, "bad_calibration"),
        (["not", "an", "object"], 400, "bad_request"),
    ],
)
def test_bad_calibrations_get_a_clear_4xx(client, uploaded, body, status, code) -> None:
    r = client.post(f"/api/v1/depth/{uploaded[0]}/calibrate", json=body)
    assert r.status_code == status and r.json["error"] == code


@pytest.mark.parametrize(
    "query, code",
    [
        ({"scale": 0, "shift": 0.1}, "bad_option"),
        ({"scale": "x", "shift": 0.1}, "bad_option"),
        ({"scale": 1}, "bad_option"),
        ({"scale": "nan", "shift": 0}, "bad_option"),
    ],
)
def test_bad_metric_exports(client, uploaded, query, code) -> None:
    r = client.get(f"/api/v1/depth/{uploaded[0]}/metric.npy", query_string=query)
    assert r.status_code == 422 and r.json["error"] == code
