"""The depth model: where the weights come from, how they are checked and loaded, and inference.

Weights are resolved in this order (``resolve_weights``):

1. an explicit path (CLI ``--weights``, environment ``MIDAS_WEIGHTS``): used as given, never replaced;
2. the user cache, ``$DEPTHMAP_CACHE`` or ``$XDG_CACHE_HOME/depthmap`` or ``~/.cache/depthmap``
   (torch.hub's own copy, ``~/.cache/torch/hub/checkpoints``, is used too when present);
3. a download of the official release file into the cache: to a temporary file, with a progress bar,
   checked against the known digest and by a strict load, then renamed into place.

Nothing ever falls back to random weights: any failure is a ``WeightsError`` that says what to do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from .network import MidasSmall

log = logging.getLogger(__name__)

MODEL_NAME = "MiDaS v2.1 small (midas_v21_small_256)"
WEIGHTS_FILENAME = "midas_v21_small_256.pt"
WEIGHTS_URL = "https://github.com/isl-org/MiDaS/releases/download/v2_1/midas_v21_small_256.pt"
# The only published fingerprint of the official file: its git blob id in a public repository that
# commits a copy (``git hash-object FILE``). The sha256 of whatever loads is reported in its place.
WEIGHTS_DIGEST = "gitblob:e224b2bed206ebb398b613018f24458f00eab784"


class WeightsError(RuntimeError):
    """The weights cannot be found, fetched, verified or loaded. The message says what to do."""


# where the weights come from ---------------------------------------------------------------------------

def cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("DEPTHMAP_CACHE"):
        return Path(env["DEPTHMAP_CACHE"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "depthmap"


def _how_to_fix(dest: Path) -> str:
    return (f"Download {WEIGHTS_FILENAME} from {WEIGHTS_URL} on a machine with internet access and "
            f"either put it at {dest} or pass its path with --weights PATH (or MIDAS_WEIGHTS=PATH).")


def resolve_weights(explicit: Optional[str] = None, cache: Optional[Path] = None,
                    url: Optional[str] = None, digest: Optional[str] = None,
                    download: bool = True, env: Mapping[str, str] = os.environ) -> Path:
    """The path of usable weights: explicit, else cached, else freshly downloaded into the cache.

    ``url`` and ``digest`` default to ``$MIDAS_WEIGHTS_URL`` / ``$MIDAS_WEIGHTS_DIGEST`` (a mirror and
    its ``sha256:HEX`` or ``gitblob:HEX``), else the official release and its known digest.
    """
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsError(f"Weights file not found: {path}. {_how_to_fix(path)}")
        return path
    cache = cache if cache is not None else cache_dir(env)
    dest = cache / WEIGHTS_FILENAME
    for candidate in (dest, Path.home() / ".cache/torch/hub/checkpoints" / WEIGHTS_FILENAME):
        if candidate.is_file():
            return candidate
    if not download:
        raise WeightsError(f"No weights at {dest} and downloading is off. {_how_to_fix(dest)}")
    return download_weights(url or env.get("MIDAS_WEIGHTS_URL") or WEIGHTS_URL, dest,
                            digest or env.get("MIDAS_WEIGHTS_DIGEST") or WEIGHTS_DIGEST)


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


def download_weights(url: str, dest: Path, digest: str = WEIGHTS_DIGEST, progress: bool = True,
                     timeout: float = 30.0) -> Path:
    """Fetch ``url`` into ``dest`` atomically: temp file, progress bar, digest, strict load, rename."""
    from tqdm import tqdm  # only needed here, and only on a first run

    kind, _, expected = digest.partition(":")
    if kind not in ("sha256", "gitblob") or not expected:
        raise WeightsError(f"Bad weights digest {digest!r}: expected sha256:HEX or gitblob:HEX.")
    log.info("downloading %s weights from %s to %s", MODEL_NAME, url, dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise WeightsError(f"Cannot write the weights cache {dest.parent} ({exc.strerror}). Set "
                           f"DEPTHMAP_CACHE to a writable folder, or {_how_to_fix(dest)}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                              desc=WEIGHTS_FILENAME, disable=not progress) as bar:
                        for chunk in iter(lambda: resp.read(1 << 16), b""):
                            out.write(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()  # an HTTPError holds the open response
                reason = getattr(exc, "reason", exc)
                raise WeightsError(f"Could not download the model weights from {url} ({reason}). "
                                   f"{_how_to_fix(dest)}") from None
        got = file_digest(tmp, kind)
        if got != expected:
            raise WeightsError(f"The downloaded weights are corrupt or not the official file: "
                               f"{kind} {got}, expected {expected}. {_how_to_fix(dest)}")
        load_network(tmp)  # a strict load proves the tensors are all there, with the right shapes
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("weights saved to %s (sha256 %s)", dest, file_digest(dest, "sha256"))
    return dest


# loading --------------------------------------------------------------------------------------------

def load_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """The checkpoint's tensors. Accepts a plain state_dict (official) or one wrapped under "model"."""
    try:
        # weights_only: a checkpoint is data, never code to run
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise WeightsError(f"Cannot read weights file {path}: {exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}. "
                           f"{_how_to_fix(path)}") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # the official training scripts save {"model": ..., "optimizer": ...}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} is not a MiDaS state_dict. {_how_to_fix(path)}")
    return obj


def load_network(path: Path) -> MidasSmall:
    """An eval-mode ``MidasSmall`` with the file's weights, loaded with ``strict=True``."""
    net = MidasSmall()
    try:
        net.load_state_dict(load_state_dict(path), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise WeightsError(f"{path} does not fit MiDaS v2.1 small: "
                           f"{' '.join(line.strip() for line in first[:3])[:500]}. "
                           f"{_how_to_fix(path)}") from None
    return net.eval()


def configure_threads(threads: Optional[int] = None) -> int:
    """Sets torch's intra-op thread count (default: the CPUs this process may use) and returns it."""
    n = threads or len(os.sched_getaffinity(0))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# inference ------------------------------------------------------------------------------------------

@dataclass
class DepthModel:
    """One loaded network, ready to call on preprocessed input; create once per process."""

    net: torch.nn.Module
    weights_path: Path
    weights_sha256: str
    threads: int
    scripted: bool
    name: str = MODEL_NAME
    # one forward pass at a time per process: torch already spreads one pass over every thread it
    # has, so concurrent passes only oversubscribe the cores and multiply peak memory
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, weights: Path, threads: Optional[int] = None, script: bool = True) -> "DepthModel":
        """Strict-loads ``weights``, optionally compiles with ``torch.jit.script``, and warms up."""
        n = configure_threads(threads)
        net: torch.nn.Module = load_network(weights)
        if script:
            with warnings.catch_warnings():
                # torch >= 2.10 marks TorchScript deprecated; it still is the fastest stable
                # ahead-of-time path for this CPU model (see README, "Engine")
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated",
                                        category=DeprecationWarning)
                net = torch.jit.script(net)
        model = cls(net, weights, file_digest(weights, "sha256"), n, script)
        model(np.zeros((1, 3, 256, 256), np.float32))  # first call pays TorchScript's profiling
        log.info("loaded %s from %s (sha256 %s, %s, %d threads)", MODEL_NAME, weights,
                 model.weights_sha256, "TorchScript" if script else "eager", n)
        return model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(1, 3, h, w)`` float32 normalised RGB -> ``(h, w)`` float32 relative inverse depth."""
        with self._lock, torch.inference_mode():
            return self.net(torch.from_numpy(x))[0].numpy()
