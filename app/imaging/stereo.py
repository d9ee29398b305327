"""Stereo 3D from one photo and its depth: depth-image-based rendering (DIBR).

Each eye's image moves every pixel sideways by half its disparity, ``divergence`` % of the width times
(its normalised depth - ``convergence``): points at the convergence depth stay on the screen plane,
nearer ones come out of it (crossed disparity), farther ones go behind. Where a near object moves off
what was behind it, that eye sees background the photo never showed (a disocclusion); the gap is filled
from the background side only, by mirroring the background's texture into it (``fill_holes``: the
method that won against repeating the edge pixel and OpenCV's inpainting, docs/stereo.md). Then the
two eyes go into a layout: side-by-side (full or half), top-bottom, cross-eyed or a red-cyan anaglyph.

Plain numpy and OpenCV on arrays; no Flask.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from ..options import StereoOptions
from .pipeline import finite_copy, map_range, normalize

# Dubois' least-squares red-cyan anaglyph (E. Dubois, "A projection method to generate anaglyph stereo
# images", ICASSP 2001; the matrices as he published them for red-cyan glasses): rows are the output's
# R, G, B, columns the eye image's R, G, B
DUBOIS_LEFT = np.array([[0.456, 0.500, 0.176], [-0.040, -0.038, -0.016], [-0.015, -0.021, -0.005]],
                       np.float32)
DUBOIS_RIGHT = np.array([[-0.043, -0.088, -0.002], [0.378, 0.734, -0.018], [-0.072, -0.113, 1.226]],
                        np.float32)
# a mirrored pixel counts as background when it is at most this much (of the depth range) nearer than
# the hole's background edge: a gently sloping floor still mirrors, a foreground object does not
BACKGROUND_TOLERANCE = 0.02


def disparity(near: np.ndarray, divergence: float, convergence: float) -> np.ndarray:
    """``(H, W)`` normalised depth (1 = nearest) -> float32 disparity in pixels between the eyes
    (positive: nearer than the screen plane)."""
    width = near.shape[1]
    return ((near - np.float32(convergence)) * np.float32(divergence / 100.0 * width)).astype(np.float32)


def forward_warp(photo: np.ndarray, near: np.ndarray, shift: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moves each pixel of ``(H, W, 3)`` uint8 ``photo`` by its whole-pixel ``(H, W)`` int32 ``shift``
    along its row; where several land on one pixel the nearest (largest ``near``) wins. Returns the
    image, the depth it shows and the ``(H, W)`` bool mask of pixels something landed on."""
    height, width = near.shape
    size = height * width
    columns = np.arange(width, dtype=np.int32)
    target_x = columns[None, :] + shift
    target = target_x + (np.arange(height, dtype=np.int32) * width)[:, None]
    target[(target_x < 0) | (target_x >= width)] = size  # off the edge: a slot past the end
    # one key per pixel, its depth (16 bits) above its column: the largest key landing on a pixel is the
    # nearest pixel there, and says which column of the same row it came from; one scatter, no sort
    key = np.rint(near * 65535.0).astype(np.int64)
    key <<= 32
    key |= columns.astype(np.int64)
    best = np.full(size + 1, -1, np.int64)
    np.maximum.at(best, target.ravel(), key.ravel())
    # the keys' low 32 bits: the source column, -1 where nothing landed, which remap's constant border
    # turns into black and depth 0; OpenCV's threaded gather is far faster than numpy's for 3-byte pixels
    source_x = best[:size].astype(np.int32).astype(np.float32).reshape(height, width)
    rows = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
    image, shown = (cv2.remap(src, source_x, rows, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0) for src in (photo, near.astype(np.float32, copy=False)))
    return image, shown, (best[:size] >= 0).reshape(height, width)


def hole_sources(shown: np.ndarray, filled: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The gaps of ``(H, W)`` rows (``filled`` False) that have a filled pixel on at least one side:
    their rows and columns, the column of their background edge (the farther of the nearest filled
    pixels left and right) and the side it is on (-1 left, +1 right)."""
    width = filled.shape[1]
    cols = np.arange(width, dtype=np.int32)[None, :]
    left = np.maximum.accumulate(np.where(filled, cols, -1), axis=1)
    right = np.minimum.accumulate(np.where(filled, cols, width)[:, ::-1], axis=1)[:, ::-1]
    ys, xs = np.nonzero(~filled)
    lc, rc = left[ys, xs], right[ys, xs]
    some = (lc >= 0) | (rc < width)
    ys, xs, lc, rc = ys[some], xs[some], lc[some], rc[some]
    far_left = np.where(lc >= 0, shown[ys, np.maximum(lc, 0)], np.inf)
    far_right = np.where(rc < width, shown[ys, np.minimum(rc, width - 1)], np.inf)
    use_left = far_left <= far_right  # the farther side: smaller normalised depth
    return ys, xs, np.where(use_left, lc, rc), np.where(use_left, -1, 1)


def fill_holes(image: np.ndarray, shown: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Fills the gaps of a warped ``(H, W, 3)`` uint8 eye from the background side only: a gap pixel
    k pixels from its background edge takes the background pixel k - 1 pixels beyond that edge (the
    texture mirrored), or the edge pixel itself where the mirror would reach a gap, the border or
    something nearer than the edge. ``shown`` is the eye's (H, W) normalised depth; returns a new image."""
    width = filled.shape[1]
    ys, xs, edge, side = hole_sources(shown, filled)
    mirror = 2 * edge - xs - side  # left edge (side -1): e - (x - e - 1); right edge: e + (e - x - 1)
    inside = (mirror >= 0) & (mirror < width)
    mirror = np.clip(mirror, 0, width - 1)
    usable = inside & filled[ys, mirror] & (shown[ys, mirror] <= shown[ys, edge] + BACKGROUND_TOLERANCE)
    out = image.copy()
    out[ys, xs] = image[ys, np.where(usable, mirror, edge)]
    return out


def eyes(photo: np.ndarray, depth: np.ndarray, opts: StereoOptions,
         value_range: Optional[Tuple[float, float]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 photo and its ``(H, W)`` relative inverse depth -> the left and right eyes'
    ``(H, W, 3)`` uint8 images (swapped with ``swap_eyes``). The depth's own min and max span the
    divergence, or ``value_range`` (a video's one range for the clip, so that nothing jumps between
    frames). The pair's shift of any point is its disparity rounded to a whole pixel: each eye's
    shift is rounded, the other eye's follows from it."""
    near = normalize(depth, value_range=value_range)
    d = disparity(near, opts.divergence, opts.convergence)
    left_shift = np.rint(d * 0.5).astype(np.int32)
    right_shift = left_shift - np.rint(d).astype(np.int32)
    left, right = (fill_holes(*forward_warp(photo, near, shift)) for shift in (left_shift, right_shift))
    return (right, left) if opts.swap_eyes else (left, right)


def anaglyph(left: np.ndarray, right: np.ndarray, dubois: bool) -> np.ndarray:
    """Two ``(H, W, 3)`` uint8 eyes -> a red-cyan anaglyph: plain (red from the left eye, green and blue
    from the right) or Dubois' colour-preserving projection."""
    if not dubois:
        out = right.copy()
        out[..., 0] = left[..., 0]
        return out
    mixed = left.astype(np.float32) @ DUBOIS_LEFT.T + right.astype(np.float32) @ DUBOIS_RIGHT.T
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def layout(left: np.ndarray, right: np.ndarray, name: str) -> np.ndarray:
    """Two ``(H, W, 3)`` uint8 eyes -> one image in the layout ``name`` (see ``StereoOptions.layout``)."""
    if name == "sbs":
        return np.hstack([left, right])
    if name == "cross-eyed":
        return np.hstack([right, left])
    if name == "top-bottom":
        return np.vstack([left, right])
    if name == "sbs-half":
        height, width = left.shape[:2]
        half = max(1, width // 2)
        squeezed = [cv2.resize(eye, (half, height), interpolation=cv2.INTER_AREA) for eye in (left, right)]
        return np.hstack(squeezed)
    if name in ("anaglyph", "anaglyph-dubois"):
        return anaglyph(left, right, dubois=name == "anaglyph-dubois")
    raise ValueError(f"unknown stereo layout {name!r}")


STRIP = 256  # rows made at a time: a pixel moves along its row only, so each row's eyes are its own


def stereo(photo: np.ndarray, depth: np.ndarray, opts: StereoOptions,
           value_range: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 photo and ``(H, W)`` depth -> the stereo image in ``opts.layout``, uint8 RGB
    (``value_range``: see ``eyes``). Made a strip of rows at a time, the same image as ``layout(*eyes(…))``
    with the whole map's range: at 16 MP the warp's whole-map arrays came to about 1 GB."""
    finite = finite_copy(depth) if not np.isfinite(depth).all() else depth  # as normalize would see it
    if finite is None:  # nothing finite: normalize gives 0 everywhere, as a constant map does
        finite, value_range = np.zeros(depth.shape, np.float32), (0.0, 0.0)
    rng = value_range if value_range is not None else map_range(np.asarray(finite, np.float32))
    height = depth.shape[0]
    out: Optional[np.ndarray] = None
    for top in range(0, height, STRIP):
        rows = slice(top, min(top + STRIP, height))
        left, right = eyes(photo[rows], finite[rows], opts, rng)
        if opts.layout == "top-bottom":  # each eye's rows go to its own half
            if out is None:
                out = np.empty((2 * height,) + left.shape[1:], np.uint8)
            out[rows], out[height + top:height + rows.stop] = left, right
            continue
        made = layout(left, right, opts.layout)
        if out is None:
            out = np.empty((height,) + made.shape[1:], np.uint8)
        out[rows] = made
    assert out is not None, "a depth map has at least one row"
    return out
