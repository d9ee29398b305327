"""The user-facing options of a depth request, one definition shared by the CLI, the web form and the API.

Every option has a default and a documented range or set of choices; ``Options(...)`` validates on
construction, so an out-of-range value can never reach the pipeline. ``Options.from_strings`` parses
the string values a form or command line hands over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar

from .config import FALSE, TRUE
from .depth.registry import ALL_SIZES, DEFAULT_MODEL, MODEL_NAMES, MODELS

COLORMAPS: Tuple[str, ...] = (
    "inferno", "magma", "plasma", "viridis", "cividis", "turbo", "jet", "bone", "hot", "gray",
)
COLORBLIND_FRIENDLY: Tuple[str, ...] = ("viridis", "cividis")
# 0: the model's usual size; the others, each model's own (``models.ModelSpec.sizes``)
SIZES: Tuple[int, ...] = (0,) + ALL_SIZES
SQUARE_MODES: Tuple[str, ...] = ("off", "crop", "pad")
UPSAMPLERS: Tuple[str, ...] = ("bicubic", "guided", "joint_bilateral", "fgs")

T = TypeVar("T", bound="OptionsBase")


class OptionError(ValueError):
    """A user-supplied option is unknown, of the wrong type or out of range."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _opt(default: Any, help: str, choices: Optional[Tuple[Any, ...]] = None,
         lo: Optional[float] = None, hi: Optional[float] = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "lo": lo, "hi": hi})


class OptionsBase:
    """What every options dataclass shares: validation on construction, parsing of form or command-line
    strings and listing, all read from the fields' metadata (``help``, ``choices``, ``lo``, ``hi``)."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            _check(f.name, getattr(self, f.name), f.type, f.metadata)

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_strings(cls: Type[T], values: Mapping[str, Any], strict: bool = False) -> T:
        """Parses form-style strings of this class's names; any other name is an error only with
        ``strict`` (otherwise it belongs to someone else)."""
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        if strict:
            for name in values:
                if name not in known:
                    raise OptionError(name, "unknown option")
        return cls(**{n: _parse(n, values[n], f.type) for n, f in known.items() if n in values})

    def as_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Options(OptionsBase):
    """How to compute and show one depth map. Field metadata carries help, choices and ranges."""

    colormap: str = _opt("inferno", "colormap of the heatmap and overlay", choices=COLORMAPS)
    model: str = _opt(DEFAULT_MODEL, "depth model: midas-small (fast, the default) or "
                      "depth-anything-v2-small (finer detail, about 20 times slower)", choices=MODEL_NAMES)
    size: int = _opt(0, "network input size in pixels, larger is slower: midas-small 256, 384 or 512 (the "
                     "longer side), depth-anything-v2-small 364 or 518 (the shorter side); 0 = the "
                     "model's usual size (256, 518)", choices=SIZES)
    square: str = _opt("off", "make the photo square before inference: centre-crop or pad "
                       "(helps extreme aspect ratios); with crop, all outputs show the crop",
                       choices=SQUARE_MODES)
    flip: bool = _opt(False, "test-time augmentation: average with the mirrored photo's prediction "
                      "(twice the inference time)")
    upsample: str = _opt("bicubic", "how the network's depth is brought to the photo's size: bicubic (the "
                         "model's official resize: bicubic for MiDaS, bilinear for Depth Anything), or "
                         "guided by the photo's edges: guided (+70 ms at 12 MP), fgs (+160 ms), "
                         "joint_bilateral (slow: +12 s at 12 MP)",
                         choices=UPSAMPLERS)
    guided_radius: float = _opt(0.5, "guided upsampling: window radius, in network pixels", lo=0.5, hi=8.0)
    guided_eps: float = _opt(1e-5, "guided upsampling: regularisation; smaller follows weaker photo edges",
                             lo=1e-6, hi=1.0)
    jbu_sigma_space: float = _opt(0.5, "joint bilateral: spatial sigma, in network pixels", lo=0.25, hi=4.0)
    jbu_sigma_color: float = _opt(6.0, "joint bilateral: colour sigma, in gray levels", lo=1.0, hi=255.0)
    fgs_lambda: float = _opt(1.0, "fast global smoother: smoothness (times the squared upsampling factor)",
                             lo=0.1, hi=10000.0)
    fgs_sigma: float = _opt(4.0, "fast global smoother: colour sigma, in gray levels", lo=1.0, hi=255.0)
    clip: float = _opt(1.0, "percent of pixels clipped at each end before normalising "
                       "(robust min-max; 0 = plain min-max)", lo=0.0, hi=20.0)
    log: bool = _opt(False, "map depth logarithmically (spreads out far, flat regions)")
    clahe: bool = _opt(False, "local contrast equalisation (CLAHE) of the normalised depth")
    clahe_clip: float = _opt(2.0, "CLAHE clip limit", lo=0.5, hi=40.0)
    clahe_grid: int = _opt(8, "CLAHE tiles per side", lo=1, hi=64)
    contrast: float = _opt(1.0, "contrast multiplier around mid-grey", lo=0.0, hi=4.0)
    brightness: float = _opt(0.0, "brightness offset", lo=-1.0, hi=1.0)
    invert: bool = _opt(False, "invert the mapping (near = dark instead of near = bright)")
    alpha: float = _opt(0.5, "opacity of the heatmap in the overlay view", lo=0.0, hi=1.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        model = MODELS[self.model]
        if self.size == 0:  # frozen: the one place a field is filled in after construction
            object.__setattr__(self, "size", model.default_size)
        elif self.size not in model.sizes:
            raise OptionError("size", f"{self.model} takes {' or '.join(map(str, model.sizes))} (or 0 for "
                                      f"{model.default_size}); got {self.size}")

    def depth_options(self) -> Dict[str, Any]:
        """The values that change the raw depth itself (the rest only change how it is shown)."""
        return {name: getattr(self, name) for name in DEPTH_OPTIONS}

    def upsample_params(self) -> Dict[str, float]:
        """The keyword arguments of ``pipeline.refine_edges`` for the chosen method."""
        return {
            "bicubic": {},
            "guided": {"radius": self.guided_radius, "eps": self.guided_eps},
            "joint_bilateral": {"sigma_space": self.jbu_sigma_space, "sigma_color": self.jbu_sigma_color},
            "fgs": {"lam": self.fgs_lambda, "sigma_color": self.fgs_sigma},
        }[self.upsample]


# what the network sees; changing one needs a new inference
INFERENCE_OPTIONS: Tuple[str, ...] = ("model", "size", "square", "flip")
# what the raw depth depends on: the above plus upsampling, which re-runs from the cached prediction
DEPTH_OPTIONS: Tuple[str, ...] = INFERENCE_OPTIONS + (
    "upsample", "guided_radius", "guided_eps", "jbu_sigma_space", "jbu_sigma_color", "fgs_lambda",
    "fgs_sigma")


def _parse(name: str, raw: Any, kind: str) -> Any:
    text = str(raw).strip()
    if kind == "bool":
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise OptionError(name, f"expected true or false, got {text[:40]!r}")
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise OptionError(name, f"expected a whole number, got {text[:40]!r}") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise OptionError(name, f"expected a number, got {text[:40]!r}") from None
    return text


def _check(name: str, value: Any, kind: str, meta: Mapping[str, Any]) -> None:
    expected = {"bool": bool, "int": int, "float": (int, float), "str": str}[kind]
    # bool is an int subclass: refuse True where a number is meant, and 1 where a flag is meant
    if not isinstance(value, expected) or (kind != "bool" and isinstance(value, bool)):
        raise OptionError(name, f"expected {kind}, got {type(value).__name__}")
    if kind == "float" and not math.isfinite(value):
        raise OptionError(name, f"must be a finite number, got {value}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise OptionError(name, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise OptionError(name, f"must be between {lo} and {hi}; got {value}")


# stereo 3D and normal maps -----------------------------------------------------------------------------

STEREO_LAYOUTS: Tuple[str, ...] = ("sbs", "sbs-half", "top-bottom", "cross-eyed", "anaglyph-dubois",
                                   "anaglyph")


@dataclass(frozen=True)
class StereoOptions(OptionsBase):
    """How one photo and its depth become a stereo pair (see ``app.imaging.stereo``)."""

    divergence: float = _opt(2.0, "stereo strength: how far the nearest point is shifted against the "
                                  "farthest between the two eyes, in % of the width", lo=0.0, hi=10.0)
    convergence: float = _opt(0.5, "which depth sits on the screen plane: 0 the farthest point (everything "
                                   "comes out of the screen), 1 the nearest (everything behind it)",
                              lo=0.0, hi=1.0)
    swap_eyes: bool = _opt(False, "swap the two eyes' images")
    layout: str = _opt("sbs", "sbs (full side-by-side, twice as wide), sbs-half (each eye squeezed to half "
                              "width: 3D TVs), top-bottom, cross-eyed (right eye on the left, for free "
                              "viewing), anaglyph-dubois (red-cyan glasses, colours kept), anaglyph "
                              "(plain red-cyan)", choices=STEREO_LAYOUTS)


NORMAL_CONVENTIONS: Tuple[str, ...] = ("opengl", "directx", "controlnet")


# video ----------------------------------------------------------------------------------------------

VIDEO_VIEWS: Tuple[str, ...] = ("heatmap", "overlay", "gray", "side", "stereo")
NORM_MODES: Tuple[str, ...] = ("clip", "frame")


@dataclass(frozen=True)
class VideoOptions(StereoOptions):
    """How a video is turned into a depth video, beside the per-frame ``Options``; the stereo fields it
    inherits shape the frames when ``view`` is stereo."""

    view: str = _opt("heatmap", "what the output video shows: heatmap, overlay on the frame, gray, side "
                     "(the frame and its heatmap side by side), or stereo (a 3D video of the frames in "
                     "the stereo layout)", choices=VIDEO_VIEWS)
    ema: bool = _opt(True, "temporal smoothing: blend each frame's depth with the previous ones "
                     "(exponential moving average)")
    ema_alpha: float = _opt(0.7, "EMA weight of the current frame (1 = no smoothing; lower = smoother, "
                            "but moving edges trail)", lo=0.05, hi=1.0)
    bilateral: bool = _opt(True, "edge-preserving bilateral smoothing of each depth frame")
    bilateral_d: int = _opt(5, "bilateral filter diameter, in network pixels", lo=1, hi=15)
    bilateral_sigma_color: float = _opt(0.1, "bilateral range sigma, as a fraction of the frame's depth "
                                        "range (depth steps well above it are kept sharp)", lo=0.01, hi=1.0)
    bilateral_sigma_space: float = _opt(2.0, "bilateral spatial sigma, in network pixels", lo=0.5, hi=10.0)
    norm: str = _opt("clip", "normalisation range: one for the whole clip (no flicker; two passes) or "
                     "each frame's own", choices=NORM_MODES)
    stride: int = _opt(1, "process every Nth frame (the output keeps the clip's duration)", lo=1, hi=30)
    out_side: int = _opt(1280, "longer side of the output frames, in pixels (larger frames are "
                         "downscaled)", lo=64, hi=3840)
    depth_zip: bool = _opt(False, "also write the depth as a zip of 16-bit PNGs, one per frame")



# 3D exports --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SceneOptions(OptionsBase):
    """How relative depth becomes geometry. MiDaS gives inverse depth up to an unknown scale and shift,
    so the 3D shape needs two assumptions from the user: how much deeper the far end is than the near
    end, and the camera's field of view."""

    depth_scale: float = _opt(1.0, "how much farther the farthest point is than the nearest: far = near × "
                                   "(1 + depth_scale); larger gives deeper relief", lo=0.05, hi=20.0)
    fov: float = _opt(60.0, "assumed horizontal field of view of the camera, in degrees (a phone's main "
                            "camera: about 65-75)", lo=10.0, hi=150.0)
    grid: int = _opt(512, "longer side of the vertex grid, in points (the depth is downscaled to it)",
                     lo=16, hi=2048)


@dataclass(frozen=True)
class NormalOptions(OptionsBase):
    """How depth becomes a normal map (see ``app.imaging.stereo.normal_map``)."""

    normal_strength: float = _opt(1.0, "relief of the normal map: the depth range counts as this many "
                                       "tenths of the image's longer side", lo=0.05, hi=20.0)
    normal_smooth: float = _opt(1.0, "Gaussian smoothing of the depth before its slope is taken, in "
                                     "pixels (0 = none)", lo=0.0, hi=20.0)
    normal_convention: str = _opt("opengl", "how the normal's direction is coloured: opengl (red = right, "
                                            "green = up: Blender, Unity, Godot, glTF), directx (green = "
                                            "down: Unreal), controlnet (red = left, green = up: "
                                            "ControlNet's normal models)",
                                  choices=NORMAL_CONVENTIONS)
