"""The colour legend of a rendered depth map: which colour means which relative depth, worked out from
the same steps as ``pipeline.enhance`` (clip, log, contrast, brightness, invert) so that it never lies.

CLAHE equalises each neighbourhood on its own, so a colour means different depths in different places:
the legend then keeps only its near/far ends and says so, with no values.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from ..options import Options
from .pipeline import colormap_lut, finite_copy, log_depth, map_range

STOPS = 33  # colour stops of the bar (every 8th of the 256 levels and the last)


def display_value(raw: np.ndarray, depth: np.ndarray, opts: Options) -> np.ndarray:
    """Raw depth values ``raw`` (any shape) -> where each lands on the bar, float32 in [0, 1] of the same
    shape, as ``enhance`` maps it for this ``(H, W)`` ``depth`` without CLAHE. The tests check it
    against ``enhance`` pixel for pixel."""
    # the window normalize uses: its range of the map with NaN/inf replaced as it replaces them
    t_all = finite_copy(log_depth(depth) if opts.log else depth)
    lo, hi = map_range(t_all, opts.clip) if t_all is not None else (0.0, 0.0)
    raw = np.asarray(raw, dtype=np.float32)
    t = log_depth(depth, raw) if opts.log else raw
    if not hi > lo:
        v = np.zeros_like(t)
    else:
        v = np.clip((t - lo) * np.float32(1.0 / (hi - lo)), 0.0, 1.0)
    if opts.contrast != 1.0 or opts.brightness != 0.0:
        v = np.clip((v - 0.5) * opts.contrast + (0.5 + opts.brightness), 0.0, 1.0)
    return 1.0 - v if opts.invert else v


def legend(depth: np.ndarray, opts: Options, gray: bool = False, ticks: int = 5) -> Dict[str, Any]:
    """The legend of an ``(H, W)`` float32 depth as JSON-able data. ``stops``: the bar's colours from its
    left end (display value 0) to its right (1); ``near``: which end is near ("left"/"right");
    ``ticks``: raw relative inverse depths (the ``.npy`` values) at their positions on the bar, from
    farthest to nearest, evenly spaced in raw value (with ``log`` they bunch toward the far end);
    ``saturated``: ends whose colour also covers values beyond the end tick (clipped); ``local``: true
    with CLAHE (no values then)."""
    lut = colormap_lut("gray" if gray else opts.colormap)
    levels = np.linspace(0, 255, STOPS).round().astype(int)
    stops = ["#%02x%02x%02x" % tuple(int(c) for c in lut[i]) for i in levels]
    out: Dict[str, Any] = {"colormap": "gray" if gray else opts.colormap, "stops": stops,
                           "near": "left" if opts.invert else "right", "local": opts.clahe,
                           "unit": "relative inverse depth (larger = nearer); not metres"}
    # NaN and inf as the image's normalize replaces them (the smallest finite value), so the ticks span
    # what the colours span
    d = finite_copy(depth)
    if opts.clahe or d is None or d.size == 0:
        out["ticks"] = []
        out["saturated"] = []
        return out
    if opts.log:
        lo, hi = (float(np.exp(v)) for v in map_range(finite_copy(log_depth(depth)), opts.clip))
    else:
        lo, hi = map_range(d, opts.clip)
    raw = np.linspace(lo, hi, ticks) if hi > lo else np.array([lo])
    pos = display_value(raw, depth, opts)
    tick_list: List[Dict[str, float]] = [{"value": float(r), "pos": round(float(p), 4)}
                                         for r, p in zip(raw, pos, strict=True)]
    out["ticks"] = tick_list
    # values beyond the window (clip %) share the end colours: the end ticks then mean "or beyond"
    out["saturated"] = [end for end, beyond in (("far", float(d.min()) < lo), ("near", float(d.max()) > hi))
                        if beyond]
    return out
