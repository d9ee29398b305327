"""The committed sample photos (tests/fixtures/samples) and the official implementations' arrays to compare
with: MiDaS small's in tests/fixtures/reference, Depth Anything V2 Small's in the team's shared folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parents[1] / "fixtures"
SAMPLES = {p.stem: p for p in sorted((FIXTURES / "samples").iterdir()) if p.suffix in (".png", ".jpg")}


# Depth Anything V2 Small's manifest and the official code's outputs: 43 MB, read from the team's shared
# folder beside the clone (CI has it there), never copied into the repository
DAV2_SHARED = Path(__file__).parents[3] / "shared/models/depth_anything_v2_small"
# the official references: (photo, input size); files without a size tag are at 518
DAV2_REFERENCES = [(name, size) for size in (518, 364)
                   for name in ("astronaut", "chelsea", "coffee", "rocket")]


def dav2_reference(folder: Path, name: str, size: int, kind: str) -> np.ndarray:
    """The official Depth Anything V2 Small array for a sample at an input size: net_input, net_output or
    upsampled."""
    return np.load(folder / f"{name}{'' if size == 518 else f'.{size}'}.{kind}.npy")


def reference(name: str, kind: str) -> np.ndarray:
    """The official implementation's array for a sample: net_input, net_output or upsampled."""
    return np.load(FIXTURES / "reference" / f"{name}.{kind}.npy")
