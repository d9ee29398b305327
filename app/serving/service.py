"""What one web request asks of the engine: the depth of an upload (or from the store), the same at
new depth options, rendered views.

Shared by the page and the API; no Flask here, so it is tested like the pipeline.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import ContextManager, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from .gate import Busy, Gate
from ..depth.model import map_large_blocks, trim_heap
from ..options import INFERENCE_OPTIONS, OptionError, Options
from ..imaging.pipeline import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, Model, encode, full_depth, iter_views,
                                predict, shrink)
from .store import Entry, ResultStore, depth_id

INFER_STAGES = ("decode", "preprocess", "infer", "upsample")
PREVIEWS_KEPT = 4  # one page asks for up to four images of the same preview: shrink the arrays once
# after a photo at least this large, the heap's free pages go back to the system: a 12 MP photo's
# arrays otherwise stay with the worker (measured with `depthmap serve`: docs/engines-and-speed.md)
TRIM_FROM_BYTES = 16 << 20
# work on more pixels than this (a large photo at full size) takes a gate slot, as an inference does, so
# that a worker's request threads never make several such files at once; the page's previews (at most
# 1600 px on the longer side, 2.6 MP) do not wait in that line
GATED_PIXELS = 4_000_000
# how long, in all, the next part of an answer already begun (a zip's next photo or file) waits for a
# gate slot: it can no longer be answered 503, so a full line is waited out rather than refused
PATIENCE_S = 120.0


def no_work() -> Dict[str, float]:
    """The stage timings of an answer that came from the store."""
    return dict.fromkeys(INFER_STAGES, 0.0)


def safe_stem(filename: Optional[str]) -> str:
    """A download name from an upload's filename: no folders, no control or shell characters, short."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._-")[:64]  # \w keeps letters of any script
    return stem or "photo"


def owner_of(token: str) -> str:
    """What a result keeps of its owner token: its SHA-256, so that the store's contents delete nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


@dataclass
class Result:
    """A stored entry and how it was obtained."""

    entry: Entry
    cached: bool
    timings_ms: Dict[str, float] = field(default_factory=dict)
    token: Optional[str] = None  # the owner token: only for whoever uploaded the photo


class DepthService:
    """The model, the admission gate and the decode limits of one process, and the result store it
    shares with every other."""

    def __init__(self, models: Mapping[str, Model], store: ResultStore, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_side: int = DEFAULT_MAX_SIDE, gate: Optional[Gate] = None) -> None:
        self.models = dict(models)  # name -> loaded model, the default first
        self.store = store
        self.gate = gate or Gate()
        self.max_pixels = max_pixels
        self.max_side = max_side
        # (entry id, max_side) -> shrunk (photo, depth); small and bounded, beside the shared store
        self._previews: "OrderedDict[Tuple[str, int], Tuple[np.ndarray, np.ndarray]]" = OrderedDict()
        self._lock = threading.Lock()
        map_large_blocks()  # a photo's freed arrays go back to the system, not into this process's heap

    @property
    def default_model(self) -> str:
        """The model a request gets when it names none: the first one this server loads."""
        return next(iter(self.models))

    def model_for(self, opts: Options) -> Model:
        """The loaded model ``opts`` asks for; ``OptionError`` if this server does not load it."""
        try:
            return self.models[opts.model]
        except KeyError:
            raise OptionError("model", f"{opts.model} is not loaded on this server, which runs "
                                       f"{', '.join(self.models)} (DEPTHMAP_MODELS sets which)") from None

    def from_upload(self, data: bytes, name: str, opts: Options, token: Optional[str] = None) -> Result:
        """Raw depth of an upload for ``opts``' depth options, with a new owner token for the uploader
        (DELETE asks for it). ``token``, one this server gave for an earlier upload of the same bytes,
        answers with that result at no cost; another uploader of those bytes never sees it and gets a
        result (and an inference) of their own. ``name`` is the download stem (see ``safe_stem``).
        Raises ``pipeline.ImageError`` for bytes that are not a usable image, ``gate.Busy`` when the
        process is at capacity, ``store.StoreUnavailable`` when the shared store is down or full."""
        model = self.model_for(opts)  # before the store: an id never answers for a model not loaded
        if token is not None:
            hit = self._owned(data, name, opts, owner_of(token))
            if hit is not None:
                return Result(hit, True, no_work(), token)
        token = secrets.token_hex(16)  # only the server makes them: none is ever a client's guess
        return replace(self._infer(data, name, opts, model, owner_of(token)), token=token)

    def owns(self, entry: Entry, token: str) -> bool:
        """Whether ``token`` is the owner token of ``entry`` (or of the upload it was re-rendered from)."""
        return bool(entry.owner) and hmac.compare_digest(owner_of(token), entry.owner)

    def _owned(self, data: bytes, name: str, opts: Options, owner: str) -> Optional[Entry]:
        """``owner``'s stored result of these bytes at ``opts``' depth options, under ``name``."""
        hit = self.store.get(depth_id(self.store.secret(), data, opts.depth_options(), owner))
        if hit is None or hit.owner != owner:
            return None
        if hit.name != name:  # the owner's same photo under a new name: downloads use the new one
            hit = replace(hit, name=name)
            self.store.put(hit)
        return hit

    def _infer(self, data: bytes, name: str, opts: Options, model: Model, owner: str) -> Result:
        """A new result of ``owner`` for these bytes, inferred now and stored."""
        key = depth_id(self.store.secret(), data, opts.depth_options(), owner)
        with self.gate.slot():  # decoding is inside: a waiting request holds only its compressed bytes
            pred = predict(data, model, opts, self.max_pixels, self.max_side)
        if pred.photo.nbytes >= TRIM_FROM_BYTES:  # the decoder's and preprocessing's copies
            trim_heap()
        entry = Entry(key, data, name, opts.depth_options(), pred.photo, pred.depth, pred.pred, pred.pad_box,
                      owner)
        self.store.put(entry)
        return Result(entry, False, pred.timings_ms)

    def for_options(self, entry: Entry, opts: Options) -> Result:
        """The depth of ``entry``'s upload for ``opts``: ``entry`` itself if its depth options are
        unchanged; a new upsampling of its cached network output if only those changed; else a new
        inference of the same upload. A new result belongs to ``entry``'s owner, whoever asks."""
        wanted = opts.depth_options()
        if wanted == dict(entry.depth_opts):
            return Result(entry, True, no_work())
        if all(wanted[k] == entry.depth_opts[k] for k in INFERENCE_OPTIONS):
            key = depth_id(self.store.secret(), entry.data, wanted, entry.owner)
            hit = self.store.get(key)
            if hit is not None:
                return Result(hit, True, no_work())
            with self.gate.slot():
                t0 = time.perf_counter()
                depth = full_depth(entry.pred, entry.photo, entry.pad_box, opts)
            timings = {**no_work(), "upsample": ms_since(t0)}
            new = replace(entry, id=key, depth_opts=wanted, depth=depth)
            self.store.put(new)
            return Result(new, False, timings)
        model = self.model_for(opts)
        hit = self._owned(entry.data, entry.name, opts, entry.owner)
        if hit is not None:
            return Result(hit, True, no_work())
        return self._infer(entry.data, entry.name, opts, model, entry.owner)

    def slot(self, pixels: int, patient: bool = False) -> ContextManager[None]:
        """A gate slot for making a file of ``pixels`` pixels when that is more than ``GATED_PIXELS``
        (``gate.Busy`` when the line is full), else no wait. ``patient``: for the next part of an answer
        already begun, which can no longer be refused with 503 (see ``patient_slot``)."""
        if pixels <= GATED_PIXELS:
            return nullcontext()
        return self.patient_slot() if patient else self.gate.slot()

    @contextmanager
    def patient_slot(self) -> Iterator[None]:
        """A gate slot that waits out a full line: each refusal is tried again after its Retry-After,
        for up to ``PATIENCE_S`` in all, then ``gate.Busy`` as from ``gate.slot()``."""
        deadline = time.monotonic() + PATIENCE_S
        with ExitStack() as held:
            while True:
                try:
                    held.enter_context(self.gate.slot())
                    break
                except Busy as exc:
                    if time.monotonic() + exc.retry_after > deadline:
                        raise
                    time.sleep(exc.retry_after)
            yield

    def render(self, entry: Entry, opts: Options, views: Sequence[str], max_side: Optional[int] = None,
               fmt: str = "png") -> Tuple[Dict[str, bytes], Dict[str, float]]:
        """The bytes of each asked-for view in ``pipeline.view_format(view, fmt)`` (full size, or a
        preview no longer than ``max_side``), and the render and encode times. One view at a time, each
        encoded before the next is made: at 12 MP that holds one colour view instead of three (and the
        encoders' working copies), for about the same time on two cores."""
        t0 = time.perf_counter()
        photo, depth = self.preview(entry, max_side)
        times = {"render": 0.0, "encode": 0.0}
        out: Dict[str, bytes] = {}
        made = iter_views(photo, depth, opts, views)
        while True:
            view_img = next(made, None)
            t1 = time.perf_counter()
            times["render"] += t1 - t0
            if view_img is None:
                break
            out[view_img[0]] = encode(view_img[1], view_img[0], fmt)
            t0 = time.perf_counter()
            times["encode"] += t0 - t1
        if out and photo.nbytes >= TRIM_FROM_BYTES:  # the views' arrays
            trim_heap()
        return out, {k: round(v * 1000.0, 2) for k, v in times.items()}

    def preview(self, entry: Entry, max_side: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """``entry``'s photo and depth with their longer side at most ``max_side`` (None: as they are)."""
        if not max_side or max(entry.depth.shape) <= max_side:
            return entry.photo, entry.depth
        key = (entry.id, max_side)
        with self._lock:
            made = self._previews.get(key)
            if made is not None:
                self._previews.move_to_end(key)
                return made
        made = (shrink(entry.photo, max_side), shrink(entry.depth, max_side))
        with self._lock:
            self._previews[key] = made
            while len(self._previews) > PREVIEWS_KEPT:
                self._previews.popitem(last=False)
        return made

    def photo_image(self, entry: Entry, max_side: Optional[int] = None, fmt: str = "png") -> bytes:
        """The photo as the depth map sees it (oriented, downscaled, cropped), as PNG or JPEG."""
        return encode(self.preview(entry, max_side)[0], "photo", fmt)

    @staticmethod
    def depth_npy(entry: Entry) -> bytes:
        """The raw float32 depth as a ``.npy`` file."""
        buf = io.BytesIO()
        np.save(buf, entry.depth, allow_pickle=False)
        return buf.getvalue()
