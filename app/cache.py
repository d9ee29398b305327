"""A small in-memory LRU of recent results, bounded in bytes, so a new colormap or mode re-renders
without a new inference. Nothing here touches the disk."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

import numpy as np


def depth_id(data: bytes, depth_opts: Mapping[str, Any]) -> str:
    """The key of one result: a hash of the uploaded bytes and the options the raw depth depends on."""
    h = hashlib.sha256(data)
    for name in sorted(depth_opts):
        h.update(f"|{name}={depth_opts[name]!r}".encode())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Entry:
    """One upload and its raw depth. ``data`` is kept so the input size can change without a re-upload."""

    id: str
    data: bytes  # the uploaded file, as received
    name: str  # safe download stem derived from the upload's filename (never used as a path)
    depth_opts: Mapping[str, Any]  # Options.depth_options() the depth was made with
    photo: np.ndarray  # (H, W, 3) uint8 RGB, as the depth sees it (cropped with square=crop)
    depth: np.ndarray  # (H, W) float32 relative inverse depth
    pred: np.ndarray  # (h, w) float32 network output: a new upsampling needs no new inference
    pad_box: Optional[Tuple[int, int, int]] = None

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.photo.nbytes + self.depth.nbytes + self.pred.nbytes


class DepthCache:
    """Thread-safe LRU of ``Entry`` objects holding at most ``max_bytes`` of arrays and uploads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: "OrderedDict[str, Entry]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[Entry]:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
            return entry

    def put(self, entry: Entry) -> None:
        """Adds ``entry`` as the most recent, evicting the oldest until it fits; one entry larger than
        the whole budget is not kept at all (the request that made it still gets its result)."""
        for arr in (entry.photo, entry.depth, entry.pred):
            arr.flags.writeable = False  # shared between requests: nobody may change it in place
        with self._lock:
            old = self._items.pop(entry.id, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes > self.max_bytes:
                return
            self._items[entry.id] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
