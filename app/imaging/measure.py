"""From relative to metric depth with a few known distances.

MiDaS predicts inverse depth up to an unknown scale and shift: its output is affine in disparity, so
metric inverse depth is ``1 / Z = scale * pred + shift`` for some ``scale`` and ``shift``. Two or
more points of known distance fix ``scale`` and ``shift`` by least squares in inverse-depth space (the
space the network's error is affine in, as in MiDaS's own evaluation); then ``Z = 1 / (scale * pred +
shift)`` wherever that is positive. Plain numpy, no Flask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

WINDOW = 2  # a point's depth is the median of the (2*WINDOW+1)² pixels around it: robust to edges


class CalibrationError(ValueError):
    """Points that cannot fix a scale and shift (too few, equal depths, impossible distances)."""


@dataclass(frozen=True)
class Fit:
    scale: float
    shift: float
    rmse_m: float  # of the fitted distances at the given points, in metres
    samples: Tuple[float, ...]  # the relative depth at each point


def sample(depth: np.ndarray, u: float, v: float) -> float:
    """The raw depth at relative position (u, v) in [0, 1]² (median of a small window)."""
    height, width = depth.shape
    x = min(width - 1, max(0, int(u * width)))
    y = min(height - 1, max(0, int(v * height)))
    win = depth[max(0, y - WINDOW):y + WINDOW + 1, max(0, x - WINDOW):x + WINDOW + 1]
    return float(np.median(win))


def fit(samples: Sequence[float], metres: Sequence[float]) -> Tuple[float, float]:
    """Least-squares ``scale``, ``shift`` with ``scale * sample + shift ≈ 1 / metres``."""
    d = np.asarray(samples, dtype=np.float64)
    target = 1.0 / np.asarray(metres, dtype=np.float64)
    if len(d) < 2:
        raise CalibrationError("at least two points are needed")
    if np.ptp(d) <= 1e-6 * max(1.0, float(np.abs(d).max())):
        raise CalibrationError("the points have the same relative depth; pick points nearer and farther away")
    a = np.stack([d, np.ones_like(d)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(a, target, rcond=None)
    if not scale > 0:
        # nearer (larger relative depth) must mean closer; otherwise the distances contradict the map
        raise CalibrationError("the distances contradict the depth map: a point that looks nearer was given "
                               "as farther; check the points and distances")
    return float(scale), float(shift)


def calibrate(depth: np.ndarray, points: Sequence[Tuple[float, float, float]]) -> Fit:
    """``points``: (u, v, metres). Raises ``CalibrationError`` for points that cannot fix a fit."""
    samples = [sample(depth, u, v) for u, v, _ in points]
    metres = [m for _, _, m in points]
    scale, shift = fit(samples, metres)
    fitted = metric(np.asarray(samples, dtype=np.float32), scale, shift)
    err = fitted - np.asarray(metres)
    rmse = float(np.sqrt(np.nanmean(err ** 2))) if np.isfinite(err).any() else float("nan")
    return Fit(scale, shift, rmse, tuple(samples))


METRIC_STRIP = 256  # rows computed in float64 at a time (a 16 MP map whole: half a GB of float64)


def metric(depth: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """Metric depth in metres, float32; NaN where ``scale * depth + shift`` is not positive (at or beyond
    infinity for this fit)."""
    out = np.full(depth.shape, np.nan, dtype=np.float32)
    for top in range(0, len(depth), METRIC_STRIP):
        inv = depth[top:top + METRIC_STRIP].astype(np.float64) * scale + shift
        ok = inv > 0
        out[top:top + METRIC_STRIP][ok] = (1.0 / inv[ok]).astype(np.float32)
    return out


def points_from_json(raw: object, max_points: int = 32) -> List[Tuple[float, float, float]]:
    """``[{"u": 0…1, "v": 0…1, "metres": > 0}, …]`` -> tuples; ``CalibrationError`` for anything else."""
    if not isinstance(raw, list) or not 2 <= len(raw) <= max_points:
        raise CalibrationError(f"'points' must be a list of 2 to {max_points} points")
    out = []
    for i, p in enumerate(raw):
        if not isinstance(p, dict):
            raise CalibrationError(f"point {i + 1} must be an object with u, v and metres")
        try:
            u, v, m = (float(p[k]) for k in ("u", "v", "metres"))
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(f"point {i + 1} needs numbers u, v and metres") from None
        if not (0.0 <= u <= 1.0 and 0.0 <= v <= 1.0):
            raise CalibrationError(f"point {i + 1}: u and v are relative positions between 0 and 1")
        if not (np.isfinite(m) and 0.0 < m <= 100_000.0):
            raise CalibrationError(f"point {i + 1}: metres must be a distance above 0 and at most 100 km")
        out.append((u, v, m))
    return out
