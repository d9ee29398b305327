"""Image bytes made by hand: a PIL image saved to bytes, PNG chunks, a decompression bomb's first bytes,
a truncated file."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Optional, Tuple

from PIL import Image


def photo_size(photo) -> Tuple[int, int]:
    """An image's (width, height), from its bytes, its file or a file object."""
    with Image.open(io.BytesIO(photo) if isinstance(photo, bytes) else photo) as im:
        return im.size


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    """A PIL image saved in ``fmt`` (PIL's name: "PNG", "JPEG", ...), as bytes."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def chunk(kind: bytes, body: bytes, crc: Optional[int] = None) -> bytes:
    """A PNG chunk; ``crc`` replaces the right checksum."""
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """An RGB PNG that declares ``width`` x ``height`` but carries (almost) no pixels: a decompression
    bomb's first bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def truncated(data: bytes) -> bytes:
    """The first half of a file (of a video: the index, written last, is cut off)."""
    return data[: len(data) // 2]
