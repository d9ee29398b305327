"""Measuring a cached depth: the downscaled raw depth the page reads values from, a fit to points of known
distance, and metric depth from that fit."""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, jsonify, request

from ..imaging.measure import calibrate, metric, points_from_json
from ..serving.store import npy_parts
from .errors import ApiError
from .exports import send_parts
from .reading import cached_entry, depth_service, read_json_object, read_max_side

bp = Blueprint("measure", __name__, url_prefix="/api/v1")


@bp.get("/depth/<depth_id>/preview.npy")
def depth_preview(depth_id: str) -> Response:
    """The raw depth area-averaged to at most ``max_side`` (default 512) pixels on its longer side, as
    float32 .npy: what the page reads the value under the cursor from."""
    entry = cached_entry(depth_id)
    max_side = read_max_side(request.args) or 512
    preview = np.asarray(depth_service().preview(entry, max_side)[1], dtype="<f4")
    response = send_parts(npy_parts(preview), "application/octet-stream", None)  # the page reads it
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


@bp.post("/depth/<depth_id>/calibrate")
def calibrate_depth(depth_id: str) -> Response:
    """Fits metric inverse depth ``1/Z = scale * relative + shift`` (least squares) to two or more points
    of known distance: JSON ``{"points": [{"u": 0…1, "v": 0…1, "metres": m}, …]}``, (u, v) the point's
    relative position in the photo. Answers the scale, shift, each point's fitted distance and the RMSE."""
    entry = cached_entry(depth_id)
    example = '{"points": [{"u": …, "v": …, "metres": …}, …]}'
    body = read_json_object(example)
    if body is None:
        raise ApiError("bad_request", f"Send a JSON object: {example}.")
    points = points_from_json(body.get("points"))
    result = calibrate(entry.depth, points)
    fitted = metric(np.asarray(result.samples, dtype=np.float32), result.scale, result.shift)
    rows = [{"u": u, "v": v, "metres": m, "relative": s,
             "fitted_metres": float(f) if np.isfinite(f) else None}
            for (u, v, m), s, f in zip(points, result.samples, fitted, strict=True)]
    rmse = result.rmse_m if np.isfinite(result.rmse_m) else None  # JSON has no NaN
    return jsonify(scale=result.scale, shift=result.shift, rmse_m=rmse, points=rows)


def _float_arg(name: str) -> float:
    raw = request.args.get(name)
    try:
        value = float(str(raw))
    except ValueError:
        raise ApiError("bad_option", f"Option '{name}': expected a number, got {str(raw)[:40]!r}.") from None
    if not np.isfinite(value):
        raise ApiError("bad_option", f"Option '{name}': must be a finite number.")
    return value


@bp.get("/depth/<depth_id>/metric.npy")
def metric_npy(depth_id: str) -> Response:
    """Metric depth in metres (float32 H×W, NaN where the fit puts a pixel at or beyond infinity) from
    the ``scale`` and ``shift`` that POST …/calibrate answered."""
    entry = cached_entry(depth_id)
    scale, shift = _float_arg("scale"), _float_arg("shift")
    if not scale > 0:
        raise ApiError("bad_option", "Option 'scale': must be above 0 (nearer must mean closer).")
    return send_parts(npy_parts(metric(entry.depth, scale, shift)), "application/octet-stream",
                      f"{entry.name}.metres.npy")
