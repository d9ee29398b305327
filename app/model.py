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

import contextlib
import copy
import ctypes
import gc
import hashlib
import importlib.util
import io
import logging
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

# torch's OpenMP threads spin while they wait for each other: fastest on an idle machine, ruinous on a
# busy one. When another process, another worker or this server's own PNG encoding holds one of the
# cores, each of the network's few hundred parallel regions can wait out a whole time slice (measured
# on 2 busy cores: 1.5-3.8 s per forward pass spinning, 0.36 s passive; README, "Speed"). libgomp reads
# this once, when torch is first imported; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn.utils.fusion import fuse_conv_bn_eval  # noqa: E402

from .cpus import usable_cpus  # noqa: E402
from .network import DepthwiseSeparable, InvertedResidual, MidasSmall  # noqa: E402
from .network_dav2 import DepthAnythingV2Small, PositionCache, WithPositions, grid_of  # noqa: E402

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
    n = threads or usable_cpus()  # a container's CPU quota included
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# engines --------------------------------------------------------------------------------------------
# Two networks, several ways to run each. Each builder returns a function from a (1, 3, h, w) float32
# array to a (1, h, w) float32 array. See docs/engines-and-speed.md, "Engines", for the measured speed.

MIDAS_SMALL = "midas-small"
DAV2_SMALL = "depth-anything-v2-small"
NETWORKS: Tuple[str, ...] = (MIDAS_SMALL, DAV2_SMALL)
Network = Union[MidasSmall, DepthAnythingV2Small]

ENGINES: Tuple[str, ...] = ("torchscript", "eager", "bf16", "onnxruntime", "openvino", "openvino-fp32")
# the exact (fp32) engines, fastest first, as the benchmark ranks them (docs/engines-and-speed.md,
# "Engines"). With AVX-512, at every size: OpenVINO fp32 0.32-0.39x eager, ONNX Runtime 0.35-0.43x,
# TorchScript 0.58-0.70x (two machines). With AVX2 only (an AMD EPYC, the machine quiet): ONNX Runtime
# 0.32 / 0.44 / 0.38x at 256 / 384 / 512 px and OpenVINO fp32 0.29 / 0.44 / 0.37x, a tie within the
# spread of either (p10-p90 78-106 ms against 79-106 ms at 256 px), TorchScript 0.70-0.77x; of the two
# tied, ONNX Runtime's worker starts 107 MB smaller (482 MB against 589), so it goes first there. Earlier
# runs that put TorchScript first on AVX2 were made on a saturated machine. Without AVX2 nothing was
# measured: TorchScript, the PyTorch path. ``auto`` takes the first one this install can run.
AUTO_ORDER: Tuple[str, ...] = ("openvino-fp32", "onnxruntime", "torchscript")
AUTO_ORDER_AVX2: Tuple[str, ...] = ("onnxruntime", "openvino-fp32", "torchscript")
AUTO_ORDER_OTHER: Tuple[str, ...] = ("torchscript",)
# Depth Anything V2 Small (benchmarks/bench_models.py), AVX2 only (the AMD EPYC, 2 cores, two full runs,
# both with the machine busy, ratios to the official eager code at 518 / 364 px on coffee.png): OpenVINO
# fp32 0.46 / 0.67x and 0.47 / 0.72x, ONNX Runtime 0.47 / 0.73x and 0.51 / 0.79x, TorchScript 0.51 /
# 0.75x and 0.51 / 0.77x, this project's eager 0.53 / 0.75x and 0.51 / 0.81x. OpenVINO first in both
# runs at both sizes, and its worker holds 709 MB after a 518 px pass against ONNX Runtime's 1000 MB.
# TorchScript ties with eager and costs a 7-16 s trace at start, so eager is the PyTorch fallback. With
# AVX-512 nothing was measured: the same order.
AUTO_ORDER_DAV2: Tuple[str, ...] = ("openvino-fp32", "onnxruntime", "eager")
AUTO_ORDER_DAV2_OTHER: Tuple[str, ...] = ("eager",)
# bf16 arithmetic is not checked against the official outputs for this network: not offered
DAV2_REFUSED = frozenset({"bf16", "openvino"})
DEFAULT_ENGINE = "auto"
EXACT_ENGINES = frozenset({"torchscript", "eager", "onnxruntime", "openvino-fp32"})
# onnx, onnxruntime and openvino are dependencies; only an install that skipped them lacks them
INSTALL_HINT = "pip install onnx onnxruntime openvino (dependencies of depthmap-studio: reinstall it)"
Runner = Callable[[np.ndarray], np.ndarray]
# photos' usual shapes (square, 4:3, 3:2, 16:9, both ways); each new input shape costs a slow first call
WARM_UP_ASPECTS: Tuple[Tuple[int, int], ...] = ((1, 1), (3, 4), (4, 3), (2, 3), (3, 2), (9, 16), (16, 9))


class EngineError(RuntimeError):
    """The chosen engine cannot run on this machine or install. The message says why and what to do."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> FrozenSet[str]:
    """The CPU's feature flags as Linux reports them (empty where there is no /proc/cpuinfo)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: Optional[FrozenSet[str]] = None) -> bool:
    """Whether the CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16). Elsewhere bfloat16 is
    emulated with float32 arithmetic plus conversions, so the bf16 engine would lose accuracy for no
    speed, and is not offered."""
    return bool({"avx512_bf16", "amx_bf16"} & (cpu_flags() if flags is None else flags))


def _needs(engine: str) -> Tuple[str, ...]:
    """The Python packages an engine imports beyond torch."""
    if engine == "onnxruntime":
        return ("onnx", "onnxruntime")
    return ("onnx", "openvino") if engine.startswith("openvino") else ()


def network_model(net: Network) -> str:
    """The model name of a network object: ``midas-small`` or ``depth-anything-v2-small``."""
    return DAV2_SMALL if isinstance(net, DepthAnythingV2Small) else MIDAS_SMALL


def _refused(engine: str, model: str) -> Optional[str]:
    """Why ``model`` is never run on ``engine``, whatever the machine (None if it may be)."""
    if model == DAV2_SMALL and engine in DAV2_REFUSED:
        return (f"The {engine} engine is not offered for Depth Anything V2 Small: it may compute in "
                "bfloat16, which was not checked against the official outputs for this network. Use "
                "auto (the fastest exact engine), openvino-fp32, onnxruntime, torchscript or eager.")
    return None


def engine_problem(engine: str, model: str = MIDAS_SMALL) -> Optional[str]:
    """Why ``engine`` cannot run ``model`` here (a sentence that says what to do), or None if it can."""
    if model not in NETWORKS:
        return f"Unknown model {model!r}: choose one of {', '.join(NETWORKS)}."
    if engine == "auto":
        return None if resolve_engine(engine, model) else "No exact engine can run here."
    if engine not in ENGINES:
        return f"Unknown engine {engine!r}: choose auto or one of {', '.join(ENGINES)}."
    refused = _refused(engine, model)
    if refused:
        return refused
    if engine == "bf16" and not native_bf16():
        return ("The bf16 engine needs a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16); "
                "this one has neither. Use the default engine, auto (the fastest exact one).")
    missing = [m for m in _needs(engine) if importlib.util.find_spec(m) is None]
    if missing:
        return f"The {engine} engine needs the packages {' and '.join(missing)}: {INSTALL_HINT}."
    return None


def auto_order(flags: Optional[FrozenSet[str]] = None, model: str = MIDAS_SMALL) -> Tuple[str, ...]:
    """The exact engines ``auto`` tries for ``model``, fastest first on this CPU (AVX-512, AVX2 only, or
    neither)."""
    flags = cpu_flags() if flags is None else flags
    if model == DAV2_SMALL:  # measured with AVX2 only (see AUTO_ORDER_DAV2)
        return AUTO_ORDER_DAV2 if "avx2" in flags else AUTO_ORDER_DAV2_OTHER
    if "avx512f" in flags:
        return AUTO_ORDER
    return AUTO_ORDER_AVX2 if "avx2" in flags else AUTO_ORDER_OTHER


def resolve_engine(engine: str, model: str = MIDAS_SMALL) -> Optional[str]:
    """The engine ``engine`` names: ``auto`` is the first of ``auto_order(model=model)`` this install
    can run (None if none can; the last, torchscript or eager, always can), any other name itself."""
    if engine != "auto":
        return engine
    return next((e for e in auto_order(model=model) if engine_problem(e, model) is None), None)


def fold_batchnorm(net: MidasSmall) -> MidasSmall:
    """A copy of ``net`` with every batch norm folded into the convolution before it (eval mode only):
    the same function with fewer operations, and in bf16 one rounding of the folded weights instead
    of a rounding after each convolution and again after its batch norm."""
    net = copy.deepcopy(net).eval()
    pairs: List[Tuple[torch.nn.Module, str, str]] = []
    for m in net.modules():
        if isinstance(m, DepthwiseSeparable):
            pairs += [(m, "conv_dw", "bn1"), (m, "conv_pw", "bn2")]
        elif isinstance(m, InvertedResidual):
            pairs += [(m, "conv_pw", "bn1"), (m, "conv_dw", "bn2"), (m, "conv_pwl", "bn3")]
    pairs.append((net.pretrained.layer1, "0", "1"))  # the stem: conv_stem, bn1
    for module, conv, norm in pairs:
        setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, norm)))
        setattr(module, norm, torch.nn.Identity())
    return net


@contextlib.contextmanager
def _quiet_compilers() -> Iterator[None]:
    # torch >= 2.10 marks TorchScript and the TorchScript-based ONNX exporter deprecated, and tracing
    # warns about the Python ints of the TF-"same" padding: that padding is the same for every input
    # whose sides are multiples of 32, which is all this network accepts (tested at several shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _example(size: int = 256) -> torch.Tensor:
    return torch.zeros(1, 3, size, size)


# Depth Anything V2's compiled graphs take the input's position embedding as a second input (see
# ``WithPositions`` for why); the runner computes it once per grid size with its ``PositionCache``
DAV2_EXAMPLE = (1, 3, 364, 546)  # coffee.png's shape at 364 px; any multiples of 14 would do


def _dav2_example(positions: PositionCache) -> Tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(DAV2_EXAMPLE)
    return x, positions(*grid_of(x.shape[2], x.shape[3]))


def _eager(net: Network) -> Runner:
    return lambda x: net(torch.from_numpy(x)).numpy()


def _traced(net: Network, bf16: bool = False) -> Runner:
    if isinstance(net, DepthAnythingV2Small):
        return _traced_dav2(net)
    return _traced_midas(net, bf16)


def _traced_dav2(net: DepthAnythingV2Small) -> Runner:
    """TorchScript: traced with the position embedding as an input, then frozen; exact at every input
    size (the traced shapes are read from the input, not recorded)."""
    positions = PositionCache(net.pretrained.pos_embed)
    with _quiet_compilers(), torch.no_grad():
        module = torch.jit.freeze(torch.jit.trace(WithPositions(net).eval(), _dav2_example(positions)))
    return lambda x: module(torch.from_numpy(x), positions(*grid_of(x.shape[2], x.shape[3]))).numpy()


def _traced_midas(net: MidasSmall, bf16: bool = False) -> Runner:
    """TorchScript: batch norms folded, channels-last memory layout, traced, frozen (weights become
    constants). In fp32 the fastest of the ways to compile it that were measured (scripting, freezing,
    optimize_for_inference, with and without channels-last; README, "Speed"). In bf16 the folding
    matters for accuracy: without it one sample photo came out 1.16 % off in relative L1, with it 0.63 %."""
    folded = fold_batchnorm(net).to(memory_format=torch.channels_last)
    example = _example().contiguous(memory_format=torch.channels_last)
    # bf16: traced under autocast so the casts are in the graph; freezing then stores bf16 copies of
    # the weights once instead of casting them on every call
    cast = (torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False) if bf16
            else contextlib.nullcontext())
    with _quiet_compilers(), torch.no_grad(), cast:
        module = torch.jit.freeze(torch.jit.trace(folded, example))
    return lambda x: module(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).float().numpy()


ONNX_OPSET = 17


def export_onnx(net: Network) -> bytes:
    """The network as an ONNX model with a free height and width (TorchScript-based exporter). Depth
    Anything V2's takes a second input, ``positions``: ``PositionCache(pos_embed)(h // 14, w // 14)``."""
    buf = io.BytesIO()
    with _quiet_compilers(), torch.no_grad():
        if isinstance(net, DepthAnythingV2Small):
            example = _dav2_example(PositionCache(net.pretrained.pos_embed))
            torch.onnx.export(WithPositions(net).eval(), example, buf, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["image", "positions"], output_names=["depth"],
                              dynamic_axes={"image": {2: "height", 3: "width"}, "positions": {1: "tokens"},
                                            "depth": {1: "height", 2: "width"}})
        else:
            torch.onnx.export(net, (_example(),), buf, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["image"], output_names=["depth"],
                              dynamic_axes={"image": {2: "height", 3: "width"},
                                            "depth": {1: "height", 2: "width"}})
    return buf.getvalue()


def onnx_cache_key(weights_sha256: str) -> str:
    """What an exported model depends on: the weights, the exporter (torch's TorchScript-based one and
    its opset) and the onnx package it writes with. Any change gives another file name."""
    import onnx

    parts = [weights_sha256, f"torch {torch.__version__}", f"onnx {onnx.__version__}",
             f"torchscript-exporter opset {ONNX_OPSET}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def onnx_cache_path(folder: Path, weights_sha256: str, model: str = MIDAS_SMALL) -> Path:
    prefix = "depth_anything_v2_small" if model == DAV2_SMALL else "midas_small"
    return folder / f"{prefix}-{onnx_cache_key(weights_sha256)}.onnx"


def cached_onnx(net: Network, weights_sha256: str, folder: Path) -> bytes:
    """The exported model, from ``folder`` when an earlier start wrote it there, else exported (2-5 s
    for MiDaS small, about 10 s for Depth Anything V2 Small) and written there atomically for the next
    start. An unwritable ``folder`` only costs the export each time."""
    path = onnx_cache_path(folder, weights_sha256, network_model(net))
    try:
        data = path.read_bytes()
        log.info("ONNX export reused from %s", path)
        return data
    except OSError:  # not there yet, or no usable folder: export (and try to save) below
        pass
    t0 = time.perf_counter()
    data = export_onnx(net)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # a concurrent start writes the same bytes; either rename wins whole
        log.info("ONNX export (%.1f s) saved to %s", time.perf_counter() - t0, path)
    except OSError as exc:
        log.warning("ONNX export not cached: cannot write %s (%s)", folder, exc.strerror or exc)
    return data


def _feed(positions: Optional[PositionCache]) -> Callable[[np.ndarray], List[np.ndarray]]:
    """The inputs of an exported graph for an image: the image, and Depth Anything V2's position
    embedding for its grid (computed once per grid size)."""
    if positions is None:
        return lambda x: [x]
    return lambda x: [x, positions(*grid_of(x.shape[2], x.shape[3])).numpy()]


def _onnxruntime(onnx_model: bytes, threads: int, positions: Optional[PositionCache] = None) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no busy-waiting between operators: the request threads' PNG encoding and the other workers
    # need those cores more than the network saves by spinning
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(onnx_model, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feed = _feed(positions)
    return lambda x: session.run(None, dict(zip(names, feed(x), strict=True)))[0]


def _import_openvino() -> Any:
    """``import openvino``, without its telemetry: importing openvino records a usage event in
    ~/intel and sends it to Intel's analytics unless the user opted out. Nothing here may leave the
    machine, so the telemetry package is hidden and openvino falls back to its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def _openvino(onnx_model: bytes, threads: int, precision: Optional[str] = None,
              positions: Optional[PositionCache] = None) -> Tuple[Runner, str]:
    """OpenVINO on the CPU, in bf16 where the CPU has it natively, else f32 (``precision`` forces one:
    the openvino-fp32 engine forces f32, which computes what the official code does)."""
    ov = _import_openvino()
    core = ov.Core()
    if precision is None:
        precision = "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
    compiled = core.compile_model(core.read_model(onnx_model), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": precision,
        # pinning would put every worker's threads on the same first cores
        "ENABLE_CPU_PINNING": False,
    })
    request = compiled.create_infer_request()
    feed = _feed(positions)
    return (lambda x: request.infer(feed(x))[0]), ("bf16" if precision == "bf16" else "fp32")


def build_runner(net: Network, engine: str, threads: int, check: bool = True,
                 weights_sha256: Optional[str] = None,
                 onnx_cache: Optional[Path] = None) -> Tuple[Runner, str]:
    """The network (``MidasSmall`` or ``DepthAnythingV2Small``) compiled for ``engine`` (not ``auto``:
    see ``resolve_engine``), and the precision it computes in (fp32 or bf16). ``check=False`` skips the
    support check (tests build the bf16 engine on any CPU), not the engines refused for the network. The
    ONNX-based engines reuse the export in ``onnx_cache`` when ``weights_sha256`` is given."""
    model = network_model(net)
    problem = engine_problem(engine, model) if check else _refused(engine, model)
    if problem:
        raise EngineError(problem)
    if engine == "eager":
        return _eager(net), "fp32"
    if engine in ("torchscript", "bf16"):
        precision = "bf16" if engine == "bf16" else "fp32"
        return _traced(net, bf16=engine == "bf16"), precision
    # the runner keeps its own copy of the trained position embedding, not the whole network
    positions = PositionCache(net.pretrained.pos_embed) if model == DAV2_SMALL else None
    if weights_sha256 is None or onnx_cache is None:
        return _from_onnx(export_onnx(net), engine, threads, positions)
    try:
        return _from_onnx(cached_onnx(net, weights_sha256, onnx_cache), engine, threads, positions)
    except Exception as exc:  # noqa: BLE001 - each runtime raises its own types for a damaged model
        # the file is written atomically, so only a damaged disk or a hand edit gets here: export again
        path = onnx_cache_path(onnx_cache, weights_sha256, model)
        log.warning("cached ONNX export %s unusable (%s): exporting again", path, exc.__class__.__name__)
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return _from_onnx(cached_onnx(net, weights_sha256, onnx_cache), engine, threads, positions)


def _from_onnx(onnx_model: bytes, engine: str, threads: int,
               positions: Optional[PositionCache] = None) -> Tuple[Runner, str]:
    if engine == "onnxruntime":
        return _onnxruntime(onnx_model, threads, positions), "fp32"
    return _openvino(onnx_model, threads, "f32" if engine == "openvino-fp32" else None, positions)


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
    name: str = MODEL_NAME
    # one forward pass at a time per process: every engine already spreads one pass over all the
    # threads it has, so concurrent passes only oversubscribe the cores and multiply peak memory
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def scripted(self) -> bool:
        return self.engine == "torchscript"

    @classmethod
    def load(cls, weights: Path, threads: Optional[int] = None, engine: Optional[str] = None,
             warm_up: bool = True, onnx_cache: Optional[Path] = None) -> "DepthModel":
        """Strict-loads ``weights`` and compiles them for ``engine`` (default ``auto``: the fastest exact
        engine this install can run), then, with ``warm_up``, runs ``warm_up()``. The ONNX export is
        kept in ``onnx_cache`` (default ``cache_dir()/onnx``). Raises ``WeightsError`` or ``EngineError``."""
        asked = engine or DEFAULT_ENGINE
        problem = engine_problem(asked)
        if problem:  # before the slow part
            raise EngineError(problem)
        engine = resolve_engine(asked) or asked  # engine_problem said that it resolves
        if asked != engine:
            log.info("engine %s: chose %s, the first of %s this install can run on this CPU", asked, engine,
                     ", ".join(auto_order()))
        t0 = time.perf_counter()
        n = configure_threads(threads)
        sha256 = file_digest(weights, "sha256")
        runner, precision = build_runner(load_network(weights), engine, n, weights_sha256=sha256,
                                         onnx_cache=onnx_cache or cache_dir() / "onnx")
        model = cls(runner, weights, sha256, n, engine, precision)
        model(np.zeros((1, 3, 256, 256), np.float32))  # first call: compilers finish their work
        log.info("loaded %s from %s (sha256 %s), engine %s (%s), %d threads, in %.1f s", MODEL_NAME,
                 weights, model.weights_sha256, engine, precision, n, time.perf_counter() - t0)
        if warm_up:
            model.warm_up()
        else:
            release_freed_memory()
        return model

    def warm_up(self, sizes: Sequence[int] = (256,)) -> float:
        """Runs the network once at each input shape that photos of the usual aspect ratios get at
        ``sizes`` (the first call at a new shape pays for the engine's per-shape preparation);
        returns the seconds it took. Safe to call from another thread while serving."""
        from .pipeline import network_size  # pipeline does not import torch; no cycle

        t0 = time.perf_counter()
        shapes = {network_size(h, w, size) for size in sizes for h, w in WARM_UP_ASPECTS}
        for h, w in sorted(shapes):
            self(np.zeros((1, 3, h, w), np.float32))
        took = time.perf_counter() - t0
        log.info("warm-up: %d input shapes in %.2f s", len(shapes), took)
        release_freed_memory()
        return took

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(1, 3, h, w)`` float32 normalised RGB, h and w multiples of 32 -> ``(h, w)`` float32
        relative inverse depth."""
        with self._lock, torch.inference_mode():
            return np.asarray(self.run(x), dtype=np.float32)[0]
