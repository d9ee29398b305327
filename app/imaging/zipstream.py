"""A zip made while it is sent: the standard library's ``zipfile`` writing into a sink that the answer
empties after each piece, so the bytes of a file leave as soon as it is made and the whole zip never
exists in memory.

The sink cannot seek, so ``zipfile`` follows each file with a data descriptor (its CRC and sizes) and
writes the central directory at the end, as any streamed zip does; every unzip tool reads that.
"""

from __future__ import annotations

import time
import zipfile
from typing import Iterable, Iterator, List, Union

Buffer = Union[bytes, bytearray, memoryview]
SLICE = 1 << 20  # bytes of a large buffer written (and sent) at a time


def slices(parts: Iterable[Buffer]) -> Iterator[bytes]:
    """``parts`` one after the other as ``bytes`` of at most ``SLICE``: a large buffer (an array's
    memory) is never copied whole."""
    for part in parts:
        view = memoryview(part).cast("B")
        for at in range(0, len(view), SLICE):
            yield bytes(view[at:at + SLICE])


class ZipStream:
    """``add`` and ``add_parts`` put a file in the zip and yield the zip's bytes made so far; ``close``
    yields the rest (the central directory). Nothing is kept once it has been yielded."""

    def __init__(self) -> None:
        self._made: List[bytes] = []
        self._zip = zipfile.ZipFile(self, "w")  # no tell(): zipfile treats the sink as a stream

    def write(self, data: Buffer) -> int:
        """The sink's side, for ``zipfile``: what it writes waits here until the next yield."""
        self._made.append(bytes(data))  # bytes(b) of a bytes object is that object: no copy
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: ``zipfile`` calls it when it closes."""

    def _take(self) -> Iterator[bytes]:
        made, self._made = self._made, []
        yield from made

    def _info(self, name: str, deflate: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, time.localtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16  # a plain readable file once unpacked
        return info

    def add(self, name: str, data: Buffer, deflate: bool = False) -> Iterator[bytes]:
        """``name`` holding ``data``, stored (or deflated: for text)."""
        return self.add_parts(name, [data], deflate)

    def add_parts(self, name: str, parts: Iterable[Buffer], deflate: bool = False) -> Iterator[bytes]:
        """``name`` holding ``parts`` one after the other (each any buffer, an array's memory too), sent
        a slice at a time: a part is never copied whole."""
        with self._zip.open(self._info(name, deflate), "w") as out:
            for piece in slices(parts):
                out.write(piece)
                yield from self._take()
        yield from self._take()

    def close(self) -> Iterator[bytes]:
        """The central directory: the zip's last bytes."""
        self._zip.close()
        yield from self._take()
