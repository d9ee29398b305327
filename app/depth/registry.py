"""The depth models this studio can run, as data: names, weights, licences, input sizes and how each one's
input and output are resized. No torch here (the pipeline and the web layer read it); the networks are
in ``app.depth.midas`` and ``app.depth.dav2``, their loading in ``app.depth.model``.

Both models output relative inverse depth (larger = nearer, unknown scale and shift), so everything
after inference treats them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np


class WeightsError(RuntimeError):
    """The weights cannot be found, fetched, verified or loaded. The message says what to do."""


# how each model sizes its input, as the official code does

def network_size(height: int, width: int, target: int = 256, multiple: int = 32) -> Tuple[int, int]:
    """The official MiDaS "upper_bound" resize: keep aspect, both sides <= target, multiples of 32."""
    scale = min(target / height, target / width)

    def constrain(x: float) -> int:
        y = int(np.round(x / multiple) * multiple)
        if y > target:
            y = int(np.floor(x / multiple) * multiple)
        # the official code can return 0 for extreme aspect ratios (and then crashes); one step is the floor
        return max(y, multiple)

    return constrain(scale * height), constrain(scale * width)


def network_size_lower(height: int, width: int, target: int = 518, multiple: int = 14) -> Tuple[int, int]:
    """The official Depth Anything "lower_bound" resize: keep aspect, both sides >= target, each the
    nearest multiple of 14 (half to even, as ``np.round``), the next one up where that falls short."""
    scale = max(target / height, target / width)

    def constrain(x: float) -> int:
        y = int(np.round(x / multiple) * multiple)
        if y < target:
            y = int(np.ceil(x / multiple) * multiple)
        return max(y, multiple)

    return constrain(scale * height), constrain(scale * width)


@dataclass(frozen=True)
class ModelSpec:
    """One model. ``resize`` is the official input sizing: ``upper_bound`` (both sides at most the size,
    MiDaS) or ``lower_bound`` (the short side at least the size, Depth Anything), to multiples of
    ``multiple``. ``upsample`` is the official resize of the output to the photo: ``bicubic`` (align
    corners off) or ``bilinear_corners`` (bilinear, align corners on)."""

    name: str
    title: str
    licence: str
    weights_filename: str
    weights_url: str
    weights_digest: str  # "sha256:HEX" or "gitblob:HEX"
    weights_env: str  # the environment variable (and Flask setting) of an explicit weights path
    sizes: Tuple[int, ...]
    default_size: int
    multiple: int
    resize: str
    upsample: str
    preprocess_dtype: str = "float32"  # what the official code resizes and normalises the photo in
    # whether a start runs the network at the usual photo shapes (``DepthModel.warm_up``): a new shape's
    # preparation is a few ms, a Depth Anything forward pass 0.5-2 s, so seven shapes there would add
    # about 10 s to every start and save nothing a user would notice
    warm_up: bool = True

    def input_shape(self, height: int, width: int, size: int) -> Tuple[int, int]:
        """The network input's ``(h, w)`` for a ``height`` × ``width`` image at ``size``, by this model's
        rule."""
        sizing = network_size if self.resize == "upper_bound" else network_size_lower
        return sizing(height, width, size, self.multiple)

    def how_to_fix(self, dest: Path) -> str:
        """What to do when these weights are missing or unusable at ``dest``: one sentence."""
        return (f"Download {self.weights_filename} from {self.weights_url} on a machine with internet access "
                f"and either put it at {dest} or pass its path with --weights PATH (or "
                f"{self.weights_env}=PATH).")


MIDAS_SMALL = ModelSpec(
    name="midas-small",
    title="MiDaS v2.1 small",
    licence="MIT",
    weights_filename="midas_v21_small_256.pt",
    weights_url="https://github.com/isl-org/MiDaS/releases/download/v2_1/midas_v21_small_256.pt",
    # the only published fingerprint of the official file: its git blob id in a public repository that
    # commits a copy (``git hash-object FILE``); the sha256 of whatever loads is reported in its place
    weights_digest="gitblob:e224b2bed206ebb398b613018f24458f00eab784",
    weights_env="MIDAS_WEIGHTS",
    sizes=(256, 384, 512),
    default_size=256,
    multiple=32,
    resize="upper_bound",
    upsample="bicubic",
)

DEPTH_ANYTHING_V2_SMALL = ModelSpec(
    name="depth-anything-v2-small",
    title="Depth Anything V2 Small",
    # only the Small model: Base and Large are CC-BY-NC-4.0 and are not offered
    licence="Apache-2.0",
    weights_filename="depth_anything_v2_vits.pth",
    weights_url="https://huggingface.co/depth-anything/Depth-Anything-V2-Small/resolve/main/"
                "depth_anything_v2_vits.pth",
    # Hugging Face's LFS pointer of the file (upload commit 65ae6e3)
    weights_digest="sha256:715fade13be8f229f8a70cc02066f656f2423a59effd0579197bbf57860e1378",
    weights_env="DAV2_WEIGHTS",
    # 518 = 37 × 14 is the official size; 364 = 26 × 14 costs about a quarter of it
    sizes=(364, 518),
    default_size=518,
    multiple=14,
    resize="lower_bound",
    upsample="bilinear_corners",
    preprocess_dtype="float64",
    warm_up=False,
)

MODELS: Dict[str, ModelSpec] = {m.name: m for m in (MIDAS_SMALL, DEPTH_ANYTHING_V2_SMALL)}
MODEL_NAMES: Tuple[str, ...] = tuple(MODELS)
DEFAULT_MODEL = MIDAS_SMALL.name
ALL_SIZES: Tuple[int, ...] = tuple(sorted({s for m in MODELS.values() for s in m.sizes}))


def spec(name: str) -> ModelSpec:
    """The model called ``name``; ``KeyError`` for another name."""
    return MODELS[name]


def parse_model_list(text: str) -> Tuple[str, ...]:
    """``"midas-small, depth-anything-v2-small"`` -> the names, in order, without repeats; ``ValueError``
    naming an unknown one or for an empty list."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}: choose from {', '.join(MODEL_NAMES)}")
    if not names:
        raise ValueError(f"no model named: choose from {', '.join(MODEL_NAMES)}")
    return names
