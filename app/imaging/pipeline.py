"""The image pipeline: plain functions on numpy arrays, one stage each, in the order a request runs.

decode -> (square_crop) -> preprocess -> infer [model] -> upsample -> refine_edges -> enhance -> colorize
-> views -> encode (PNG or JPEG)

Nothing here imports torch or Flask: the model is passed in as a callable from ``(1, 3, h, w)``
float32 to ``(h, w)`` float32, so the same code serves the CLI, the web app and the tests.
"""

from __future__ import annotations

import io
import logging
import struct
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import cv2
import numpy as np
import pillow_heif
import simplejpeg
from isal import isal_zlib
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import config
from ..depth.registry import MIDAS_SMALL, ModelSpec, spec
from ..options import COLORMAPS, UPSAMPLERS, Options

log = logging.getLogger(__name__)

Model = Callable[[np.ndarray], np.ndarray]
PadBox = Tuple[int, int, int]  # (top, left, side) of the photo inside its padded square

# JPEG covers MPO; HEIF is what iPhones write (pillow-heif reads it, its orientation applied), AVIF
# Pillow reads itself
FORMATS: Tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF", "AVIF")
pillow_heif.register_heif_opener()
# declared size above this is refused before decoding; photos with a longer side are downscaled to this
DEFAULT_MAX_PIXELS: int = config.BY_ENV["DEPTHMAP_MAX_PIXELS"].default
DEFAULT_MAX_SIDE: int = config.BY_ENV["DEPTHMAP_MAX_SIDE"].default
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
VIEWS: Tuple[str, ...] = ("heatmap", "overlay", "gray")


class ImageError(ValueError):
    """The uploaded bytes are not a usable image. ``code`` is stable: empty, not_image, too_large, corrupt."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# 1. decode ------------------------------------------------------------------------------------------

def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
           max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Image file bytes -> ``(H, W, 3)`` uint8 RGB, EXIF-oriented, longer side <= ``max_side``."""
    if not data:
        raise ImageError("empty", "The file is empty.")
    with warnings.catch_warnings():
        # Pillow warns about damaged metadata (EXIF, ICC) and near-bomb sizes; the first we tolerate,
        # the second our own pixel limit below decides
        warnings.simplefilter("ignore")
        im = _open(data)
        width, height = im.size
        if width < 1 or height < 1:
            raise ImageError("corrupt", "The image has no pixels.")
        if width * height > max_pixels:
            raise ImageError("too_large", f"The image is {width}x{height} = "
                             f"{width * height / 1e6:.1f} megapixels; the limit is "
                             f"{max_pixels / 1e6:.1f} megapixels.")
        try:
            if im.format in ("JPEG", "MPO") and max(width, height) > max_side:
                # let libjpeg decode at 1/2, 1/4 or 1/8 scale: far less memory and time
                im.draft("RGB", _fit(width, height, max_side)[::-1])
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise ImageError("corrupt", f"The image is truncated or damaged ({exc}).") from None
        im = _orient(im)
    rgb = _to_rgb(im)
    if max(rgb.shape[:2]) > max_side:
        h, w = _fit(rgb.shape[1], rgb.shape[0], max_side)
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def working_size(data: bytes, max_side: int = DEFAULT_MAX_SIDE) -> Tuple[int, int]:
    """``(height, width)`` of the photo ``decode`` makes of ``data`` (its EXIF turn aside, which keeps
    the pixel count), from the header alone; ``ImageError`` where there is no image header to read."""
    if not data:
        raise ImageError("empty", "The file is empty.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        width, height = _open(data).size
    return _fit(width, height, max_side) if max(width, height) > max_side else (height, width)


_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\0", b"MM\0*")
# the ISO base media file brands of HEIF and AVIF images (an MP4 video's are not among them)
_IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def _open(data: bytes) -> Image.Image:
    """Pillow's lazy open (reads the header only), with its failures sorted into our error codes."""
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise ImageError("too_large", "The image declares more pixels than this server accepts.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        # a known signature whose header does not parse is a damaged image, not a wrong file type
        if (data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
                or (data[4:8] == b"ftyp" and data[8:12] in _IMAGE_BRANDS)):
            raise ImageError("corrupt", "The image is truncated or damaged.") from None
        raise ImageError("not_image", "The file is not an image in a supported format "
                         f"({', '.join(FORMATS)}).") from None


def _fit(width: int, height: int, max_side: int) -> Tuple[int, int]:
    """(height, width) scaled so the longer side is ``max_side``."""
    scale = max_side / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _orient(im: Image.Image) -> Image.Image:
    # in place: otherwise Pillow answers a full copy even when there is nothing to turn (48 MB at 12 MP)
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block must not cost the user the photo
        log.info("ignoring unreadable EXIF orientation")
    return im


DECODE_STRIP = 128  # rows copied out of Pillow at a time (each strip is briefly held three times)


def _rgb_pixels(im: Image.Image) -> np.ndarray:
    """A loaded RGB Pillow image -> ``(H, W, 3)`` uint8, copied a strip of rows at a time. NumPy's own
    conversion goes through one ``bytes`` of the whole image, which Pillow joins from pieces: beside
    Pillow's 4-byte pixels a 12 MP photo was then held three times over (measured: decoding peaked 127 MB
    above the process's memory before it, now 84 MB)."""
    width, height = im.size
    out = np.empty((height, width, 3), np.uint8)
    for r in range(0, height, DECODE_STRIP):
        n = min(DECODE_STRIP, height - r)
        out[r:r + n] = np.asarray(im.crop((0, r, width, r + n)))
    return out


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> ``(H, W, 3)`` uint8 RGB; transparency is composited on white, 16/32-bit is
    scaled down."""
    mode = im.mode
    if mode == "RGB":
        return _rgb_pixels(im)
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float32)
        if mode == "F":
            top = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        else:
            top = 65535.0
        gray = np.clip(np.nan_to_num(arr) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in im.info)
    if has_alpha:
        return on_white(np.asarray(im.convert("RGBA")))
    return np.asarray(im.convert("RGB"))


def on_white(rgba: np.ndarray) -> np.ndarray:
    """``(H, W, 4)`` uint8 RGBA -> ``(H, W, 3)`` uint8 RGB composited over white (photos and GIF frames
    alike: transparent pixels must not turn black)."""
    a = rgba[:, :, 3:4].astype(np.float32) * (1.0 / 255.0)
    return (rgba[:, :, :3] * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)


def square_crop(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` -> the centred ``(S, S, 3)`` square, S = min(H, W)."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return rgb[top:top + s, left:left + s]


# 2. preprocess --------------------------------------------------------------------------------------

PREPROCESS_STRIP = 256  # photo rows converted to float32 at a time


def preprocess(rgb: np.ndarray, size: int = 256, pad_square: bool = False,
               model: ModelSpec = MIDAS_SMALL) -> Tuple[np.ndarray, Optional[PadBox]]:
    """``(H, W, 3)`` uint8 -> network input ``(1, 3, h, w)`` float32, and where the photo sits if padded.

    Same order as both models' official transforms: scale to [0, 1], bicubic resize (to ``model``'s
    input shape), ImageNet normalisation, in ``model.preprocess_dtype`` (Depth Anything's code works in
    float64, and its input then matches to float rounding), then cast to float32.
    The bicubic resize is separable, so it is done as OpenCV does it inside, rows first, then columns,
    but strip by strip: only ``PREPROCESS_STRIP`` rows of the photo are ever in float32 (all of a
    12 MP photo would be 144 MB), and the result is the same to float rounding.
    """
    h, w = rgb.shape[:2]
    pad_box: Optional[PadBox] = None
    top = left = 0
    out_h, out_w = h, w  # the image the network sees: the photo, or the square it is padded to
    if pad_square:
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        out_h = out_w = side
        pad_box = (top, left, side)
    nh, nw = model.input_shape(out_h, out_w, size)
    dtype = np.dtype(model.preprocess_dtype)
    rows = np.empty((out_h, nw, 3), dtype)  # every row resized to the network's width
    strip = np.empty((min(PREPROCESS_STRIP, h), out_w, 3), dtype)
    if pad_square:
        # pad with the ImageNet mean: it normalises to exactly zero, the least informative value
        strip[:] = IMAGENET_MEAN
        rows[:] = cv2.resize(strip[:1], (nw, 1), interpolation=cv2.INTER_CUBIC)  # rows of padding only
    for r in range(0, h, PREPROCESS_STRIP):
        n = min(PREPROCESS_STRIP, h - r)
        photo = strip[:n, left:left + w]
        photo[:] = rgb[r:r + n]
        photo /= 255.0
        # height unchanged: OpenCV's cubic weights are then exactly (0, 1, 0, 0), rows stay as they are
        rows[top + r:top + r + n] = cv2.resize(strip[:n], (nw, n), interpolation=cv2.INTER_CUBIC)
    img = cv2.resize(rows, (nw, nh), interpolation=cv2.INTER_CUBIC)
    img = (img - IMAGENET_MEAN.astype(dtype)) / IMAGENET_STD.astype(dtype)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32), pad_box


# 3. infer (the model itself lives in app/depth/model.py) -----------------------------------------------

def infer(x: np.ndarray, model: Model, flip: bool = False) -> np.ndarray:
    """Stage 3: ``(1, 3, h, w)`` -> ``(h, w)``; with ``flip``, averaged with the un-mirrored prediction
    of the mirrored input (test-time augmentation, twice the cost)."""
    pred = model(x)
    if flip:
        mirrored = model(np.ascontiguousarray(x[..., ::-1]))
        pred = (pred + mirrored[:, ::-1]) * 0.5
    return np.ascontiguousarray(pred, dtype=np.float32)


# 4. upsample ----------------------------------------------------------------------------------------

def upsample(pred: np.ndarray, shape: Tuple[int, int], pad_box: Optional[PadBox] = None,
             mode: str = "bicubic") -> np.ndarray:
    """Network output ``(h, w)`` -> ``(H, W)`` float32 by the model's official resize: ``bicubic``
    (torch's, align_corners=False: MiDaS) or ``bilinear_corners`` (align_corners=True: Depth Anything)."""
    height, width = shape
    resize = _bilinear_corners if mode == "bilinear_corners" else _bicubic
    if pad_box is None:
        return resize(pred, height, width)
    top, left, side = pad_box
    full = resize(pred, side, side)
    return np.ascontiguousarray(full[top:top + height, left:left + width])


def _bicubic(pred: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(pred, (width, height), interpolation=cv2.INTER_CUBIC)


def _corner_taps(n: int, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``size`` outputs from ``n`` inputs with the corners aligned: the left input, the right
    one and the right one's weight (output i samples input i × (n - 1) / (size - 1))."""
    pos = np.arange(size, dtype=np.float64) * ((n - 1) / (size - 1) if size > 1 else 0.0)
    left = np.minimum(pos.astype(np.int64), n - 1)
    return left, np.minimum(left + 1, n - 1), (pos - left).astype(np.float32)


def _bilinear_corners(pred: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w)`` -> ``(height, width)`` float32, as torch's bilinear interpolation with align_corners=True.
    OpenCV has no such mode, so it is done separably: columns on the small map, then rows, strip by
    strip (no full-size temporary beyond the result)."""
    c0, c1, cw = _corner_taps(pred.shape[1], width)
    cols = pred[:, c0] * (1 - cw) + pred[:, c1] * cw  # (h, width)
    r0, r1, rw = _corner_taps(pred.shape[0], height)
    out = np.empty((height, width), np.float32)
    for r in range(0, height, PREPROCESS_STRIP):
        s = slice(r, min(r + PREPROCESS_STRIP, height))
        weight = rw[s, None]
        np.multiply(cols[r0[s]], 1 - weight, out=out[s])
        out[s] += cols[r1[s]] * weight
    return out


# 4b. edge-aware refinement -------------------------------------------------------------------------
# The network sees the photo at about 256 px; bicubic upsampling then smears depth across object
# borders. These methods pull depth edges onto the photo's own edges. Radii and sigmas are given in
# network-output pixels, so a setting means the same at any photo size.

def _gray(photo: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` float32 luminance in [0, 1]."""
    return cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)


def guided_upsample(depth: np.ndarray, photo: np.ndarray, scale: float, radius: float = 0.5,
                    eps: float = 1e-5) -> np.ndarray:
    """Fast guided filter (He & Sun 2015): the local linear model ``depth = a * gray + b`` is fitted on
    a grid about twice as fine as the network's, then ``a`` and ``b`` are upsampled and applied to the
    full-resolution gray photo. ``(H, W)`` float32 -> ``(H, W)`` float32."""
    height, width = depth.shape
    guide = _gray(photo)
    step = max(1.0, scale / 2.0)  # working grid: 2 cells per network pixel, never finer than the photo
    lw, lh = max(1, round(width / step)), max(1, round(height / step))
    g = cv2.resize(guide, (lw, lh), interpolation=cv2.INTER_AREA)
    p = cv2.resize(depth, (lw, lh), interpolation=cv2.INTER_AREA)
    k = 2 * max(1, round(radius * scale / step)) + 1

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (k, k), borderType=cv2.BORDER_REFLECT)

    mg, mp = box(g), box(p)
    var = box(g * g) - mg * mg
    cov = box(g * p) - mg * mp
    a = cov / (var + eps)
    b = mp - a * mg
    a = cv2.resize(box(a), (width, height), interpolation=cv2.INTER_LINEAR)
    b = cv2.resize(box(b), (width, height), interpolation=cv2.INTER_LINEAR)
    return a * guide + b


def joint_bilateral(depth: np.ndarray, photo: np.ndarray, scale: float, sigma_space: float = 0.5,
                    sigma_color: float = 6.0) -> np.ndarray:
    """Joint bilateral filter of the upsampled depth, weighted by the photo's gray levels (0..255) —
    OpenCV contrib ``ximgproc.jointBilateralFilter``; slow (about 1 s per megapixel on large photos).
    ``(H, W)`` float32 -> ``(H, W)`` float32."""
    sigma = max(0.5, sigma_space * scale)
    # the window is capped at 31 px because the cost grows with its square: above sigma = 7.5 px
    # (large photos) it is cut short of 2 sigma, so the setting is no longer size-independent there
    diameter = min(2 * round(2 * sigma) + 1, 31)
    guide = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.ximgproc.jointBilateralFilter(guide, depth, diameter, sigma_color, sigma)


def fgs(depth: np.ndarray, photo: np.ndarray, scale: float, lam: float = 1.0,
        sigma_color: float = 4.0) -> np.ndarray:
    """Fast global smoother (Min et al. 2014) guided by the RGB photo — ``ximgproc.fastGlobalSmootherFilter``.
    ``lam`` is multiplied by ``scale**2``: the smoothing's reach grows with sqrt(lambda), so this keeps
    it fixed in network pixels. (Measured: larger photos still smooth more across weak edges; see
    README.) ``(H, W)`` float32 -> float32."""
    return cv2.ximgproc.fastGlobalSmootherFilter(photo, depth, lam * scale * scale, sigma_color)


def refine_edges(depth: np.ndarray, photo: np.ndarray, scale: float, method: str = "bicubic",
                 **params: float) -> np.ndarray:
    """Stage 4b: ``(H, W)`` float32 bicubic-upsampled depth -> the same, edges moved onto the photo's.
    ``scale`` = photo pixels per network-output pixel; ``params`` are the method's keyword arguments."""
    if method not in UPSAMPLERS:
        raise ValueError(f"unknown upsampling method {method!r}")
    if method == "bicubic" or scale <= 1.0:  # nothing to refine at 1:1
        return depth
    fn = {"guided": guided_upsample, "joint_bilateral": joint_bilateral, "fgs": fgs}[method]
    return np.ascontiguousarray(fn(depth, photo, scale, **params), dtype=np.float32)


# 5. enhance -----------------------------------------------------------------------------------------

# percentiles of this many evenly strided values: the same answer as of every value to a fraction of a
# display level, and far cheaper at 12 MP
PERCENTILE_SAMPLE = 250_000


def strided_sample(values: np.ndarray, size: int = PERCENTILE_SAMPLE) -> np.ndarray:
    """Any-shape array -> 1-D view of every k-th value, k = ``values.size // size`` (at least 1): between
    ``size`` and ``2 * size`` values, or all of them when there are fewer."""
    flat = values.ravel()
    return flat[:: max(1, flat.size // size)]


def map_range(d: np.ndarray, clip: float = 0.0) -> Tuple[float, float]:
    """The values ``normalize`` maps to 0 and 1: the ``clip`` and ``100 - clip`` percentiles of a finite
    ``(H, W)`` float32 map (min and max when ``clip`` is 0)."""
    if clip > 0:
        lo, hi = (float(v) for v in np.percentile(strided_sample(d), [clip, 100.0 - clip]))
        return lo, hi
    lo, hi, _, _ = cv2.minMaxLoc(d)
    return lo, hi


def finite_copy(depth: np.ndarray) -> Optional[np.ndarray]:
    """``(H, W)`` any float -> a float32 copy with NaN/inf replaced by the smallest finite value, the
    map ``normalize`` takes its range from; None when no value is finite."""
    d = depth.astype(np.float32, copy=True)
    finite = np.isfinite(d)
    if not finite.all():
        if not finite.any():
            return None
        d[~finite] = d[finite].min()
    return d


def normalize(depth: np.ndarray, clip: float = 0.0,
              value_range: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """``(H, W)`` any float -> float32 in [0, 1]; ``clip`` percent clipped at each end; NaN/inf -> 0.
    A given ``value_range`` (lo, hi) is used instead of the map's own (a video's one range for the clip)."""
    d = finite_copy(depth)
    if d is None:
        return np.zeros(depth.shape, np.float32)
    lo, hi = value_range if value_range is not None else map_range(d, clip)
    if not hi > lo:  # constant map: nothing to show, and no division by zero
        return np.zeros_like(d)
    d -= lo
    d *= 1.0 / (hi - lo)
    return np.clip(d, 0.0, 1.0, out=d)


# log_depth's floor as a fraction of the map's largest value: MiDaS outputs exact zeros (its last layer
# is a ReLU), whose logarithm would otherwise stretch the display range without bound
LOG_FLOOR = 1e-3


def log_depth(depth: np.ndarray, values: Optional[np.ndarray] = None) -> np.ndarray:
    """Relative inverse depth ``(H, W)`` -> its logarithm (ratios become differences), float32, values
    below ``LOG_FLOOR`` times the largest raised to that floor first. Given ``values`` (float32, any
    shape), their logarithm with ``depth``'s floor instead: where they land on ``depth``'s log scale."""
    d = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(d.max()) if d.size else 0.0
    eps = max(top * LOG_FLOOR, np.finfo(np.float32).tiny)
    return np.log(np.maximum(d if values is None else values, eps))


def clahe(v: np.ndarray, clip_limit: float = 2.0, grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive equalisation of ``(H, W)`` float32 in [0, 1], done in 16 bits."""
    u16 = (v * 65535.0 + 0.5).astype(np.uint16)
    out = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid)).apply(u16)
    return out.astype(np.float32) * (1.0 / 65535.0)


def enhance(depth: np.ndarray, opts: Options,
            value_range: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Raw depth ``(H, W)`` -> display values ``(H, W)`` float32 in [0, 1], 1 = nearest (unless inverted).
    ``value_range``: see ``normalize`` (in log units with ``log``)."""
    v = normalize(log_depth(depth) if opts.log else depth, opts.clip, value_range)
    if opts.clahe:
        v = clahe(v, opts.clahe_clip, opts.clahe_grid)
    if opts.contrast != 1.0 or opts.brightness != 0.0:
        v = (v - 0.5) * opts.contrast + (0.5 + opts.brightness)
        np.clip(v, 0.0, 1.0, out=v)
    if opts.invert:
        v = 1.0 - v
    return v


DISPLAY_STRIP = 512  # depth rows clipped at a time


def display(depth: np.ndarray, opts: Options) -> np.ndarray:
    """Raw depth ``(H, W)`` -> display levels ``(H, W)`` uint8: ``to_uint8(enhance(depth, opts))`` to
    within one level (rounding), in two passes over the map instead of about eight. Normalising,
    contrast, brightness and invert are all clipped affine maps, so they compose into one: a clip of
    the depth, then one scaled conversion to 8 bits. CLAHE and maps with NaN or inf take the float path."""
    d = log_depth(depth) if opts.log else depth
    if opts.clahe or d.dtype != np.float32 or d.size == 0 or not cv2.checkRange(d, quiet=True)[0]:
        return to_uint8(enhance(depth, opts))
    lo, hi = map_range(d, opts.clip)
    # enhance as a function of the normalised n in [0, 1]: v = clip(c * n + k, 0, 1) (clip only with
    # contrast or brightness; without, n is already in [0, 1])
    c, k = float(opts.contrast), 0.5 - 0.5 * opts.contrast + opts.brightness
    v0, v1 = min(max(k, 0.0), 1.0), min(max(c + k, 0.0), 1.0)  # v at n = 0 and n = 1 (c >= 0)
    if not hi > lo or v0 == v1:  # one level everywhere: v at n = 0 (normalize gives 0 for a flat map)
        return np.full(d.shape, int(np.rint(255.0 * (1.0 - v0 if opts.invert else v0))), np.uint8)
    alpha = c / (hi - lo)  # v = alpha * d + beta, clipped to [v0, v1]
    beta = k - alpha * lo
    d_lo, d_hi = (v0 - beta) / alpha, (v1 - beta) / alpha
    # convertScaleAbs: saturate(round(|a * x + b|)); the clip keeps a * x + b in [0, 255]
    a, b = (-255.0 * alpha, 255.0 * (1.0 - beta)) if opts.invert else (255.0 * alpha, 255.0 * beta)
    levels = np.empty(d.shape, np.uint8)
    clipped = np.empty((min(DISPLAY_STRIP, d.shape[0]),) + d.shape[1:], np.float32)
    for r in range(0, d.shape[0], DISPLAY_STRIP):  # strips: no float copy of a whole 12 MP map
        n = min(DISPLAY_STRIP, d.shape[0] - r)
        np.clip(d[r:r + n], d_lo, d_hi, out=clipped[:n])
        cv2.convertScaleAbs(clipped[:n], dst=levels[r:r + n], alpha=a, beta=b)
    return levels


# 6. colorize ----------------------------------------------------------------------------------------

_CV2_MAPS = {
    "inferno": cv2.COLORMAP_INFERNO, "magma": cv2.COLORMAP_MAGMA, "plasma": cv2.COLORMAP_PLASMA,
    "viridis": cv2.COLORMAP_VIRIDIS, "cividis": cv2.COLORMAP_CIVIDIS, "turbo": cv2.COLORMAP_TURBO,
    "jet": cv2.COLORMAP_JET, "bone": cv2.COLORMAP_BONE, "hot": cv2.COLORMAP_HOT,
}


def _build_lut(name: str) -> np.ndarray:
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    if name == "gray":
        lut = np.repeat(ramp, 3, axis=1)
    else:
        lut = np.ascontiguousarray(cv2.applyColorMap(ramp, _CV2_MAPS[name]).reshape(256, 3)[:, ::-1])
    lut.flags.writeable = False  # shared by every request
    return lut


_LUTS = {name: _build_lut(name) for name in COLORMAPS}  # built once at import, not per request


def colormap_lut(name: str) -> np.ndarray:
    """The colormap as a read-only ``(256, 3)`` uint8 RGB table."""
    if name not in _LUTS:
        raise ValueError(f"unknown colormap {name!r}")
    return _LUTS[name]


def to_uint8(v: np.ndarray) -> np.ndarray:
    """``(H, W)`` float in [0, 1] -> ``(H, W)`` uint8, rounded (one OpenCV pass)."""
    return cv2.convertScaleAbs(np.asarray(v, np.float32), alpha=255.0)


def colorize(v: np.ndarray, name: str = "inferno") -> np.ndarray:
    """``(H, W)`` display levels (uint8) or values (float in [0, 1]) -> ``(H, W, 3)`` uint8 RGB through
    the named colormap."""
    levels = v if v.dtype == np.uint8 else to_uint8(v)
    return cv2.applyColorMap(levels, colormap_lut(name).reshape(256, 1, 3))


# 7. views -------------------------------------------------------------------------------------------

def overlay(photo: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend ``(H, W, 3)`` uint8 heatmap over the photo: ``alpha * heat + (1 - alpha) * photo``."""
    return cv2.addWeighted(heat, alpha, photo, 1.0 - alpha, 0.0)


def shrink(img: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """``(H, W, ...)`` -> the same with its longer side at most ``max_side`` (area-averaged), for
    on-screen previews; unchanged when already small enough or ``max_side`` is None."""
    height, width = img.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return img
    h, w = _fit(width, height, max_side)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def iter_views(photo: np.ndarray, depth: np.ndarray, opts: Options, views: Sequence[str] = VIEWS,
               reuse: bool = True) -> Iterator[Tuple[str, np.ndarray]]:
    """The asked-for views of one depth map, one at a time and in the asked order: heatmap and overlay
    ``(H, W, 3)``, gray ``(H, W)``, uint8. With ``reuse``, an overlay asked for after the heatmap (or
    without it) is blended into the heatmap's array: encode each view before asking for the next, and at
    12 MP one colour view (36 MB) is held instead of two."""
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)}")
    if not views:
        return
    levels = display(depth, opts)
    heat: Optional[np.ndarray] = None
    for i, view in enumerate(views):
        if view == "gray":
            yield view, levels
            continue
        if heat is None:
            heat = colorize(levels, opts.colormap)
        if view == "heatmap":
            yield view, heat
        elif reuse and "heatmap" not in views[i + 1:]:
            yield view, cv2.addWeighted(heat, opts.alpha, photo, 1.0 - opts.alpha, 0.0, dst=heat)
        else:
            yield view, overlay(photo, heat, opts.alpha)


def render_views(photo: np.ndarray, depth: np.ndarray, opts: Options,
                 views: Sequence[str] = VIEWS) -> Dict[str, np.ndarray]:
    """The asked-for views of one depth map, all at once: heatmap and overlay ``(H, W, 3)``, gray
    ``(H, W)``, uint8."""
    return dict(iter_views(photo, depth, opts, views, reuse=False))


# 8. encode ------------------------------------------------------------------------------------------

# PNG row filters: depth views are smooth, so plain deflate of the raw rows is smallest and fastest;
# photographic ones (the overlay, the photo) compress far better predicted from the row above
# (PNG filter 2, "up"). Both measured on a 12 MP photo (docs/engines-and-speed.md, "Speed").
PNG_UP_VIEWS = ("overlay", "photo")
PNG_STRIP = 256  # rows filtered and compressed at a time: no full-size copy of the image
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def encode_png(img: np.ndarray, view: str = "heatmap", level: int = 1) -> bytes:
    """``(H, W)`` gray or ``(H, W, 3)`` RGB uint8 -> PNG bytes, lossless, with the row filter that suits
    ``view`` (heatmap, overlay, gray or photo). Deflate is ISA-L's (``isal``) at ``level`` 0-3: at 12 MP
    4-10x faster than OpenCV's PNG at zlib level 1 for files within 10 % of its size, and written a strip
    of rows at a time straight from the RGB array (OpenCV needed a full-size BGR copy first)."""
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"encode_png takes (H, W) or (H, W, 3) uint8, not {img.shape} {img.dtype}")
    height, width = img.shape[:2]
    channels = 1 if img.ndim == 2 else 3
    rows = np.ascontiguousarray(img).reshape(height, width * channels)
    up = view in PNG_UP_VIEWS
    strip = np.empty((min(PNG_STRIP, height), 1 + width * channels), np.uint8)
    strip[:, 0] = 2 if up else 0  # each row's filter type byte
    deflate = isal_zlib.compressobj(level)
    idat = []
    for r in range(0, height, PNG_STRIP):
        n = min(PNG_STRIP, height - r)
        out = strip[:n, 1:]
        if up:  # each byte minus the one above it, modulo 256 (uint8 arithmetic wraps)
            if r == 0:
                out[0] = rows[0]
            else:
                np.subtract(rows[r], rows[r - 1], out=out[0])
            np.subtract(rows[r + 1:r + n], rows[r:r + n - 1], out=out[1:])
        else:
            out[:] = rows[r:r + n]
        idat.append(deflate.compress(strip[:n]))
    idat.append(deflate.flush())
    size = sum(len(part) for part in idat)
    crc = zlib.crc32(b"IDAT")
    for part in idat:
        crc = zlib.crc32(part, crc)
    color_type = 0 if channels == 1 else 2  # gray or RGB, 8 bits each
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
    return b"".join([PNG_SIGNATURE, header, struct.pack(">I", size), b"IDAT", *idat, struct.pack(">I", crc),
                     _png_chunk(b"IEND", b"")])


JPEG_QUALITY = 90


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """``(H, W, 3)`` RGB uint8 -> JPEG bytes (libjpeg-turbo through ``simplejpeg``, 4:2:0), lossy: for
    colour views only. Straight from the RGB array, no copy."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality, "RGB", "420")


# format -> MIME type. PNG is lossless; JPEG is lossy and much smaller and faster at 12 MP
IMAGE_FORMATS: Dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg"}
EXTENSIONS: Dict[str, str] = {"png": "png", "jpeg": "jpg"}


def view_format(view: str, fmt: str) -> str:
    """The format ``view`` is encoded in when ``fmt`` is asked for: gray stays PNG, lossless, whatever is
    asked (its levels are the depth's data; JPEG would change them)."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}")
    return "png" if view == "gray" else fmt


def encode(img: np.ndarray, view: str, fmt: str = "png") -> bytes:
    """A view (heatmap, overlay, gray or photo) -> the bytes of ``view_format(view, fmt)``."""
    if view_format(view, fmt) == "jpeg":
        return encode_jpeg(img)
    return encode_png(img, view)


# the whole request ------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """A photo, the network's low-resolution output and the raw depth at the photo's (working) size,
    plus stage timings in ms."""

    photo: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32 relative inverse depth, larger = nearer
    timings_ms: Dict[str, float] = field(default_factory=dict)
    pred: Optional[np.ndarray] = None  # (h, w) float32, the network output (flip-averaged if asked)
    pad_box: Optional[PadBox] = None


def full_depth(pred: np.ndarray, photo: np.ndarray, pad_box: Optional[PadBox], opts: Options) -> np.ndarray:
    """Stages 4 and 4b: network output ``(h, w)`` -> raw depth at the photo's size ``(H, W)`` float32."""
    depth = upsample(pred, photo.shape[:2], pad_box, spec(opts.model).upsample)
    # photo pixels per network pixel (with padding, the network saw the padded square)
    extent = pad_box[2] if pad_box is not None else photo.shape[1]
    scale = extent / pred.shape[1]
    return refine_edges(depth, photo, scale, opts.upsample, **opts.upsample_params())


def predict(data: bytes, model: Model, opts: Options, max_pixels: int = DEFAULT_MAX_PIXELS,
            max_side: int = DEFAULT_MAX_SIDE) -> Prediction:
    """Image bytes -> photo and raw depth: decode, preprocess, infer, upsample (and refine)."""
    t0 = time.perf_counter()
    photo = decode(data, max_pixels, max_side)
    if opts.square == "crop":
        photo = np.ascontiguousarray(square_crop(photo))
    t1 = time.perf_counter()
    x, pad_box = preprocess(photo, opts.size, opts.square == "pad", spec(opts.model))
    t2 = time.perf_counter()
    pred = infer(x, model, opts.flip)
    t3 = time.perf_counter()
    depth = full_depth(pred, photo, pad_box, opts)
    t4 = time.perf_counter()
    ms = lambda a, b: round((b - a) * 1000.0, 2)  # noqa: E731
    return Prediction(photo, depth, {"decode": ms(t0, t1), "preprocess": ms(t1, t2),
                                     "infer": ms(t2, t3), "upsample": ms(t3, t4)}, pred, pad_box)
