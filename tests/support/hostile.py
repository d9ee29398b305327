"""Hostile and odd image files, generated here (nothing large is committed), each with the answer a user
should get: the API's in tests/unit/test_hostile.py, a real server's in tests/integration/test_resilience.py
(which also checks the worker survives them)."""

from __future__ import annotations

import struct
import zlib
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from PIL import Image

from support.images import chunk, pil_bytes


def gradient(w: int, h: int, mode: str = "RGB") -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1).astype(np.uint8)
    return Image.fromarray(rgb).convert(mode)


def raw_png(width: int, height: int, *, level: int = 9, ihdr_crc: Optional[int] = None,
            rows: bool = True) -> bytes:
    """A grayscale PNG of zeros written with zlib directly: 64 MP compresses to ~60 KB, a decompression
    bomb in all but name. ``rows=False`` declares the size but carries (almost) no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * ((width + 1) * height), level) if rows else zlib.compress(b"\0" * 16)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr, ihdr_crc) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def jpeg_header_only(width: int, height: int) -> bytes:
    """SOI + a baseline SOF0 that declares ``width`` x ``height``, and nothing else."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    return pil_bytes(gradient(40, 20), "JPEG", exif=exif.tobytes())


def corrupt_exif() -> bytes:
    jpeg = pil_bytes(gradient(40, 30), "JPEG")
    junk = b"Exif\0\0" + b"MM\0*\0\0\0\x08" + b"\xff" * 40  # a TIFF header that points at garbage
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + jpeg[2:]


def animated(fmt: str) -> bytes:
    frames = [gradient(32, 24).rotate(a) for a in (0, 90, 180)]
    return pil_bytes(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def cmyk_jpeg() -> bytes:
    return pil_bytes(gradient(48, 32, "CMYK"), "JPEG")


def sixteen_bit() -> bytes:
    return pil_bytes(Image.fromarray((np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)), "PNG")


def multipage_tiff() -> bytes:
    return pil_bytes(gradient(40, 30), "TIFF", save_all=True, append_images=[gradient(20, 10)])


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'

# name -> (bytes maker, expected status, expected error code or the (width, height) of the result)
Case = Tuple[Callable[[], bytes], int, object]
CORPUS: Dict[str, Case] = {
    "empty": (lambda: b"", 400, "empty"),
    "text as jpg": (lambda: b"just some words\n" * 20, 415, "not_image"),
    "html as jpg": (lambda: b"<!doctype html><html><body><img src=x></body></html>", 415, "not_image"),
    "pdf as jpg": (lambda: b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", 415, "not_image"),
    "zip as jpg": (lambda: b"PK\x03\x04\x14\0\0\0\0\0" + b"\0" * 60, 415, "not_image"),
    "svg": (lambda: SVG, 415, "not_image"),
    "truncated jpeg": (lambda: pil_bytes(gradient(64, 48), "JPEG")[:300], 400, "corrupt"),
    "truncated png": (lambda: pil_bytes(gradient(64, 48), "PNG")[:100], 400, "corrupt"),
    "png with a bad crc": (lambda: raw_png(16, 16, ihdr_crc=0xDEADBEEF), 400, "corrupt"),
    "png declaring 50000x50000": (lambda: raw_png(50000, 50000, rows=False), 413, "too_large"),
    "jpeg declaring 65000x65000": (lambda: jpeg_header_only(65000, 65000), 413, "too_large"),
    "64 MP of zeros in 60 KB": (lambda: raw_png(8000, 8000), 413, "too_large"),
    "38 MP of zeros, under the limit": (lambda: raw_png(6400, 6000), 200, (4096, 3840)),
    "1x1": (lambda: pil_bytes(gradient(1, 1), "PNG"), 200, (1, 1)),
    "1xN": (lambda: pil_bytes(gradient(1, 300), "PNG"), 200, (1, 300)),
    "10000x50": (lambda: pil_bytes(gradient(10000, 50), "PNG"), 200, (4096, 20)),
    "16-bit grayscale": (sixteen_bit, 200, (40, 30)),
    "palette": (lambda: pil_bytes(gradient(40, 30, "P"), "PNG"), 200, (40, 30)),
    "grayscale + alpha": (lambda: pil_bytes(gradient(40, 30, "LA"), "PNG"), 200, (40, 30)),
    "cmyk jpeg": (cmyk_jpeg, 200, (48, 32)),
    "exif-rotated jpeg": (exif_rotated, 200, (20, 40)),
    "corrupt exif": (corrupt_exif, 200, (40, 30)),
    "animated gif": (lambda: animated("GIF"), 200, (32, 24)),
    "animated webp": (lambda: animated("WEBP"), 200, (32, 24)),
    "multi-page tiff": (multipage_tiff, 200, (40, 30)),
}
