"""Depth Anything V2's position embedding for an input's patch grid, in NumPy: the second input of its
exported graph (see ``app.depth.dav2.WithPositions``).

The same resize as ``app.depth.dav2.resize_position_grid`` (the official ``interpolate_pos_encoding``:
PyTorch's bicubic by scale factors (n + 0.1) / 37), written without PyTorch so that a worker running the
export on ONNX Runtime or OpenVINO never imports it (about 200 MB less per worker). The sampling
positions and weights are computed in float32 as PyTorch computes them, the sums in float64; the result
agrees with PyTorch's to float32 rounding (tests/unit/test_dav2_network.py).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, List, Tuple

import numpy as np

PATCH = 14  # pixels per patch side
TRAIN_GRID = 37  # 518 px / 14: the grid the embedding was trained on
# the official ``interpolate_pos_encoding`` passes scale factors (n + 0.1) / 37, not a target size: the
# offset keeps floor(37 * factor) = n, and it changes the sampling positions
INTERPOLATE_OFFSET = 0.1
CUBIC_A = -0.75  # PyTorch's bicubic (Keys' cubic convolution with a = -0.75)
EMBED_SHAPE = (1, 1 + TRAIN_GRID * TRAIN_GRID, 384)  # the checkpoint's ``pretrained.pos_embed``


def cubic_matrix(size_out: int, scale: float, size_in: int = TRAIN_GRID) -> np.ndarray:
    """``(size_out, size_in)`` float64: PyTorch's bicubic resize along one axis by ``scale`` as a matrix.
    Output ``d`` samples input ``(d + 0.5) / scale - 0.5`` from its four neighbours, the border repeated;
    like PyTorch (``area_pixel_compute_scale`` with a scale given), the step ``1 / scale`` and the
    position are float32."""
    f32 = np.float32
    a = f32(CUBIC_A)

    def near(x: np.float32) -> np.float32:  # the weight of a tap at distance x <= 1
        return ((a + f32(2)) * x - (a + f32(3))) * x * x + f32(1)

    def far(x: np.float32) -> np.float32:  # at 1 < x < 2
        return ((a * x - f32(5) * a) * x + f32(8) * a) * x - f32(4) * a

    step = f32(1.0 / scale)
    out = np.zeros((size_out, size_in))
    for d in range(size_out):
        real = step * f32(d + 0.5) - f32(0.5)
        base = math.floor(real)
        t = f32(real - f32(base))
        rest = f32(1) - t
        weights = (far(t + f32(1)), near(t), near(rest), far(rest + f32(1)))
        for k, w in enumerate(weights):
            out[d, min(max(base - 1 + k, 0), size_in - 1)] += float(w)
    return out


def resize_positions(pos_embed: np.ndarray, grid_h: int, grid_w: int) -> np.ndarray:
    """``(1, 1 + 37*37, 384)`` trained embedding -> ``(1, 1 + grid_h*grid_w, 384)`` float32: unchanged for
    the 37x37 grid, else the grid part resized (height by (grid_h + 0.1) / 37, width by (grid_w + 0.1) /
    37) and the cls position put first, unchanged."""
    pos = np.asarray(pos_embed, np.float32)
    if (grid_h, grid_w) == (TRAIN_GRID, TRAIN_GRID):
        return pos
    grid = pos[0, 1:].reshape(TRAIN_GRID, TRAIN_GRID, -1).astype(np.float64)
    rows = cubic_matrix(grid_h, (grid_h + INTERPOLATE_OFFSET) / TRAIN_GRID)
    cols = cubic_matrix(grid_w, (grid_w + INTERPOLATE_OFFSET) / TRAIN_GRID)
    resized = np.einsum("hi,ijc,wj->hwc", rows, grid, cols, optimize=True).astype(np.float32)
    return np.concatenate((pos[:, :1], resized.reshape(1, grid_h * grid_w, -1)), axis=1)


class PositionGrids:
    """``resize_positions`` per patch grid, computed on first use and kept for the most recent ``size``
    grids (each (1 + h*w) x 384 float32: 3.2 MB at 784x518)."""

    def __init__(self, pos_embed: np.ndarray, size: int = 8) -> None:
        pos = np.array(pos_embed, np.float32)  # its own copy: the caller's may change
        self._resize = functools.lru_cache(maxsize=size)(lambda h, w: resize_positions(pos, h, w))

    def __call__(self, grid_h: int, grid_w: int) -> np.ndarray:
        return self._resize(grid_h, grid_w)


def grid_of(height: int, width: int) -> Tuple[int, int]:
    """The patch grid (rows, columns) of an input of that size (a multiple of 14 on each side)."""
    if height % PATCH or width % PATCH:
        raise ValueError(f"input {height}x{width}: both sides must be multiples of {PATCH}")
    return height // PATCH, width // PATCH


def positions_feed(pos_embed: np.ndarray) -> Callable[[np.ndarray], List[np.ndarray]]:
    """The inputs of the exported graph for a ``(1, 3, h, w)`` image: the image and the embedding for
    its grid, computed once per grid size."""
    grids = PositionGrids(pos_embed)
    return lambda x: [x, grids(*grid_of(x.shape[2], x.shape[3]))]
