"""Normal maps from depth: the depth as a relief, its slope as a unit normal per pixel, in the RGB
encoding that normal-map users expect (``CONVENTIONS``).

Plain numpy and OpenCV on arrays; no Flask.
"""

from __future__ import annotations

from typing import Mapping, Tuple

import cv2
import numpy as np

from .options import NormalOptions
from .pipeline import normalize

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
    z toward the viewer), from central differences (one-sided at the border)."""
    dy, dx = np.gradient(height.astype(np.float32))
    n = np.stack([-dx, dy, np.ones_like(dx)], axis=-1)  # rows grow downward: up is -row, so -(-dy)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return n


def encode(n: np.ndarray, convention: str = "opengl") -> np.ndarray:
    """``(H, W, 3)`` unit normals -> ``(H, W, 3)`` uint8 RGB: each component from [-1, 1] to [0, 255]."""
    sx, sy = CONVENTIONS[convention]
    signs = np.array([sx, sy, 1.0], np.float32)
    return np.clip((n * signs + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def normal_map(depth: np.ndarray, opts: NormalOptions) -> np.ndarray:
    """``(H, W)`` relative inverse depth -> ``(H, W, 3)`` uint8 RGB normal map."""
    return encode(normals(relief(depth, opts)), opts.normal_convention)
