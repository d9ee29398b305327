"""Video depth: plain functions and small classes on numpy arrays, one stage each, frames streamed one at
a time so memory does not grow with the clip's length.

probe -> read frames -> per-frame depth (the image pipeline's preprocess/infer) -> EMA -> bilateral
-> upsample (and refine) -> normalise (per frame, or one robust range for the clip) -> render -> encode
(H.264 MP4, optionally a zip of 16-bit depth PNGs)

With ``norm="clip"`` the clip is read twice: the first pass runs the network, spools each frame's
filtered network output (about 160 KB at 256 px) to a file and samples the values for the clip's range;
the second decodes the frames again and renders from the spool, so the network runs once per frame.

Video files are decoded and encoded in-process by PyAV (FFmpeg's libraries; its wheels carry libx264).
Nothing here imports Flask or torch: the model is the same callable the image pipeline takes.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Callable, Dict, Iterator, Optional, Tuple, Type

import av
import av.error
import cv2
import numpy as np

from .exports import to_uint16
from ..depth.registry import spec
from ..options import Options, VideoOptions
from .stereo import stereo
from .pipeline import (Model, PadBox, colorize, enhance, full_depth, infer, log_depth, on_white, overlay,
                       preprocess, square_crop, strided_sample, to_uint8)

log = logging.getLogger(__name__)

DEFAULT_FPS = Fraction(25)
CRF = 18  # x264 quality: visually lossless for smooth heatmaps at a few hundred KB per second of 720p
PRESET = "veryfast"  # encoding costs a fraction of inference at this preset; slower ones barely shrink it
RANGE_SAMPLE_FRAME = 4096  # values each frame contributes to the clip-range sample
RANGE_SAMPLE_CAPACITY = 262_144  # the sample's fixed size (1 MB): a uniform sample of any clip length
BILATERAL_SAMPLE = 50_000  # values of a network output its robust range is estimated from

Progress = Callable[[int, int, int, int], None]  # (pass number, passes, frames done, frames total)


class VideoError(ValueError):
    """An upload that is not a usable video. ``code`` is stable: empty, not_video, corrupt, too_large,
    too_long."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What a server accepts; None = no limit (the command line)."""

    max_seconds: Optional[float] = None
    max_frames: Optional[int] = None
    max_pixels: Optional[int] = None


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns from a file's headers and packets, without decoding."""

    width: int  # as stored (before rotation)
    height: int
    fps: Fraction
    frames: int  # video packets present = frames, for every codec a browser or phone writes
    duration_s: float
    format: str
    codec: str
    declared_frames: int = 0  # what the container's index says, if it says (more than present: truncated)

    def as_dict(self) -> Dict[str, object]:
        return {"width": self.width, "height": self.height, "fps": round(float(self.fps), 3),
                "frames": self.frames, "duration_s": round(self.duration_s, 3), "format": self.format,
                "codec": self.codec}


@dataclass
class VideoResult:
    """What ``process_video`` wrote, and how it went."""

    video: Path
    depth_zip: Optional[Path]
    frames: int  # frames in the output
    fps: float
    width: int  # of the output video
    height: int
    warning: Optional[str] = None  # decoding stopped early: the result covers the frames before it
    value_range: Optional[Tuple[float, float]] = None  # the clip's range (norm="clip")
    seconds: Dict[str, float] = field(default_factory=dict)  # time per stage, summed over frames


# 1. probe -------------------------------------------------------------------------------------------

def _looks_like_video(head: bytes) -> bool:
    """The first bytes of an MP4/MOV, Matroska/WebM, AVI or GIF file."""
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
            or head.startswith(b"\x1a\x45\xdf\xa3")  # EBML: Matroska, WebM
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
            or head[:6] in (b"GIF87a", b"GIF89a"))


def _open(path: Path) -> "av.container.InputContainer":
    try:
        return av.open(str(path), "r")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        with open(path, "rb") as f:
            head = f.read(12)
        if _looks_like_video(head):  # a known container whose structure does not parse: damaged
            raise VideoError("corrupt", "The video is truncated or damaged: its structure cannot be read "
                             f"({_why(exc)}).") from None
        raise VideoError("not_video", "The file is not a video in a supported format (MP4, WebM, MOV, "
                         f"AVI, MKV or animated GIF) ({_why(exc)}).") from None


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip() or exc.__class__.__name__


def probe(path: Path, limits: Limits = Limits()) -> VideoInfo:
    """Size, frame rate, frame count and duration of the first video stream, checked against ``limits``.
    Reads every packet (no decoding: milliseconds for a minute of video) to count frames exactly."""
    if path.stat().st_size == 0:
        raise VideoError("empty", "The file is empty.")
    with _open(path) as container:
        fmt = container.format.name
        if not container.streams.video:
            raise VideoError("not_video", "The file has no video stream.")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        # FFmpeg opens a PNG or JPEG file as a one-frame "video" through an image demuxer: send those to
        # the photo route. The codec alone does not tell: Motion-JPEG in AVI or MOV is a video.
        if fmt.endswith("_pipe") or fmt == "image2":
            raise VideoError("not_video", "This is a still image, not a video: upload it as a photo.")
        width, height = stream.codec_context.width, stream.codec_context.height
        if width < 1 or height < 1:
            raise VideoError("corrupt", "The video's frame size is unreadable; the file may be damaged.")
        if limits.max_pixels and width * height > limits.max_pixels:
            raise VideoError("too_large", f"The video is {width}x{height}; the limit is "
                             f"{limits.max_pixels / 1e6:.1f} megapixels per frame.")
        declared = _declared_duration(container, stream)
        if limits.max_seconds and declared is not None and declared > limits.max_seconds + 0.5:
            raise VideoError("too_long", f"The video lasts {declared:.1f} s; the limit is "
                             f"{limits.max_seconds:g} s.")
        frames = 0
        try:
            for packet in container.demux(stream):
                if packet.size:  # the demuxer ends with an empty flush packet
                    frames += 1
                    if limits.max_frames and frames > limits.max_frames:
                        raise VideoError("too_long", f"The video has more than {limits.max_frames} frames; "
                                         f"the limit is {limits.max_frames}.")
        except av.error.FFmpegError:
            pass  # truncated or damaged after some packets: count what is there, decoding will tell
        if frames == 0:
            raise VideoError("corrupt", "The video has no frames; the file may be truncated or damaged.")
        fps = _frame_rate(stream, frames, declared)
        duration = declared if declared else frames / float(fps)
        if limits.max_seconds and duration > limits.max_seconds + 0.5:
            raise VideoError("too_long", f"The video lasts {duration:.1f} s; the limit is "
                             f"{limits.max_seconds:g} s.")
    return VideoInfo(width, height, fps, frames, duration, fmt, codec, max(0, stream.frames or 0))


def _declared_duration(container: "av.container.InputContainer", stream: "av.VideoStream") -> Optional[float]:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _frame_rate(stream: "av.VideoStream", frames: int, duration: Optional[float]) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate and 0 < rate <= 240:
            return Fraction(rate).limit_denominator(1001)
    if duration and duration > 0:
        return Fraction(frames / duration).limit_denominator(1001)
    return DEFAULT_FPS


# 2. read frames -------------------------------------------------------------------------------------

def output_size(width: int, height: int, rotation: int, max_side: int) -> Tuple[int, int]:
    """(width, height) of frames as shown (after rotation), longer side <= ``max_side``, both even:
    H.264 in 4:2:0, the only kind every browser plays, needs even sides."""
    if rotation % 180:
        width, height = height, width
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def decoder_max_pixels(limit: int) -> int:
    """FFmpeg's own bound for a limit of ``limit`` pixels per frame. Its decoders check the picture they
    allocate, padded to their alignment and (MPEG-4, H.263) with edges on every side: 64x48 is checked
    as 96x80. Twice the limit and a margin let every frame within the limit through; a picture far
    over it is refused before its memory is taken, and each decoded frame is then held to the limit
    exactly."""
    return 2 * limit + 65536


class FrameReader:
    """Decoded frames as ``(H, W, 3)`` uint8 RGB, rotated as the file says, scaled to at most ``max_side``
    and even sides, every ``stride``-th frame, at most ``limit``. A decoding error ends the frames early:
    ``stopped`` then says why (the frames before it are still good). ``limits`` hold for every decoded
    frame, whatever the headers said: its pixels (FFmpeg's decoder is told too, so it never allocates a
    larger picture), the frames so far and their duration at ``fps``; past one, ``VideoError``."""

    def __init__(self, path: Path, max_side: int, stride: int = 1, limit: Optional[int] = None,
                 limits: Limits = Limits(), fps: Optional[Fraction] = None) -> None:
        self.path, self.max_side, self.stride, self.limit = path, max_side, stride, limit
        self.limits, self.fps = limits, fps
        self.size: Optional[Tuple[int, int]] = None  # (width, height) out, from the first frame
        self.read = 0  # frames yielded
        self.stopped: Optional[str] = None
        self.seconds = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        index = 0
        with _open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # FFmpeg's own frame threads; output order is unaffected
            if self.limits.max_pixels:
                stream.codec_context.options = {"max_pixels": str(decoder_max_pixels(self.limits.max_pixels))}
            frames = container.decode(stream)
            while self.limit is None or self.read < self.limit:
                t0 = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.error.FFmpegError as exc:
                    context = stream.codec_context  # FFmpeg refused a picture over max_pixels: its size
                    self._check_pixels(context.width, context.height)
                    self.stopped = (f"decoding stopped after frame {index} ({_why(exc)}); the file may be "
                                    "truncated or damaged")
                    log.info("%s: %s", self.path.name, self.stopped)
                    break
                self._check(frame, index)
                if index % self.stride == 0:
                    rgb = self._rgb(frame)
                    self.seconds += time.perf_counter() - t0
                    self.read += 1
                    yield rgb
                else:
                    self.seconds += time.perf_counter() - t0
                index += 1

    def _check_pixels(self, width: int, height: int) -> None:
        limit = self.limits.max_pixels
        if limit and width * height > limit:
            raise VideoError("too_large", f"A frame of the video is {width}x{height}; the limit is "
                             f"{limit / 1e6:.1f} megapixels per frame.")

    def _check(self, frame: "av.VideoFrame", index: int) -> None:
        """``frame``, the ``index``-th decoded, against the limits."""
        self._check_pixels(frame.width, frame.height)
        most, seconds = self.limits.max_frames, self.limits.max_seconds
        if most and index >= most:
            raise VideoError("too_long", f"The video has more than {most} frames; the limit is {most}.")
        if seconds and self.fps and (index + 1) / self.fps > seconds + 0.5:
            raise VideoError("too_long", f"The video lasts more than {float((index + 1) / self.fps):.1f} s; "
                             f"the limit is {seconds:g} s.")

    def _rgb(self, frame: "av.VideoFrame") -> np.ndarray:
        """A decoded frame -> ``(H, W, 3)`` uint8 RGB at the output size, upright."""
        rotation = int(round((frame.rotation or 0) / 90.0)) * 90
        if self.size is None:
            self.size = output_size(frame.width, frame.height, rotation, self.max_side)
        w, h = self.size if rotation % 180 == 0 else self.size[::-1]
        has_alpha = frame.format.has_palette or any(c.is_alpha for c in frame.format.components)
        if has_alpha:  # GIFs: transparent pixels on white, as the photo pipeline does
            rgba = frame.reformat(width=w, height=h, format="rgba", interpolation="AREA").to_ndarray()
            rgb = on_white(rgba)
        else:
            rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
        if rotation:  # the display matrix turns the frame counter-clockwise; so does np.rot90
            rgb = np.rot90(rgb, rotation // 90)
        return np.ascontiguousarray(rgb)


# 3. depth of one frame and its temporal / spatial filtering -----------------------------------------

def frame_prediction(rgb: np.ndarray, model: Model,
                     opts: Options) -> Tuple[np.ndarray, np.ndarray, Optional[PadBox]]:
    """One frame -> (the frame as the depth sees it, network output ``(h, w)`` float32, pad box):
    the image pipeline's stages 2-3 with the same options."""
    photo = np.ascontiguousarray(square_crop(rgb)) if opts.square == "crop" else rgb
    x, pad_box = preprocess(photo, opts.size, opts.square == "pad", spec(opts.model))
    return photo, infer(x, model, opts.flip), pad_box


class Ema:
    """Exponential moving average over frames: ``fused = alpha * current + (1 - alpha) * fused``.
    Applied to the network output, before upsampling: bicubic upsampling is linear, so this equals
    averaging the full-size depths at a fraction of the cost."""

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.state: Optional[np.ndarray] = None

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        if self.state is None or self.state.shape != pred.shape:
            self.state = pred.astype(np.float32, copy=True)
        else:
            self.state *= 1.0 - self.alpha
            self.state += self.alpha * pred
        return self.state.copy()


def bilateral(pred: np.ndarray, diameter: int = 5, sigma_color: float = 0.1,
              sigma_space: float = 2.0) -> np.ndarray:
    """Edge-preserving smoothing of a depth map ``(h, w)`` float32 (OpenCV's bilateral filter).
    ``sigma_color`` is a fraction of the map's robust range (1st-99th percentile), so the setting means
    the same whatever the depth's unknown scale; steps well above it stay sharp."""
    pred = np.ascontiguousarray(pred, dtype=np.float32)
    lo, hi = np.percentile(strided_sample(pred, BILATERAL_SAMPLE), [1.0, 99.0])
    span = float(hi - lo)
    if not span > 0 or not math.isfinite(span):
        return pred
    return cv2.bilateralFilter(pred, diameter, sigma_color * span, sigma_space)


class RangeSampler:
    """A fixed-size uniform random sample of the values of every frame (each frame contributes equally),
    and the exact minimum and maximum: the clip's robust range in constant memory."""

    def __init__(self, capacity: int = RANGE_SAMPLE_CAPACITY, per_frame: int = RANGE_SAMPLE_FRAME,
                 seed: int = 0) -> None:
        self.capacity, self.per_frame = capacity, per_frame
        self.rng = np.random.default_rng(seed)
        self.values = np.empty(0, np.float32)
        self.keys = np.empty(0, np.float64)
        self.lo, self.hi = math.inf, -math.inf

    def add(self, values: np.ndarray) -> None:
        """Takes a strided sample of one frame's ``(H, W)`` float32 values (NaN/inf ignored)."""
        flat = values.ravel()
        sample = strided_sample(flat, self.per_frame)
        sample = sample[np.isfinite(sample)].astype(np.float32)
        if not sample.size:
            return
        finite = flat[np.isfinite(flat)]
        self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))
        # reservoir by random keys: keeping the smallest keys keeps a uniform sample of everything seen
        self.values = np.concatenate([self.values, sample])
        self.keys = np.concatenate([self.keys, self.rng.random(sample.size)])
        if self.values.size > self.capacity:
            keep = np.argpartition(self.keys, self.capacity)[: self.capacity]
            self.values, self.keys = self.values[keep], self.keys[keep]

    def range(self, clip: float = 0.0) -> Tuple[float, float]:
        """The ``clip`` and ``100 - clip`` percentiles (0: the exact min and max)."""
        if not self.values.size:
            return 0.0, 0.0
        if clip <= 0:
            return self.lo, self.hi
        lo, hi = np.percentile(self.values, [clip, 100.0 - clip])
        return float(lo), float(hi)


def display_values(depth: np.ndarray, opts: Options) -> np.ndarray:
    """What ``enhance`` normalises: the depth, or its logarithm with ``log``."""
    return log_depth(depth) if opts.log else depth


# 4. render and encode ---------------------------------------------------------------------------------

def render_frame(photo: np.ndarray, depth: np.ndarray, opts: Options, view: str,
                 value_range: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """One output frame ``(H, W', 3)`` uint8 RGB: heatmap, overlay, gray, or side (frame | heatmap)."""
    v = enhance(depth, opts, value_range)
    if view == "gray":
        return cv2.cvtColor(to_uint8(v), cv2.COLOR_GRAY2RGB)
    heat = colorize(v, opts.colormap)
    if view == "heatmap":
        return heat
    if view == "overlay":
        return overlay(photo, heat, opts.alpha)
    if view == "side":
        return np.hstack([photo, heat])
    raise ValueError(f"unknown video view {view!r}")


class Mp4Writer:
    """H.264 (libx264, yuv420p, ``+faststart``) in MP4: what every browser plays, and what a partial
    download can start playing."""

    def __init__(self, path: Path, width: int, height: int, fps: Fraction) -> None:
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(CRF), "preset": PRESET}
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        try:
            if kind is None and self.frames:
                for packet in self.stream.encode():  # flush the encoder's look-ahead
                    self.container.mux(packet)
        finally:
            self.container.close()


class DepthZip:
    """A zip of 16-bit grayscale PNGs, one per output frame (``depth_000000.png``…), plus
    ``frames.csv``: each frame's time and the raw relative inverse depth that 0 and 65535 stand for
    (``depth = lo + png / 65535 * (hi - lo)``). The CSV rows are spooled to ``workdir`` meanwhile."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.zip = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED)  # PNG is compressed already
        self.rows_path = workdir / (path.name + ".frames.csv")
        self.rows = open(self.rows_path, "w", newline="")
        self.writer = csv.writer(self.rows)
        self.writer.writerow(["frame", "time_s", "png", "lo", "hi"])

    def write(self, index: int, time_s: float, depth: np.ndarray, lo: float, hi: float) -> None:
        """Adds frame ``index``'s ``(H, W)`` float32 raw depth as a 16-bit PNG (``lo`` -> 0, ``hi`` ->
        65535) and its row of ``frames.csv``."""
        ok, png = cv2.imencode(".png", to_uint16(depth, lo, hi), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise RuntimeError("PNG encoding failed")
        name = f"depth_{index:06d}.png"
        self.zip.writestr(name, png.tobytes())
        self.writer.writerow([index, f"{time_s:.6f}", name, repr(float(lo)), repr(float(hi))])

    def __enter__(self) -> "DepthZip":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        # each step runs even when one before it failed (a full disk fails the flushes): no file stays open
        # and the rows' spool goes
        with ExitStack() as steps:
            steps.callback(self.rows_path.unlink, missing_ok=True)
            steps.callback(self.zip.close)
            self.rows.close()
            if kind is None:
                self.zip.write(self.rows_path, "frames.csv")


# 5. the whole clip ------------------------------------------------------------------------------------

@dataclass
class _FirstPass:
    """What the clip pass learned: frames decoded, why decoding stopped early, the display range, the
    exact raw range (for the zip), and the spooled arrays' shape and pad box."""

    frames: int
    warning: Optional[str]
    value_range: Tuple[float, float]
    raw_range: Tuple[float, float]
    pred_shape: Tuple[int, int]
    pad_box: Optional[PadBox]


class _Run:
    """The stages of one clip with their state (EMA, per-stage clock, progress)."""

    def __init__(self, model: Model, opts: Options, vopts: VideoOptions, progress: Optional[Progress],
                 passes: int, limits: Limits = Limits(), fps: Optional[Fraction] = None) -> None:
        self.model, self.opts, self.vopts, self.progress, self.passes = model, opts, vopts, progress, passes
        self.limits, self.fps = limits, fps
        self.ema = Ema(vopts.ema_alpha) if vopts.ema else None
        self.seconds: Dict[str, float] = {}
        self.t = time.perf_counter()

    def reader(self, src: Path, limit: Optional[int] = None) -> FrameReader:
        return FrameReader(src, self.vopts.out_side, self.vopts.stride, limit, self.limits, self.fps)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.t
        self.t = now

    def report(self, pass_no: int, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(pass_no, self.passes, done, max(done, total))
        self.t = time.perf_counter()  # time spent by the callback is nobody's stage

    def live(self, reader: FrameReader) -> Iterator[Tuple[np.ndarray, np.ndarray, Optional[PadBox]]]:
        """(frame, filtered network output, pad box) per frame, straight from the network."""
        self.t = time.perf_counter()
        for rgb in reader:
            self.lap("decode")
            photo, pred, pad_box = frame_prediction(rgb, self.model, self.opts)
            self.lap("infer")
            if self.ema is not None:
                pred = self.ema(pred)
            if self.vopts.bilateral:
                v = self.vopts
                pred = bilateral(pred, v.bilateral_d, v.bilateral_sigma_color, v.bilateral_sigma_space)
            self.lap("filter")
            yield photo, pred, pad_box

    def first_pass(self, src: Path, spool_path: Path, expected: int) -> _FirstPass:
        """Network and filters for every frame; their output to the spool; the clip's range sampled."""
        sampler = RangeSampler()
        raw_lo, raw_hi = math.inf, -math.inf
        shape: Tuple[int, int] = (0, 0)
        pad_box: Optional[PadBox] = None
        reader = self.reader(src)
        self.report(1, 0, expected)
        with open(spool_path, "wb") as spool:
            for i, (photo, pred, pad_box) in enumerate(self.live(reader)):
                spool.write(pred.tobytes())
                shape = pred.shape
                depth = full_depth(pred, photo, pad_box, self.opts)
                sampler.add(display_values(depth, self.opts))
                raw_lo, raw_hi = min(raw_lo, float(depth.min())), max(raw_hi, float(depth.max()))
                self.lap("range")
                self.report(1, i + 1, expected)
        if reader.read == 0:
            raise VideoError("corrupt", "No frame of the video could be decoded; the file is damaged or "
                             f"truncated ({reader.stopped or 'no frames'}).")
        return _FirstPass(reader.read, reader.stopped, sampler.range(self.opts.clip), (raw_lo, raw_hi),
                          shape, pad_box)

    def from_spool(self, src: Path, spool_path: Path,
                   first: _FirstPass) -> Iterator[Tuple[np.ndarray, np.ndarray, Optional[PadBox]]]:
        """The frames decoded again, each with its network output read back from the spool."""
        reader = self.reader(src, limit=first.frames)
        count = first.pred_shape[0] * first.pred_shape[1]
        with open(spool_path, "rb") as spool:
            self.t = time.perf_counter()
            for rgb in reader:
                photo = np.ascontiguousarray(square_crop(rgb)) if self.opts.square == "crop" else rgb
                pred = np.fromfile(spool, np.float32, count).reshape(first.pred_shape)
                self.lap("decode")
                yield photo, pred, first.pad_box
        if reader.read < first.frames:  # the same file decoded the same way twice: this is a bug
            raise RuntimeError(f"second pass decoded {reader.read} of {first.frames} frames")

    def render(self, depths: Iterator[Tuple[np.ndarray, np.ndarray, Optional[PadBox]]], out: Path,
               zip_path: Optional[Path], workdir: Path, fps: Fraction, total: int,
               value_range: Optional[Tuple[float, float]],
               raw_range: Optional[Tuple[float, float]]) -> Tuple[int, Tuple[int, int]]:
        """Upsample, render, encode (and zip) every frame; returns (frames written, (width, height))."""
        written, size = 0, (0, 0)
        with ExitStack() as stack:
            writer: Optional[Mp4Writer] = None
            depth_zip: Optional[DepthZip] = None
            for photo, pred, pad_box in depths:
                depth = full_depth(pred, photo, pad_box, self.opts)
                self.lap("upsample")
                if self.vopts.view == "stereo":
                    frame = stereo(photo, depth, self.vopts, raw_range)
                else:
                    frame = render_frame(photo, depth, self.opts, self.vopts.view, value_range)
                self.lap("render")
                if writer is None:
                    size = (frame.shape[1], frame.shape[0])
                    writer = stack.enter_context(Mp4Writer(out, size[0], size[1], fps))
                writer.write(frame)
                self.lap("encode")
                if zip_path is not None:
                    if depth_zip is None:
                        depth_zip = stack.enter_context(DepthZip(zip_path, workdir))
                    lo, hi = raw_range or (float(depth.min()), float(depth.max()))
                    depth_zip.write(written, written / float(fps), depth, lo, hi)
                    self.lap("zip")
                written += 1
                self.report(self.passes, written, total)
        return written, size


def process_video(src: Path, out: Path, model: Model, opts: Optional[Options] = None,
                  vopts: Optional[VideoOptions] = None, workdir: Optional[Path] = None,
                  zip_path: Optional[Path] = None, info: Optional[VideoInfo] = None,
                  limits: Limits = Limits(), progress: Optional[Progress] = None) -> VideoResult:
    """``src`` -> depth video at ``out`` (and with ``vopts.depth_zip``, the 16-bit PNGs at ``zip_path``,
    default ``out``'s name with ``.depth.zip``). ``workdir`` holds the clip pass's spool (default: beside
    ``out``). ``progress(pass, passes, done, total)`` is called after every frame; an exception it
    raises (a cancelled job) stops the work with every file closed. Raises ``VideoError`` for a file
    that is not a usable video."""
    opts, vopts = opts or Options(), vopts or VideoOptions()
    info = info or probe(src, limits)
    workdir = workdir or out.parent
    if vopts.depth_zip and zip_path is None:  # walk.mp4 or walk.depth.mp4 -> walk.depth.zip
        stem = out.stem[: -len(".depth")] if out.stem.endswith(".depth") else out.stem
        zip_path = out.with_name(stem + ".depth.zip")
    elif not vopts.depth_zip:
        zip_path = None
    fps = info.fps / vopts.stride
    expected = -(-info.frames // vopts.stride)  # ceil: frames 0, stride, 2 * stride, ...
    run = _Run(model, opts, vopts, progress, 2 if vopts.norm == "clip" else 1, limits, info.fps)
    spool_path = workdir / f"{out.name}.spool.f32"
    # written under a temporary name and renamed at the end: an interrupted run leaves no broken file
    part = out.with_name(out.name + ".part")
    zip_part = zip_path.with_name(zip_path.name + ".part") if zip_path is not None else None
    try:
        if vopts.norm == "clip":
            first = run.first_pass(src, spool_path, expected)
            depths = run.from_spool(src, spool_path, first)
            total, warning = first.frames, first.warning
            value_range, raw_range = first.value_range, first.raw_range
        else:
            reader = run.reader(src)
            depths = run.live(reader)
            total, value_range, raw_range = expected, None, None
        run.report(run.passes, 0, total)
        written, (width, height) = run.render(depths, part, zip_part, workdir, fps, total, value_range,
                                              raw_range)
        if vopts.norm == "frame":
            warning = reader.stopped
        if written == 0:
            raise VideoError("corrupt", "No frame of the video could be decoded; the file is damaged or "
                             f"truncated ({warning or 'no frames'}).")
        declared = -(-max(info.frames, info.declared_frames) // vopts.stride)
        if warning is None and written < declared:
            warning = (f"only {written} of {declared} frames could be decoded; the file may be truncated "
                       "or damaged")
        os.replace(part, out)
        if zip_part is not None and zip_path is not None:
            os.replace(zip_part, zip_path)
    finally:
        for path in (spool_path, part, zip_part):
            if path is not None:
                path.unlink(missing_ok=True)
    seconds = {k: round(v, 3) for k, v in run.seconds.items()}
    return VideoResult(out, zip_path, written, float(fps), width, height, warning, value_range, seconds)
