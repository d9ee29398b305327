"""The depth models: where the weights come from, how they are checked and loaded, and inference.

Each model's weights (``app.depth.registry``) are resolved in this order (``resolve_weights``):

1. an explicit path (CLI ``--weights``, environment ``MIDAS_WEIGHTS`` or ``DAV2_WEIGHTS``): used as given,
   never replaced;
2. the user cache, ``$DEPTHMAP_CACHE`` or ``$XDG_CACHE_HOME/depthmap`` or ``~/.cache/depthmap``
   (torch.hub's own copy, ``~/.cache/torch/hub/checkpoints``, is used too when present);
3. a download of the official file into the cache: to a temporary file, with a progress bar,
   checked against the known digest and by a strict load, then renamed into place.

Nothing ever falls back to random weights: any failure is a ``WeightsError`` that says what to do.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from .cpus import usable_cpus
from .registry import DEPTH_ANYTHING_V2_SMALL, MIDAS_SMALL, ModelSpec, WeightsError
from .positions import positions_feed
from .engines import (DEFAULT_ENGINE, ONNX_ENGINES, EngineError, Runner, auto_order, engine_problem,
                      onnx_cache_path, read_positions, resolve_engine, runner_from_export)

log = logging.getLogger(__name__)

WEIGHTS_FILENAME = MIDAS_SMALL.weights_filename
WEIGHTS_DIGEST = MIDAS_SMALL.weights_digest


# where the weights come from ---------------------------------------------------------------------------

def cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("DEPTHMAP_CACHE"):
        return Path(env["DEPTHMAP_CACHE"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "depthmap"


def resolve_weights(explicit: Optional[str] = None, cache: Optional[Path] = None,
                    url: Optional[str] = None, digest: Optional[str] = None,
                    download: bool = True, env: Mapping[str, str] = os.environ,
                    model: ModelSpec = MIDAS_SMALL) -> Path:
    """The path of ``model``'s usable weights: explicit, else cached, else freshly downloaded into the
    cache.

    ``url`` and ``digest`` default to ``$MIDAS_WEIGHTS_URL`` / ``$MIDAS_WEIGHTS_DIGEST`` (``DAV2_…`` for
    Depth Anything: a mirror and its ``sha256:HEX`` or ``gitblob:HEX``), else the official file and its
    known digest.
    """
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsError(f"Weights file not found: {path}. {model.how_to_fix(path)}")
        return path
    cache = cache if cache is not None else cache_dir(env)
    dest = cache / model.weights_filename
    for candidate in (dest, Path.home() / ".cache/torch/hub/checkpoints" / model.weights_filename):
        if candidate.is_file():
            return candidate
    if not download:
        raise WeightsError(f"No weights at {dest} and downloading is off. {model.how_to_fix(dest)}")
    return download_weights(url or env.get(f"{model.weights_env}_URL") or model.weights_url, dest,
                            digest or env.get(f"{model.weights_env}_DIGEST") or model.weights_digest,
                            model=model)


def file_digest(path: Path, kind: str) -> str:
    """``sha256`` of the file, or its ``gitblob`` id (sha1 of ``b"blob <size>\\0" + content``)."""
    h = hashlib.sha256() if kind == "sha256" else hashlib.sha1()
    if kind == "gitblob":
        h.update(b"blob %d\0" % path.stat().st_size)
    elif kind != "sha256":
        raise ValueError(f"unknown digest kind {kind!r}")
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_weights(url: str, dest: Path, digest: Optional[str] = None, progress: bool = True,
                     timeout: float = 30.0, model: ModelSpec = MIDAS_SMALL) -> Path:
    """Fetch ``url`` into ``dest`` atomically: temp file, progress bar, ``digest`` (default: ``model``'s),
    strict load (as ``model``), rename."""
    from tqdm import tqdm  # only needed here, and only on a first run

    digest = digest or model.weights_digest
    kind, _, expected = digest.partition(":")
    if kind not in ("sha256", "gitblob") or not expected:
        raise WeightsError(f"Bad weights digest {digest!r}: expected sha256:HEX or gitblob:HEX.")
    log.info("downloading %s weights from %s to %s", model.title, url, dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise WeightsError(f"Cannot write the weights cache {dest.parent} ({exc.strerror}). Set "
                           f"DEPTHMAP_CACHE to a writable folder, or {model.how_to_fix(dest)}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                              desc=model.weights_filename, disable=not progress) as bar:
                        for chunk in iter(lambda: resp.read(1 << 16), b""):
                            out.write(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()  # an HTTPError holds the open response
                reason = getattr(exc, "reason", exc)
                raise WeightsError(f"Could not download the model weights from {url} ({reason}). "
                                   f"{model.how_to_fix(dest)}") from None
        got = file_digest(tmp, kind)
        if got != expected:
            raise WeightsError(f"The downloaded weights are corrupt or not the official file: "
                               f"{kind} {got}, expected {expected}. {model.how_to_fix(dest)}")
        from .torch_engines import load_network  # the one step of a download that needs torch

        load_network(tmp, model)  # a strict load proves the tensors are all there, with the right shapes
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("weights saved to %s (sha256 %s)", dest, file_digest(dest, "sha256"))
    return dest


def release_freed_memory() -> None:
    """Gives the memory freed while compiling and warming up back to the system. glibc otherwise keeps
    it for reuse, and a serving process would carry about 40 MB it never needs again."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hands the free pages of glibc's heap back to the system (``malloc_trim``)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc only; elsewhere there is nothing to do
    except (OSError, AttributeError):
        pass


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BLOCK = 4 << 20


def map_large_blocks() -> None:
    """Makes glibc give every allocation of ``LARGE_BLOCK`` bytes or more a mapping of its own, returned
    to the system when freed. By default that limit rises to the size of the largest block freed so far
    (up to 32 MB), and from then on the arrays of a large photo (Pillow's 16 MB blocks, preprocessing's
    strips, the 12 MB display levels) come from the heap and stay with the process. Blocks that fit in
    heap memory already free are still taken from it: ``trim_heap`` after a large photo gives those
    back. 4 MB is above every tensor of the network at 256 px, so a forward pass there maps nothing."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)  # glibc only; elsewhere nothing to do
    except (OSError, AttributeError):
        pass


def _from_cached_export(folder: Path, weights_sha256: str, engine: str, threads: int,
                        model: ModelSpec) -> Optional[Tuple[Runner, str]]:
    """The network on an ONNX engine straight from an earlier start's export, without torch: the export
    was made from these very weights (its name holds their sha256) after a strict load, and so was
    Depth Anything V2's position embedding beside it. None for a PyTorch engine, or when there is no
    usable export."""
    if engine not in ONNX_ENGINES:
        return None
    path = onnx_cache_path(folder, weights_sha256, model.name)
    feed = None
    if model.name == DEPTH_ANYTHING_V2_SMALL.name:
        pos_embed = read_positions(path)
        if pos_embed is None:
            return None
        feed = positions_feed(pos_embed)
    return runner_from_export(path, engine, threads, feed)


# photos' usual shapes (square, 4:3, 3:2, 16:9, both ways); each new input shape costs a slow first call
WARM_UP_ASPECTS: Tuple[Tuple[int, int], ...] = ((1, 1), (3, 4), (4, 3), (2, 3), (3, 2), (9, 16), (16, 9))


# inference ------------------------------------------------------------------------------------------

@dataclass
class DepthModel:
    """One loaded network, ready to call on preprocessed input; create once per process."""

    run: Runner
    weights_path: Path
    weights_sha256: str
    threads: int
    engine: str = "torchscript"
    precision: str = "fp32"
    spec: ModelSpec = MIDAS_SMALL
    # one forward pass at a time per process: every engine already spreads one pass over all the
    # threads it has, so concurrent passes only oversubscribe the cores and multiply peak memory
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def scripted(self) -> bool:
        return self.engine == "torchscript"

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def load(cls, weights: Path, threads: Optional[int] = None, engine: Optional[str] = None,
             warm_up: bool = True, onnx_cache: Optional[Path] = None,
             model: ModelSpec = MIDAS_SMALL) -> "DepthModel":
        """Strict-loads ``weights`` as ``model`` and compiles them for ``engine`` (default ``auto``: the
        fastest exact engine this install can run for that model), then, with ``warm_up``, runs
        ``warm_up()``. The ONNX export is kept in ``onnx_cache`` (default ``cache_dir()/onnx``). Raises
        ``WeightsError`` or ``EngineError``."""
        asked = engine or DEFAULT_ENGINE
        problem = engine_problem(asked, model=model.name)
        if problem:  # before the slow part
            raise EngineError(problem)
        engine = resolve_engine(asked, model=model.name) or asked  # engine_problem said that it resolves
        if asked != engine:
            log.info("%s: engine %s chose %s, the first of %s this install can run on this CPU", model.name,
                     asked, engine, ", ".join(auto_order(model=model.name)))
        t0 = time.perf_counter()
        n = threads or usable_cpus()  # a container's CPU quota included
        sha256 = file_digest(weights, "sha256")
        folder = onnx_cache or cache_dir() / "onnx"
        built = _from_cached_export(folder, sha256, engine, n, model)
        if built is None:  # a PyTorch engine, or no usable export yet: torch loads and compiles
            from .torch_engines import build_runner, configure_threads, load_network

            configure_threads(n)
            built = build_runner(load_network(weights, model), engine, n, weights_sha256=sha256,
                                 onnx_cache=folder)
        runner, precision = built
        loaded = cls(runner, weights, sha256, n, engine, precision, model)
        side = model.multiple * 8  # MiDaS: 256
        loaded(np.zeros((1, 3, side, side), np.float32))  # first call: compilers finish their work
        log.info("loaded %s from %s (sha256 %s), engine %s (%s), %d threads, in %.1f s", model.title,
                 weights, loaded.weights_sha256, engine, precision, n, time.perf_counter() - t0)
        if warm_up and model.warm_up:
            loaded.warm_up()
        else:
            release_freed_memory()
        return loaded

    def warm_up(self, sizes: Optional[Sequence[int]] = None) -> float:
        """Runs the network once at each input shape that photos of the usual aspect ratios get at
        ``sizes`` (default: the model's usual size; the first call at a new shape pays for the engine's
        per-shape preparation); returns the seconds it took. Safe to call from another thread while
        serving."""
        t0 = time.perf_counter()
        sizes = sizes or (self.spec.default_size,)
        shapes = {self.spec.input_shape(h, w, size) for size in sizes for h, w in WARM_UP_ASPECTS}
        for h, w in sorted(shapes):
            self(np.zeros((1, 3, h, w), np.float32))
        took = time.perf_counter() - t0
        log.info("warm-up: %d input shapes in %.2f s", len(shapes), took)
        release_freed_memory()
        return took

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(1, 3, h, w)`` float32 normalised RGB, h and w multiples of the model's (32, 14) -> ``(h, w)``
        float32 relative inverse depth."""
        with self._lock:
            return np.asarray(self.run(x), dtype=np.float32)[0]
