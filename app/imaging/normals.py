"""Normal maps from depth: the depth as a relief, its slope as a unit normal per pixel, in the RGB
encoding that normal-map users expect (``CONVENTIONS``).

Plain numpy and OpenCV on arrays; no Flask.
"""

from __future__ import annotations

from typing import Mapping, Tuple

import cv2
import numpy as np

from ..options import NormalOptions
from .pipeline import finite_copy, map_range, normalize

# the sign of (x, y) each encoding puts in red and green, x to the right and y up the image:
# OpenGL (Blender, Unity, Godot, glTF): red = right, green = up; DirectX (Unreal, 3ds Max): green = down;
# ControlNet's normal models (trained on ScanNet/NYU-style maps): red = left, green = up
CONVENTIONS: Mapping[str, Tuple[float, float]] = {"opengl": (1.0, 1.0), "directx": (1.0, -1.0),
                                                  "controlnet": (-1.0, 1.0)}


def relief(depth: np.ndarray, opts: NormalOptions) -> np.ndarray:
    """``(H, W)`` relative inverse depth -> float32 height in pixels (nearest = highest): the depth range
    spans ``normal_strength`` tenths of the longer side, smoothed by ``normal_smooth`` pixels."""
    height = normalize(depth) * np.float32(opts.normal_strength * 0.1 * max(depth.shape))
    if opts.normal_smooth > 0:
        height = cv2.GaussianBlur(height, (0, 0), opts.normal_smooth, borderType=cv2.BORDER_REFLECT)
    return height


def normals(height: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 height in pixels -> ``(H, W, 3)`` float32 unit normals (x right, y up the image,
    z toward the viewer), from central differences (at the border, as if the edge pixel repeated)."""
    h = height.astype(np.float32, copy=False)
    kernel = np.array([[-0.5, 0.0, 0.5]], np.float32)
    dx = cv2.filter2D(h, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    dy = cv2.filter2D(h, -1, kernel.T, borderType=cv2.BORDER_REPLICATE)
    inv = 1.0 / np.sqrt(dx * dx + dy * dy + 1.0)
    n = np.empty(h.shape + (3,), np.float32)
    np.multiply(dx, -inv, out=n[..., 0])
    np.multiply(dy, inv, out=n[..., 1])  # rows grow downward: up is -row, so the sign flips twice
    n[..., 2] = inv
    return n


def encode(n: np.ndarray, convention: str = "opengl") -> np.ndarray:
    """``(H, W, 3)`` unit normals -> ``(H, W, 3)`` uint8 RGB: each component from [-1, 1] to [0, 255]."""
    sx, sy = CONVENTIONS[convention]
    scaled = n * np.array([127.5 * sx, 127.5 * sy, 127.5], np.float32)
    scaled += 128.0  # 127.5 to centre, 0.5 to round
    return np.minimum(scaled, 255.0, out=scaled).astype(np.uint8)


STRIP = 512  # rows made at a time


def normal_map(depth: np.ndarray, opts: NormalOptions) -> np.ndarray:
    """``(H, W)`` relative inverse depth -> ``(H, W, 3)`` uint8 RGB normal map: the same as
    ``encode(normals(relief(depth, opts)))``, made a strip of rows at a time with as many rows around
    it as the smoothing and the slope reach (at 16 MP the whole map's float arrays came to 600 MB)."""
    finite = finite_copy(depth)  # the map normalize sees, and its range
    if finite is None:
        return encode(normals(relief(depth, opts)), opts.normal_convention)
    value_range = map_range(finite)
    # OpenCV's Gaussian kernel for float reaches round(4 sigma) rows; one more for the slope's difference
    reach = (round(4 * opts.normal_smooth) + 1 if opts.normal_smooth > 0 else 0) + 1
    scale = np.float32(opts.normal_strength * 0.1 * max(depth.shape))
    height = depth.shape[0]
    out = np.empty(depth.shape + (3,), np.uint8)
    for top in range(0, height, STRIP):
        lo, hi = max(0, top - reach), min(height, top + STRIP + reach)
        relief_rows = normalize(finite[lo:hi], value_range=value_range) * scale
        if opts.normal_smooth > 0:
            relief_rows = cv2.GaussianBlur(relief_rows, (0, 0), opts.normal_smooth,
                                           borderType=cv2.BORDER_REFLECT)
        n = min(STRIP, height - top)
        out[top:top + n] = encode(normals(relief_rows)[top - lo:top - lo + n], opts.normal_convention)
    return out
