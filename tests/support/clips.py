"""Short video clips the tests make themselves, written with the same encoder libraries a user's camera
or browser output goes through (PyAV: libx264, libvpx-vp9, mpeg4, gif)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple

import av
import numpy as np
from PIL import Image

CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".ts": "libx264", ".webm": "libvpx-vp9",
          ".avi": "mpeg4", ".gif": "gif"}


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: float = 10, faststart: bool = False,
               rotation: Optional[int] = None, codec: Optional[str] = None) -> Path:
    """RGB uint8 frames -> a video file; the codec follows the suffix unless given. ``rotation``: a
    display matrix that turns the frames counter-clockwise by that many degrees (what phones write)."""
    codec = codec or CODECS[path.suffix]
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = {"gif": "rgb8", "mjpeg": "yuvj420p"}.get(codec, "yuv420p")
                if codec == "libx265":  # quiet: it prints its settings on stderr otherwise
                    stream.options = {"x265-params": "log-level=error"}
                if codec == "libx264":
                    stream.options = {"crf": "12", "preset": "veryfast"}
                if rotation:
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        assert stream is not None, "no frames"
        for packet in stream.encode():
            container.mux(packet)
    return path


def zero_frames(data: bytes) -> bytes:
    """A faststart MP4 (index first) with every frame's bytes zeroed and the index intact."""
    damaged = bytearray(data)
    start = damaged.index(b"mdat") + 4
    damaged[start:] = bytes(len(damaged) - start)
    return bytes(damaged)


def moving_scene(n: int = 12, width: int = 96, height: int = 64) -> Iterator[np.ndarray]:
    """A bright square sliding right over a horizontal gradient."""
    base = np.zeros((height, width, 3), np.uint8)
    base[:] = np.linspace(30, 140, width, dtype=np.uint8)[None, :, None]
    side = height // 2
    for i in range(n):
        frame = base.copy()
        left = (4 + 3 * i) % (width - side)
        frame[height // 4: height // 4 + side, left:left + side] = (230, 200, 60)
        yield frame


def static_noisy(photo: np.ndarray, n: int, sigma: float, seed: int = 0) -> Iterator[np.ndarray]:
    """A static camera: the same photo every frame, with fresh sensor-like noise each frame."""
    rng = np.random.default_rng(seed)
    base = photo.astype(np.float32)
    for _ in range(n):
        yield np.clip(base + rng.normal(0.0, sigma, base.shape), 0, 255).astype(np.uint8)


def pan(photo: np.ndarray, n: int, width: int, height: int) -> Iterator[np.ndarray]:
    """A camera panning left to right across ``photo`` (a window of ``width`` x ``height``)."""
    h, w = photo.shape[:2]
    for i in range(n):
        left = round(i * (w - width) / max(1, n - 1))
        top = (h - height) // 2
        yield np.ascontiguousarray(photo[top:top + height, left:left + width])


def load_photo(path: Path, width: Optional[int] = None) -> np.ndarray:
    """A sample photo as RGB uint8, optionally resized to ``width`` (even sides, for 4:2:0 video)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if width:
            height = round(im.height * width / im.width) // 2 * 2
            im = im.resize((width, height), Image.LANCZOS)
        return np.asarray(im)


def read_video(path: Path) -> List[np.ndarray]:
    """Every frame of a video as RGB uint8 (a test's clips are small)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def stream_info(path: Path) -> dict:
    """Container, codec, pixel format, size, frame count and rate of a video file's first stream."""
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        frames = sum(1 for _ in container.decode(s))
        return {"format": container.format.name, "codec": s.codec_context.name,
                "pix_fmt": s.codec_context.pix_fmt, "width": s.codec_context.width,
                "height": s.codec_context.height, "frames": frames, "fps": float(s.average_rate or 0),
                "profile": s.codec_context.profile}


def size_change_ts(path: Path, small: Tuple[int, int, int], large: Tuple[int, int, int]) -> Path:
    """An MPEG-TS clip whose H.264 stream changes size midway: ``small`` = (frames, width, height) first,
    then ``large``. Its headers (all that ``probe`` reads) show only the first size; a TS stream may
    carry a new one at any key frame, as a broadcast does."""
    first = write_clip(path.with_suffix(".a.ts"), moving_scene(*small), codec="libx264")
    then = write_clip(path.with_suffix(".b.ts"), moving_scene(*large), codec="libx264")
    path.write_bytes(first.read_bytes() + then.read_bytes())
    first.unlink()
    then.unlink()
    return path


def noise_clip(path: Path, n: int, width: int, height: int, seed: int = 0) -> Path:
    """Frames of random pixels: what compresses worst, so its depth outputs are as large as they come."""
    rng = np.random.default_rng(seed)
    return write_clip(path, (rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)))
