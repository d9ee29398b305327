"""Synthetic 3D scenes for the stereo tests and benchmark: fronto-parallel planes at known depths in
front of a textured background, and what each eye truly sees (the background behind the planes
included, which a depth-image-based renderer has to make up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Plane:
    """A rectangle [y0, y1) x [x0, x1) at relative inverse depth ``inverse`` (larger = nearer), showing
    ``texture`` (an (H, W, 3) uint8 image the size of the scene, or one RGB colour)."""

    y0: int
    y1: int
    x0: int
    x1: int
    inverse: float
    texture: object


def _paint(out: np.ndarray, plane: Plane, dx: int) -> None:
    width = out.shape[1]
    x0, x1 = max(0, plane.x0 + dx), min(width, plane.x1 + dx)
    if x1 <= x0:
        return
    if isinstance(plane.texture, np.ndarray):
        out[plane.y0:plane.y1, x0:x1] = plane.texture[plane.y0:plane.y1, x0 - dx:x1 - dx]
    else:
        out[plane.y0:plane.y1, x0:x1] = plane.texture


def render(background: np.ndarray, background_inverse: float, planes: Sequence[Plane],
           shifts: Sequence[int] = ()) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scene seen with the background shifted by ``shifts[0]`` pixels and plane i by ``shifts[i+1]``
    (none: the photo itself). Returns the image, its relative inverse depth and a mask of the pixels
    whose content is known (a shifted background leaves its border unknown)."""
    shifts = list(shifts) or [0] * (len(planes) + 1)
    height, width = background.shape[:2]
    image = np.zeros_like(background)
    known = np.zeros((height, width), bool)
    depth = np.full((height, width), background_inverse, np.float32)
    dx = shifts[0]
    src = slice(max(0, -dx), min(width, width - dx))
    dst = slice(max(0, dx), min(width, width + dx))
    image[:, dst] = background[:, src]
    known[:, dst] = True
    order = sorted(range(len(planes)), key=lambda i: planes[i].inverse)  # far to near
    for i in order:
        plane = planes[i]
        _paint(image, plane, shifts[i + 1])
        x0, x1 = max(0, plane.x0 + shifts[i + 1]), min(width, plane.x1 + shifts[i + 1])
        depth[plane.y0:plane.y1, x0:x1] = plane.inverse
        known[plane.y0:plane.y1, x0:x1] = True
    return image, depth, known


def eye_shifts(background_inverse: float, planes: Sequence[Plane], divergence: float, convergence: float,
               width: int) -> List[float]:
    """The disparity between the eyes (pixels) of the background and each plane, by the rule
    ``app.imaging.stereo`` documents: divergence % of the width times (normalised depth - convergence)."""
    values = [background_inverse] + [p.inverse for p in planes]
    lo, hi = min(values), max(values)
    return [divergence / 100.0 * width * ((v - lo) / (hi - lo) - convergence) for v in values]
