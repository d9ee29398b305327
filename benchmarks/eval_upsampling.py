"""Upsampling-stage evaluation: bicubic vs the edge-aware refinements of stage 4b, against real ground truth.

    .venv/bin/python benchmarks/eval_upsampling.py [--quick] [--band 3] [--threshold 0.05] [--runs 5]

Measures only stages 4 and 4b of ``app/imaging/pipeline.py`` (``upsample`` then ``refine_edges``), never the
network: the low-resolution input is made from the ground truth itself, so every error reported here is
the upsampler's own. A full run takes about 4 minutes on 2 cores (most of it joint_bilateral at 12 MP),
``--quick`` about 15 s.

Scenes (disparity = inverse depth, the space MiDaS predicts in):

* ``motorcycle``: Middlebury 2014 "Motorcycle" as bundled with scikit-image
  (``skimage.data.stereo_motorcycle``, 741x500, no download). Ground truth = the left disparity map,
  valid where finite and > 0; guide photo = the left view.
* ``boxes``, ``ground``, ``camouflage``: synthetic 640x480 scenes, generated deterministically from
  ``--seed``. boxes: fronto-parallel boxes and a disc over a striped wall with a striped "poster" (strong
  photo edges with no depth edge); the green disc has about the wall's luminance, so its edge is a
  colour-only edge (visible to fgs, which is guided by RGB; guided and joint_bilateral see gray only).
  ground: a far wall and a slanted ground plane (disparity linear in the row, a perspective checkerboard
  on it: texture edges on smooth depth) with three boxes standing on it. camouflage: a disc whose left
  half has the background's colour and a box whose colour fades into the background's towards its top
  (weak photo edges), and diagonal stripes on the background. Photos get a 0.8 px Gaussian blur and
  Gaussian noise (sigma 3 gray levels) at every size.

Procedure per scene: invalid ground-truth pixels are filled along their row with the smaller (farther)
of the nearest valid disparities to the left and right (occlusions lie on the background side), only to
make the low-resolution input and to locate discontinuities; they are never scored. The filled ground
truth is downsampled to the network grid ``(h, w) = network_size(H, W, 256)`` with ``cv2.INTER_AREA``
(a model of an ideal network that sees the bicubic-downsized photo: each output pixel is the mean
disparity of its footprint), upsampled with ``upsample(low, (H, W))`` (bicubic) and then refined with
``refine_edges(up, photo, W / w, method, **params)``.

Metrics, on valid pixels, against the full-resolution ground truth: AbsRel = mean(|pred - gt| / gt),
delta1 = fraction with max(pred / gt, gt / pred) < 1.25 (pred <= 0 counts as a miss), RMSE (in the
scene's disparity units, so not comparable across scenes). Each is reported overall and in the edge
band: valid pixels within ``--band`` px (Euclidean) of a discontinuity, where a pixel is a
discontinuity when, on the filled ground truth, max - min over its 3x3 neighbourhood exceeds
``--threshold`` times the min (a disparity ratio above 1 + threshold across 2 px; the synthetic slants
stay below it). "tex AbsRel" is AbsRel in a texture band: valid pixels within ``--band`` px of a Canny
edge of the photo but more than 2 network pixels (plus the band) from any discontinuity; it counts
texture copied into depth and also depth smear that a filter carries farther than 2 network pixels. The
"texture only" table isolates the first: the boxes photo over a smooth plane, no depth edge at all.

Sweep: a 4x4 grid per method (2x2 with ``--quick``) that contains the app's defaults; the setting with
the lowest mean edge-band AbsRel over the scenes is the method's "best". It is chosen on the same scenes
it is reported on; the leave-one-scene-out table (best chosen on the other scenes, scored on the
held-out one) shows how much of the gain survives that. The scenes above have 2.5 to 2.9 photo pixels
per network pixel; a phone photo has ~16. So the "scale check" reruns the synthetic scenes at 2560x1920
(scale 10; 1280x960 with ``--quick``) and the 12 MP table scores the boxes scene at 4000x3000, with the
edge band kept at the same width in network pixels. The recommendation asks a method's best setting to
lower the mean edge-band AbsRel (in-sample, held-out, and in the scale check) without raising the mean
overall AbsRel or lowering the mean overall delta1.

Timing: median of ``--runs`` calls after one warm-up call (first calls fault in fresh pages), per scene
and on the 4000x3000 scene; joint_bilateral at 12 MP is ~30 s a call, so it gets 2 calls and no warm-up
there (page faults are under 0.1% of that), and is skipped with ``--quick``. The scale check's ms/MP
are single calls.

Diagnostics go to stderr through ``logging``; the Markdown tables and the recommendation go to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.options import UPSAMPLERS, Options  # noqa: E402
from app.depth.registry import network_size  # noqa: E402
from app.imaging.pipeline import refine_edges, upsample  # noqa: E402

log = logging.getLogger("eval_upsampling")

Params = Dict[str, float]

# the app's default settings of each method (the "default" rows), from the one place they are defined
DEFAULTS: Dict[str, Params] = {m: Options(upsample=m).upsample_params() for m in UPSAMPLERS}
GRID: Dict[str, Dict[str, Tuple[float, ...]]] = {
    # radius below 0.75 network px gives guided_upsample's smallest window (3 cells) anyway
    "guided": {"radius": (0.5, 1.0, 2.0, 4.0), "eps": (1e-6, 1e-5, 1e-4, 1e-3)},
    "joint_bilateral": {"sigma_space": (0.25, 0.5, 1.0, 2.0), "sigma_color": (3.0, 6.0, 12.0, 24.0)},
    "fgs": {"lam": (1.0, 4.0, 16.0, 64.0), "sigma_color": (2.0, 4.0, 8.0, 16.0)},
}
QUICK_GRID: Dict[str, Dict[str, Tuple[float, ...]]] = {
    "guided": {"radius": (1.0, 2.0), "eps": (1e-4, 1e-3)},
    "joint_bilateral": {"sigma_space": (0.5, 1.0), "sigma_color": (12.0, 24.0)},
    "fgs": {"lam": (16.0, 64.0), "sigma_color": (8.0, 16.0)},
}
REFINERS: Tuple[str, ...] = tuple(m for m in UPSAMPLERS if m != "bicubic")


# metrics ---------------------------------------------------------------------------------------------

def _pair(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mask, dtype=bool)
    return np.asarray(pred, dtype=np.float64)[m], np.asarray(gt, dtype=np.float64)[m]


def abs_rel(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``|pred - gt| / gt`` over ``mask`` (``gt`` must be > 0 there); NaN for an empty mask."""
    p, g = _pair(pred, gt, mask)
    return float(np.mean(np.abs(p - g) / g)) if p.size else float("nan")


def delta1(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of ``mask`` with ``max(pred / gt, gt / pred) < 1.25``; ``pred <= 0`` is a miss. NaN if empty.
    Written without division, so a zero prediction gives no warning."""
    p, g = _pair(pred, gt, mask)
    if not p.size:
        return float("nan")
    return float(np.mean((p > 0) & (p < 1.25 * g) & (g < 1.25 * p)))


def rmse(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """Root mean square of ``pred - gt`` over ``mask``; NaN for an empty mask."""
    p, g = _pair(pred, gt, mask)
    return float(np.sqrt(np.mean((p - g) ** 2))) if p.size else float("nan")


def fill_invalid(gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each invalid pixel gets the smaller of the nearest valid values to its left and right on its row
    (the background side of an occlusion); rows with no valid pixel take their nearest valid pixel's
    value. Valid pixels are unchanged. ``(H, W)`` -> ``(H, W)`` float32."""
    gt = np.asarray(gt, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool)
    if valid.all():
        return gt.copy()
    if not valid.any():
        raise ValueError("no valid ground-truth pixel")
    height, width = gt.shape
    cols = np.arange(width)[None, :]
    rows = np.arange(height)[:, None]
    left = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)  # last valid column at or before x
    right = np.minimum.accumulate(np.where(valid, cols, width)[:, ::-1], axis=1)[:, ::-1]
    vl = np.where(left >= 0, gt[rows, np.clip(left, 0, width - 1)], np.inf)
    vr = np.where(right < width, gt[rows, np.clip(right, 0, width - 1)], np.inf)
    out = np.where(valid, gt, np.minimum(vl, vr)).astype(np.float32)
    empty = ~np.isfinite(out)  # whole rows without a valid pixel
    if empty.any():
        src = (~valid).astype(np.uint8)  # zeros = valid pixels, the labels' seeds
        _, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        lut = np.zeros(labels.max() + 1, np.float32)
        lut[labels[valid]] = gt[valid]
        out[empty] = lut[labels[empty]]
    return out


def discontinuities(gt: np.ndarray, valid: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood of the filled ground truth has ``max - min > threshold * min``
    (image borders: only the neighbours inside). Invalid pixels can be marked: a jump across an
    occlusion hole lands on the hole's foreground side. ``(H, W)`` bool."""
    filled = fill_invalid(gt, valid)
    kernel = np.ones((3, 3), np.uint8)
    hi = cv2.dilate(filled, kernel, borderType=cv2.BORDER_REPLICATE)
    lo = cv2.erode(filled, kernel, borderType=cv2.BORDER_REPLICATE)
    return (hi - lo) > threshold * lo


def _near(mask: np.ndarray, width: float) -> np.ndarray:
    """Pixels within ``width`` px (Euclidean) of a True pixel of ``mask``."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist <= width


def edge_band(gt: np.ndarray, valid: np.ndarray, width: float = 3, threshold: float = 0.05) -> np.ndarray:
    """Valid pixels within ``width`` px of a ground-truth discontinuity (see ``discontinuities``).
    ``width=0`` gives the discontinuity pixels themselves: both sides of a step. ``(H, W)`` bool."""
    valid = np.asarray(valid, dtype=bool)
    return _near(discontinuities(gt, valid, threshold), width) & valid


def texture_band(photo: np.ndarray, gt: np.ndarray, valid: np.ndarray, width: float, exclude: float,
                 threshold: float = 0.05) -> np.ndarray:
    """Valid pixels within ``width`` px of a Canny edge of the photo (gray, sigma-1 blur, thresholds
    40/80) and farther than ``exclude`` px from any ground-truth discontinuity: photo edges with no depth
    edge under them. ``(H, W)`` bool."""
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(cv2.GaussianBlur(gray, (0, 0), 1.0), 40, 80) > 0
    far = ~_near(discontinuities(gt, valid, threshold), exclude)
    return _near(edges, width) & far & np.asarray(valid, dtype=bool)


# scenes ----------------------------------------------------------------------------------------------

@dataclass
class Scene:
    name: str
    photo: np.ndarray  # (H, W, 3) uint8 RGB
    gt: np.ndarray  # (H, W) float32 disparity
    valid: np.ndarray  # (H, W) bool


def motorcycle() -> Scene:
    """Middlebury 2014 Motorcycle, bundled with scikit-image (imported here only)."""
    from skimage import data  # lazy: the metric functions and the tests do not need scikit-image

    left, _right, disp = data.stereo_motorcycle()
    disp = np.asarray(disp, dtype=np.float32)
    valid = np.isfinite(disp) & (disp > 0)
    gt = np.where(valid, disp, 0).astype(np.float32)
    return Scene("motorcycle", np.ascontiguousarray(left[..., :3]), gt, valid)


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float RGB canvas -> uint8 photo: slight optical blur, sensor noise."""
    img = cv2.GaussianBlur(canvas.astype(np.float32), (0, 0), 0.8)
    img += rng.normal(0.0, 3.0, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return y, x


def _stripes(coord: np.ndarray, period: float, amplitude: float) -> np.ndarray:
    """Square-wave stripes along ``coord``: +-amplitude, sharp edges (texture with no depth edge)."""
    return np.where(np.floor(coord / period) % 2 == 0, amplitude, -amplitude).astype(np.float32)


def _paint(canvas: np.ndarray, gt: np.ndarray, mask: np.ndarray, colour: Sequence[float],
           disparity: float | np.ndarray, texture: Optional[np.ndarray] = None) -> None:
    col = np.asarray(colour, np.float32)[None, :]
    tex = 0.0 if texture is None else texture[mask][:, None]
    canvas[mask] = col + tex
    gt[mask] = disparity if np.isscalar(disparity) else np.asarray(disparity)[mask]


def boxes_scene(height: int = 480, width: int = 640, seed: int = 0) -> Scene:
    """Fronto-parallel boxes and a disc at known disparities in front of a striped wall with a poster."""
    rng = np.random.default_rng(seed)
    s = width / 640.0
    y, x = _grid(height, width)
    canvas = np.zeros((height, width, 3), np.float32)
    gt = np.zeros((height, width), np.float32)
    everywhere = np.ones((height, width), bool)
    _paint(canvas, gt, everywhere, (110, 118, 128), 8.0, _stripes(x, 48 * s, 22))  # striped wall
    poster = (x >= 60 * s) & (x < 190 * s) & (y >= 40 * s) & (y < 150 * s)  # flat: no depth edge
    _paint(canvas, gt, poster, (150, 40, 45), 8.0, _stripes(y, 22 * s, 30))
    box1 = (x >= 237.3 * s) & (x < 451.6 * s) & (y >= 97.4 * s) & (y < 318.2 * s)
    _paint(canvas, gt, box1, (205, 180, 70), 20.0, _stripes(y + 0.5 * x, 30 * s, 25))
    box2 = (x >= 381.5 * s) & (x < 583.2 * s) & (y >= 251.7 * s) & (y < 441.9 * s)
    _paint(canvas, gt, box2, (50, 70, 170), 32.0)
    disc = (x - 150.5 * s) ** 2 + (y - 330.2 * s) ** 2 < (95.3 * s) ** 2
    checker = 20 * _stripes(x, 17 * s, 1) * _stripes(y, 17 * s, 1)
    _paint(canvas, gt, disc, (60, 160, 80), 45.0, checker)
    return Scene("boxes", _finish(canvas, rng), gt, everywhere.copy())


def ground_scene(height: int = 480, width: int = 640, seed: int = 1) -> Scene:
    """A far wall, a slanted ground plane (disparity linear in the row, a perspective checkerboard on
    it: texture edges on smooth depth) and three boxes standing on it."""
    rng = np.random.default_rng(seed)
    s = width / 640.0
    y, x = _grid(height, width)
    horizon = 0.38 * height
    canvas = np.zeros((height, width, 3), np.float32)
    gt = np.zeros((height, width), np.float32)
    wall = y < horizon
    clouds = cv2.resize(rng.normal(0, 12, (6, 8)).astype(np.float32), (width, height),
                        interpolation=cv2.INTER_CUBIC)
    _paint(canvas, gt, wall, (150, 175, 205), 8.0, clouds)
    # disparity 8 at the horizon: +-1 row changes it by 3.6% there, under the 5% discontinuity threshold
    d_ground = (8.0 + 42.0 * (y - horizon) / (height - horizon)).astype(np.float32)
    u = (x - width / 2) / d_ground  # ground-plane coordinates: X ~ x / d, Z ~ 1 / d
    v = 1.0 / d_ground
    checker = np.where((np.floor(u / (6 * s)) + np.floor(v / 0.04)) % 2 == 0, 28, -28).astype(np.float32)
    _paint(canvas, gt, ~wall, (120, 105, 80), d_ground, checker)
    for x0, x1, bottom, tall, colour in ((70.4, 210.9, 0.62, 120.0, (190, 60, 50)),
                                         (400.2, 560.7, 0.74, 170.0, (70, 150, 190)),
                                         (250.6, 360.3, 0.93, 140.0, (220, 210, 200))):
        yb = bottom * height
        d_box = 8.0 + 42.0 * (yb - horizon) / (height - horizon)  # it stands where the ground is at yb
        box = (x >= x0 * s) & (x < x1 * s) & (y < yb) & (y >= yb - tall * s)
        _paint(canvas, gt, box, colour, d_box, _stripes(x, 25 * s, 18))
    return Scene("ground", _finish(canvas, rng), gt, np.ones((height, width), bool))


def camouflage_scene(height: int = 480, width: int = 640, seed: int = 2) -> Scene:
    """Weak photo edges: a disc whose left half has the background's colour and a box whose colour fades
    into the background's along its top; plus diagonal stripes on the background (texture only)."""
    rng = np.random.default_rng(seed)
    s = width / 640.0
    y, x = _grid(height, width)
    bg_colour = np.array((125, 112, 98), np.float32)
    canvas = np.zeros((height, width, 3), np.float32)
    gt = np.zeros((height, width), np.float32)
    everywhere = np.ones((height, width), bool)
    _paint(canvas, gt, everywhere, bg_colour, 10.0)
    band = (y > 330 * s) & (y < 430 * s)
    _paint(canvas, gt, band, bg_colour, 10.0, _stripes(x + y, 26 * s, 30))
    cx, cy, r = 220.3 * s, 190.6 * s, 120.4 * s
    disc = (x - cx) ** 2 + (y - cy) ** 2 < r ** 2
    _paint(canvas, gt, disc & (x < cx), bg_colour, 30.0)  # same colour as the background: no photo edge
    _paint(canvas, gt, disc & (x >= cx), (150, 25, 25), 30.0)  # gray 64 vs the background's 114
    box = (x >= 420.7 * s) & (x < 590.2 * s) & (y >= 80.4 * s) & (y < 300.8 * s)
    t = np.clip((y - 80.4 * s) / (220.4 * s), 0, 1)[..., None]  # 0 at the top: background colour
    canvas_box = (1 - t) * bg_colour + t * np.array((60, 90, 60), np.float32)
    canvas[box] = canvas_box[box]
    gt[box] = 20.0
    return Scene("camouflage", _finish(canvas, rng), gt, everywhere.copy())


SYNTHETIC: Dict[str, Callable[..., Scene]] = {
    "boxes": boxes_scene, "ground": ground_scene, "camouflage": camouflage_scene}


# the upsampling stage ------------------------------------------------------------------------------

def low_res(scene: Scene, target: int = 256) -> np.ndarray:
    """What an ideal network would output: the filled ground truth, INTER_AREA to the network grid."""
    h, w = network_size(scene.gt.shape[0], scene.gt.shape[1], target)
    return cv2.resize(fill_invalid(scene.gt, scene.valid), (w, h), interpolation=cv2.INTER_AREA)


def upsample_and_refine(scene: Scene, method: str, params: Optional[Params] = None,
                        target: int = 256) -> np.ndarray:
    """The pipeline's stages 4 and 4b on the scene's low-resolution ground truth."""
    low = low_res(scene, target)
    height, width = scene.gt.shape
    up = upsample(low, (height, width))
    return refine_edges(up, scene.photo, width / low.shape[1], method, **(params or {}))


def metrics(pred: np.ndarray, gt: np.ndarray, masks: Dict[str, np.ndarray]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for region, mask in masks.items():
        out[f"{region}_absrel"] = abs_rel(pred, gt, mask)
        out[f"{region}_d1"] = delta1(pred, gt, mask)
        out[f"{region}_rmse"] = rmse(pred, gt, mask)
    return out


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 1) -> float:
    """Median wall time of ``runs`` calls of ``fn`` in ms, after ``warmup`` untimed calls."""
    return timed(fn, runs, warmup)[0]


def timed(fn: Callable[[], object], runs: int, warmup: int = 1) -> Tuple[float, object]:
    """``(median ms of runs calls after warmup calls, the last call's result)``."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times), out


@dataclass
class Prepared:
    scene: Scene
    low: np.ndarray
    up: np.ndarray
    scale: float
    masks: Dict[str, np.ndarray] = field(default_factory=dict)


def prepare(scene: Scene, target: int, band: float, threshold: float) -> Prepared:
    low = low_res(scene, target)
    height, width = scene.gt.shape
    scale = width / low.shape[1]
    masks = {"all": scene.valid,
             "edge": edge_band(scene.gt, scene.valid, band, threshold),
             "tex": texture_band(scene.photo, scene.gt, scene.valid, band, 2 * scale + band, threshold)}
    return Prepared(scene, low, upsample(low, (height, width)), scale, masks)


def refine(p: Prepared, method: str, params: Params) -> np.ndarray:
    return refine_edges(p.up, p.scene.photo, p.scale, method, **params)


def settings(grid: Dict[str, Tuple[float, ...]]) -> List[Params]:
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]


def fmt_params(params: Params) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in params.items()) or "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "nan" if np.isnan(v) else f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# the run ----------------------------------------------------------------------------------------------

Key = Tuple[str, str]  # (method, label): label "-" for bicubic, "default" or the formatted params


def evaluate(prepared: List[Prepared], grid: Dict[str, Dict[str, Tuple[float, ...]]]
             ) -> Tuple[Dict[Key, List[Dict[str, float]]], Dict[Key, Params]]:
    """Metrics of every (method, setting) on every scene, and each key's params. The "default" key of a
    refiner passes no params, so it runs with app.imaging.pipeline's own defaults."""
    results: Dict[Key, List[Dict[str, float]]] = {("bicubic", "-"): [metrics(p.up, p.scene.gt, p.masks)
                                                                     for p in prepared]}
    params_of: Dict[Key, Params] = {("bicubic", "-"): {}}
    for method in REFINERS:
        for params in [{}] + settings(grid[method]):
            key = (method, fmt_params(params) if params else "default")
            t = time.perf_counter()
            results[key] = [metrics(refine(p, method, params), p.scene.gt, p.masks) for p in prepared]
            params_of[key] = params
            log.info("%-15s %-34s %.2f s", method, key[1], time.perf_counter() - t)
    return results, params_of


def mean(rows: Sequence[Dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def pick_best(results: Dict[Key, List[Dict[str, float]]], method: str,
              scenes: Optional[Sequence[int]] = None) -> Key:
    """The swept setting of ``method`` with the lowest mean edge-band AbsRel over ``scenes`` (all)."""
    keys = [k for k in results if k[0] == method and k[1] != "default"]
    idx = list(range(len(results[keys[0]]))) if scenes is None else list(scenes)
    return min(keys, key=lambda k: mean([results[k][i] for i in idx], "edge_absrel"))


def time_scene(p: Prepared, method: str, params: Params, runs: int) -> float:
    """ms per megapixel: the refinement alone, or for bicubic the bicubic upsampling itself."""
    if method == "bicubic":
        ms = median_ms(lambda: upsample(p.low, p.scene.gt.shape), runs)
    else:
        ms = median_ms(lambda: refine(p, method, params), runs)
    return ms / (p.scene.gt.size / 1e6)


def time_12mp(shown: Sequence[Tuple[Key, Params]], label_of: Callable[[Key], str], runs: int, quick: bool,
              target: int, seed: int, band_network_px: float, threshold: float
              ) -> Tuple[str, Dict[Key, float]]:
    """Timing on the boxes scene at 4000x3000, and its errors there (the scale a phone photo has).
    Returns the table and the median ms per key."""
    big = boxes_scene(3000, 4000, seed=seed)
    low = low_res(big, target)
    scale = big.gt.shape[1] / low.shape[1]
    mp = big.gt.size / 1e6
    width = band_network_px * scale
    band = edge_band(big.gt, big.valid, width, threshold)
    ms, up = timed(lambda: upsample(low, big.gt.shape), runs)
    rows: List[List[object]] = [["bicubic (upsample)", "-", runs, f"{ms:.1f}", f"{ms / mp:.1f}",
                                 abs_rel(up, big.gt, big.valid), abs_rel(up, big.gt, band)]]
    times: Dict[Key, float] = {("bicubic", "-"): ms}
    for (method, label), params in shown:
        if method == "bicubic":
            continue
        n, warmup = (2, 0) if method == "joint_bilateral" else (runs, 1)
        if method == "joint_bilateral" and quick:
            rows.append([method, label_of((method, label)), 0, "skipped (--quick)", "-", "-", "-"])
            continue
        ms, pred = timed(lambda m=method, q=params: refine_edges(up, big.photo, scale, m, **q), n, warmup)
        log.info("12 MP %s %s: %.0f ms", method, label, ms)
        times[(method, label)] = ms
        rows.append([method, label_of((method, label)), n, f"{ms:.1f}", f"{ms / mp:.1f}",
                     abs_rel(pred, big.gt, big.valid), abs_rel(pred, big.gt, band)])
    return (f"## 12 MP: the boxes scene at {big.gt.shape[1]}x{big.gt.shape[0]} ({mp:.1f} MP, network "
            f"{low.shape[1]}x{low.shape[0]}, scale {scale:.3f}); median of n calls after 1 warm-up "
            f"(joint_bilateral: 2 calls, no warm-up); edge band {width:.1f} px (= {band_network_px:.2f} "
            f"network px, as in the 640x480 scenes), {100 * band.mean():.1f}% of the pixels\n\n"
            + table(["stage", "params", "n", "median ms", "ms/MP", "AbsRel", "edge AbsRel"], rows)), times


def scale_check(shown: Sequence[Tuple[Key, Params]], label_of: Callable[[Key], str], size: Tuple[int, int],
                target: int, seed: int, band_network_px: float, threshold: float
                ) -> Tuple[str, Dict[Key, Dict[str, float]]]:
    """The synthetic scenes generated at ``size`` (same layout, finer pixels): the network grid stays
    ~256 px, so the scale grows, as it does for a phone photo. Means over the scenes, one timed call each."""
    height, width = size
    rows: Dict[Key, List[Dict[str, float]]] = {key: [] for key, _ in shown}
    for i, make in enumerate(SYNTHETIC.values()):
        scene = make(height, width, seed=seed + i)
        p = prepare(scene, target, 0, threshold)
        band = edge_band(scene.gt, scene.valid, band_network_px * p.scale, threshold)
        for key, params in shown:
            t = time.perf_counter()
            pred = p.up if key[0] == "bicubic" else refine(p, key[0], params)
            ms = (time.perf_counter() - t) * 1000.0
            rows[key].append({"all_absrel": abs_rel(pred, scene.gt, scene.valid),
                              "all_d1": delta1(pred, scene.gt, scene.valid),
                              "edge_absrel": abs_rel(pred, scene.gt, band),
                              "edge_d1": delta1(pred, scene.gt, band),
                              "ms_mp": ms / (scene.gt.size / 1e6)})
        log.info("scale check: %s at %dx%d done", scene.name, width, height)
        scale = p.scale
    means = {key: {m: mean(r, m) for m in r[0]} for key, r in rows.items()}
    out = [[key[0], label_of(key), v["all_absrel"], v["all_d1"], v["edge_absrel"], v["edge_d1"],
            "-" if key[0] == "bicubic" else f"{v['ms_mp']:.1f}"] for key, v in means.items()]
    return (f"## Scale check: the {len(SYNTHETIC)} synthetic scenes at {width}x{height} (scale {scale:.3f}), "
            f"mean; edge band {band_network_px:.2f} network px = {band_network_px * scale:.1f} px; "
            f"ms/MP from one call, refinement only\n\n"
            + table(["method", "params", "AbsRel", "δ1", "edge AbsRel", "edge δ1", "ms/MP"], out)), means


def texture_only(shown: Sequence[Tuple[Key, Params]], label_of: Callable[[Key], str], target: int,
                 seed: int) -> str:
    """The boxes photo over a smooth slanted plane: every photo edge is a texture edge, so every error
    beyond bicubic's is texture copied into depth."""
    photo = boxes_scene(seed=seed).photo
    height, width = photo.shape[:2]
    y, x = _grid(height, width)
    gt = (12.0 + 20.0 * x / width + 8.0 * y / height).astype(np.float32)
    scene = Scene("texture-only", photo, gt, np.ones_like(gt, dtype=bool))
    p = prepare(scene, target, 0, 0.05)
    rows = []
    for (method, label), params in shown:
        pred = p.up if method == "bicubic" else refine(p, method, params)
        rel = np.abs(pred.astype(np.float64) - gt) / gt
        rows.append([method, label_of((method, label)), abs_rel(pred, gt, scene.valid),
                     float(np.percentile(rel, 99)), float(rel.max())])
    return ("## Texture only: the boxes photo over a smooth plane (disparity 12..40, no depth edge)\n\n"
            + table(["method", "params", "AbsRel", "p99 rel. error", "max rel. error"], rows))


def recommend(results: Dict[Key, List[Dict[str, float]]], best: Dict[str, Key],
              loso: Dict[str, float], scaled: Dict[Key, Dict[str, float]], ms_12mp: Dict[Key, float]) -> str:
    """A refiner wins if its best setting lowers the mean edge-band AbsRel (in-sample and leave-one-scene-
    out) without raising the mean overall AbsRel or lowering the mean overall delta1, and does the same in
    the scale check; the lowest edge error among winners is recommended."""
    bic = results[("bicubic", "-")]
    b_edge, b_all, b_d1 = mean(bic, "edge_absrel"), mean(bic, "all_absrel"), mean(bic, "all_d1")
    winners: List[Tuple[float, str, str]] = []
    why: List[str] = []
    for method in REFINERS:
        rs = results[best[method]]
        e, a, d = mean(rs, "edge_absrel"), mean(rs, "all_absrel"), mean(rs, "all_d1")
        sc, sb = scaled[best[method]], scaled[("bicubic", "-")]
        desc = (f"{method} ({best[method][1]}): edge {e:.4f} (held-out {loso[method]:.4f}), "
                f"overall {a:.4f}, δ1 {d:.4f}; scaled: edge {sc['edge_absrel']:.4f}, "
                f"overall {sc['all_absrel']:.4f}, δ1 {sc['all_d1']:.4f}")
        if (e < b_edge and loso[method] < b_edge and a <= b_all and d >= b_d1
                and sc["edge_absrel"] < sb["edge_absrel"] and sc["all_absrel"] <= sb["all_absrel"]
                and sc["all_d1"] >= sb["all_d1"]):
            winners.append((e, method, desc))
        why.append(desc)
    sb = scaled[("bicubic", "-")]
    base = (f"bicubic: edge {b_edge:.4f}, overall {b_all:.4f}, δ1 {b_d1:.4f}; scaled: edge "
            f"{sb['edge_absrel']:.4f}, overall {sb['all_absrel']:.4f}, δ1 {sb['all_d1']:.4f}")
    if winners:
        _, method, desc = min(winners)
        def cost(m: str) -> str:
            ms = ms_12mp.get(best[m])
            return f"{ms:.0f} ms" if ms is not None else "not timed (--quick)"

        winners.sort()
        _, method, desc = winners[0]
        others = "; ".join(f"{d}; 12 MP: {cost(m)}" for _, m, d in winners[1:]) or "none"
        return (f"Recommendation: {method} with {best[method][1]}: the lowest mean edge-band AbsRel of the "
                f"methods that beat bicubic there without losing overall ({desc}; {base}). At 12 MP it costs "
                f"{cost(method)} per photo, bicubic {ms_12mp[('bicubic', '-')]:.0f} ms. Also qualifying: "
                f"{others}.")
    return ("Recommendation: keep bicubic: no method lowers the mean edge-band AbsRel (in-sample, held-out "
            "and in the scale check) without raising the overall AbsRel or lowering δ1 "
            f"({base}; " + "; ".join(why) + ").")


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="2x2 sweeps, 3 runs, scale check at 1280x960, no 12 MP joint_bilateral")
    ap.add_argument("--band", type=float, default=3.0, help="edge-band half-width in photo px (default 3)")
    ap.add_argument("--threshold", type=float, default=0.05,
                    help="discontinuity: 3x3 (max - min) > threshold * min (default 0.05)")
    ap.add_argument("--target", type=int, default=256, help="network size (default 256)")
    ap.add_argument("--runs", type=int, default=None, help="timed calls per measurement (default 5, quick 3)")
    ap.add_argument("--seed", type=int, default=0, help="seed offset of the synthetic scenes")
    ap.add_argument("--no-motorcycle", action="store_true", help="synthetic scenes only (no scikit-image)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    runs = args.runs or (3 if args.quick else 5)
    t_start = time.perf_counter()

    scenes: List[Scene] = [] if args.no_motorcycle else [motorcycle()]
    scenes += [make(seed=args.seed + i) for i, make in enumerate(SYNTHETIC.values())]
    prepared = [prepare(s, args.target, args.band, args.threshold) for s in scenes]
    names = [p.scene.name for p in prepared]
    print(f"# Upsampling-stage evaluation (edge band {args.band:g} px, threshold {args.threshold:g}, "
          f"target {args.target}{', --quick' if args.quick else ''})\n")
    print(table(["scene", "photo HxW", "network hxw", "scale W/w", "valid %", "edge band %", "tex band %"],
                [[p.scene.name, "x".join(map(str, p.scene.gt.shape)), "x".join(map(str, p.low.shape)),
                  f"{p.scale:.3f}", f"{100 * p.scene.valid.mean():.1f}",
                  f"{100 * p.masks['edge'].mean():.1f}", f"{100 * p.masks['tex'].mean():.1f}"]
                 for p in prepared]))

    results, params_of = evaluate(prepared, QUICK_GRID if args.quick else GRID)
    bic = results[("bicubic", "-")]
    best = {m: pick_best(results, m) for m in REFINERS}

    def label_of(key: Key) -> str:
        method, label = key
        if method == "bicubic":
            return "-"
        if label == "default":
            same = best[method][1] == fmt_params(DEFAULTS[method])
            return f"{fmt_params(DEFAULTS[method])} ({'default = best' if same else 'default'})"
        if key == best[method]:
            return f"{label} (default = best)" if label == fmt_params(DEFAULTS[method]) else f"{label} (best)"
        return label

    rows = [["bicubic", "-", mean(bic, "all_absrel"), mean(bic, "edge_absrel"), mean(bic, "tex_absrel")]]
    rows += [[k[0], label_of(k), mean(r, "all_absrel"), mean(r, "edge_absrel"), mean(r, "tex_absrel")]
             for k, r in results.items() if k[0] != "bicubic" and k[1] != "default"]
    print("\n## Sweep: mean over scenes (best = lowest mean edge AbsRel)\n")
    print(table(["method", "params", "AbsRel", "edge AbsRel", "tex AbsRel"], rows))

    loso: Dict[str, float] = {}
    rows = [["bicubic", mean(bic, "edge_absrel"), "-"]]
    for method in REFINERS:
        held = []
        for i in range(len(names)):
            key = pick_best(results, method, [j for j in range(len(names)) if j != i])
            held.append(f"{names[i]}: {key[1]} -> {results[key][i]['edge_absrel']:.4f}")
            loso.setdefault(method, 0.0)
            loso[method] += results[key][i]["edge_absrel"] / len(names)
        rows.append([method, loso[method], "; ".join(held)])
    print("\n## Leave one scene out: best chosen on the other scenes, edge AbsRel on the held-out one\n")
    print(table(["method", "mean held-out edge AbsRel", "held-out scene: params -> edge AbsRel"], rows))

    shown: List[Tuple[Key, Params]] = [(("bicubic", "-"), {})]
    for method in REFINERS:
        if best[method][1] != fmt_params(DEFAULTS[method]):
            shown.append(((method, "default"), {}))
        shown.append((best[method], params_of[best[method]]))
    timing = {key: [time_scene(p, key[0], params, runs) for p in prepared] for key, params in shown}

    rows = []
    for i, name in enumerate(names):
        for key, _ in shown:
            r = results[key][i]
            rows.append([name, key[0], label_of(key), r["all_absrel"], r["all_d1"], r["all_rmse"],
                         r["edge_absrel"], r["edge_d1"], r["edge_rmse"], r["tex_absrel"],
                         f"{timing[key][i]:.1f}"])
    print("\n## Per scene (RMSE in the scene's disparity units; ms/MP: refinement only, for bicubic the "
          "bicubic upsampling itself)\n")
    print(table(["scene", "method", "params", "AbsRel", "δ1", "RMSE", "edge AbsRel", "edge δ1", "edge RMSE",
                 "tex AbsRel", "ms/MP"], rows))

    rows = []
    for key, _ in shown:
        rs = results[key]
        wins = sum(r["edge_absrel"] < b["edge_absrel"] for r, b in zip(rs, bic, strict=True))
        rows.append([key[0], label_of(key), mean(rs, "all_absrel"), mean(rs, "all_d1"),
                     mean(rs, "edge_absrel"), mean(rs, "edge_d1"), mean(rs, "tex_absrel"),
                     "-" if key[0] == "bicubic" else f"{wins}/{len(rs)}", f"{np.mean(timing[key]):.1f}"])
    print(f"\n## Mean over the {len(names)} scenes\n")
    print(table(["method", "params", "AbsRel", "δ1", "edge AbsRel", "edge δ1", "tex AbsRel",
                 "scenes: edge AbsRel < bicubic's", "ms/MP"], rows))

    print("\n" + texture_only(shown, label_of, args.target, args.seed))
    band_network_px = args.band / float(np.median([p.scale for p in prepared]))
    text, scaled = scale_check(shown, label_of, (960, 1280) if args.quick else (1920, 2560), args.target,
                               args.seed, band_network_px, args.threshold)
    print("\n" + text)
    text, ms_12mp = time_12mp(shown, label_of, runs, args.quick, args.target, args.seed, band_network_px,
                              args.threshold)
    print("\n" + text)
    print("\n" + recommend(results, best, loso, scaled, ms_12mp))
    log.info("total %.1f s", time.perf_counter() - t_start)


if __name__ == "__main__":
    main()
