"""The engines, torch-free: which one runs a model on this CPU and install (``auto``: the fastest exact
one), the ONNX export cache, and the two ONNX runtimes (ONNX Runtime, OpenVINO). The PyTorch engines and
the export itself are in ``app.depth.torch_engines``, the only place that imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, FrozenSet, List, Optional, Tuple

# torch's OpenMP threads spin while they wait for each other: fastest on an idle machine, ruinous on a
# busy one. When another process, another worker or this server's own PNG encoding holds one of the
# cores, each of the network's few hundred parallel regions can wait out a whole time slice (measured
# on 2 busy cores: 1.5-3.8 s per forward pass spinning, 0.36 s passive; README, "Speed"). libgomp reads
# this once, when torch is first imported (in app.depth.torch_engines, which imports this module first);
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from .registry import DEPTH_ANYTHING_V2_SMALL, MIDAS_SMALL, MODEL_NAMES  # noqa: E402
from .positions import EMBED_SHAPE  # noqa: E402

log = logging.getLogger(__name__)

# Two networks, several ways to run each. Each runner is a function from a (1, 3, h, w) float32 array to a
# (1, h, w) float32 array. See docs/engines-and-speed.md, "Engines", for the measured speed.

DAV2_SMALL = DEPTH_ANYTHING_V2_SMALL.name  # the engine functions take model names

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
ONNX_ENGINES = frozenset({"onnxruntime", "openvino", "openvino-fp32"})  # they run an ONNX export
EXACT_ENGINES = frozenset({"torchscript", "eager", "onnxruntime", "openvino-fp32"})
# onnx, onnxruntime and openvino are dependencies; only an install that skipped them lacks them
INSTALL_HINT = "pip install onnx onnxruntime openvino (dependencies of depthmap-studio: reinstall it)"
Runner = Callable[[np.ndarray], np.ndarray]


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


def refused_engine(engine: str, model: str) -> Optional[str]:
    """Why ``model`` is never run on ``engine``, whatever the machine (None if it may be)."""
    if model == DAV2_SMALL and engine in DAV2_REFUSED:
        return (f"The {engine} engine is not offered for Depth Anything V2 Small: it may compute in "
                "bfloat16, which was not checked against the official outputs for this network. Use "
                "auto (the fastest exact engine), openvino-fp32, onnxruntime, torchscript or eager.")
    return None


def engine_problem(engine: str, model: str = MIDAS_SMALL.name) -> Optional[str]:
    """Why ``engine`` cannot run ``model`` here (a sentence that says what to do), or None if it can."""
    if model not in MODEL_NAMES:
        return f"Unknown model {model!r}: choose one of {', '.join(MODEL_NAMES)}."
    if engine == "auto":
        return None if resolve_engine(engine, model) else "No exact engine can run here."
    if engine not in ENGINES:
        return f"Unknown engine {engine!r}: choose auto or one of {', '.join(ENGINES)}."
    refused = refused_engine(engine, model)
    if refused:
        return refused
    if engine == "bf16" and not native_bf16():
        return ("The bf16 engine needs a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16); "
                "this one has neither. Use the default engine, auto (the fastest exact one).")
    missing = [m for m in _needs(engine) if importlib.util.find_spec(m) is None]
    if missing:
        return f"The {engine} engine needs the packages {' and '.join(missing)}: {INSTALL_HINT}."
    return None


def auto_order(flags: Optional[FrozenSet[str]] = None, model: str = MIDAS_SMALL.name) -> Tuple[str, ...]:
    """The exact engines ``auto`` tries for ``model``, fastest first on this CPU (AVX-512, AVX2 only, or
    neither)."""
    flags = cpu_flags() if flags is None else flags
    if model == DAV2_SMALL:  # measured with AVX2 only (see AUTO_ORDER_DAV2)
        return AUTO_ORDER_DAV2 if "avx2" in flags else AUTO_ORDER_DAV2_OTHER
    if "avx512f" in flags:
        return AUTO_ORDER
    return AUTO_ORDER_AVX2 if "avx2" in flags else AUTO_ORDER_OTHER


def resolve_engine(engine: str, model: str = MIDAS_SMALL.name) -> Optional[str]:
    """The engine ``engine`` names: ``auto`` is the first of ``auto_order(model=model)`` this install
    can run (None if none can; the last, torchscript or eager, always can), any other name itself."""
    if engine != "auto":
        return engine
    return next((e for e in auto_order(model=model) if engine_problem(e, model) is None), None)


ONNX_OPSET = 17


def onnx_cache_key(weights_sha256: str) -> str:
    """What an exported model depends on: the weights, the exporter (torch's TorchScript-based one and
    its opset) and the onnx package it writes with. Any change gives another file name. Read from the
    installed packages' metadata: a start that finds its export cached never imports torch."""
    parts = [weights_sha256, f"torch {version('torch')}", f"onnx {version('onnx')}",
             f"torchscript-exporter opset {ONNX_OPSET}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def onnx_cache_path(folder: Path, weights_sha256: str, model: str = MIDAS_SMALL.name) -> Path:
    prefix = "depth_anything_v2_small" if model == DAV2_SMALL else "midas_small"
    return folder / f"{prefix}-{onnx_cache_key(weights_sha256)}.onnx"


def read_onnx(path: Path) -> Optional[bytes]:
    """A cached export's bytes, or None where there is none (or no readable folder)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    log.info("ONNX export reused from %s", path)
    return data


def save_cached(data: bytes, path: Path) -> None:
    """Keeps an export (or Depth Anything V2's position embedding beside it) for the next start, written
    atomically (a concurrent start writes the same bytes; either rename wins whole). An unwritable
    folder only costs the export each time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        log.info("saved %s", path)
    except OSError as exc:
        log.warning("%s not cached: cannot write %s (%s)", path.name, path.parent, exc.strerror or exc)


def positions_path(export: Path) -> Path:
    """Where Depth Anything V2's trained position embedding is kept beside its export: its runner feeds
    the graph the embedding resized to each input's grid (``app.depth.positions``), and a start that reads it
    from here instead of from the checkpoint never imports torch."""
    return export.with_name(export.stem + ".pos_embed.npy")


def save_positions(pos_embed: np.ndarray, export: Path) -> None:
    """``positions_path(export)``, written once (the embedding depends only on the weights, which the
    export's name pins)."""
    path = positions_path(export)
    if not path.is_file():
        buf = io.BytesIO()
        np.save(buf, np.asarray(pos_embed, np.float32), allow_pickle=False)
        save_cached(buf.getvalue(), path)


def read_positions(export: Path) -> Optional[np.ndarray]:
    """The embedding kept beside ``export``; None where there is none, or where it is damaged (then it is
    removed, so that the next start that loads the checkpoint writes it again)."""
    path = positions_path(export)
    try:
        pos = np.load(path, allow_pickle=False)
        if pos.shape != EMBED_SHAPE or pos.dtype != np.float32:
            raise ValueError(f"{pos.dtype} {pos.shape}, not the position embedding")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError) as exc:  # truncated, not .npy, or another array
        log.warning("%s unusable (%s): it is written again from the checkpoint", path, exc)
        _discard(path)
        return None
    return pos


def _discard(path: Path) -> None:
    """Removes a damaged cache file, so that the next start writes it again (as far as it can)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def runner_from_export(path: Path, engine: str, threads: int,
                       feed: Feed = None) -> Optional[Tuple[Runner, str]]:
    """``from_onnx`` on the export an earlier start saved at ``path``; None when there is none, or when it
    is damaged: then it is removed, so that the caller's export replaces it (it is written atomically,
    so only a damaged disk or a hand edit gets here)."""
    data = read_onnx(path)
    if data is None:
        return None
    try:
        return from_onnx(data, engine, threads, feed)
    except Exception as exc:  # noqa: BLE001 - each runtime raises its own types for a damaged model
        log.warning("cached ONNX export %s unusable (%s): exporting again", path, exc.__class__.__name__)
        _discard(path)
        return None


# the inputs of an exported graph for an image: the image alone by default (Depth Anything V2 adds its
# position embedding, see app.depth.torch_engines)
Feed = Optional[Callable[[np.ndarray], List[np.ndarray]]]


def _onnxruntime(onnx_model: bytes, threads: int, feed: Feed = None) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no busy-waiting between operators: the request threads' PNG encoding and the other workers
    # need those cores more than the network saves by spinning
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(onnx_model, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    inputs = feed or (lambda x: [x])
    return lambda x: session.run(None, dict(zip(names, inputs(x), strict=True)))[0]


def _import_openvino() -> Any:
    """``import openvino``, without its telemetry: importing openvino records a usage event in
    ~/intel and sends it to Intel's analytics unless the user opted out. Nothing here may leave the
    machine, so the telemetry package is hidden and openvino falls back to its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def _openvino(onnx_model: bytes, threads: int, precision: Optional[str] = None,
              feed: Feed = None) -> Tuple[Runner, str]:
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
    inputs = feed or (lambda x: [x])
    return (lambda x: request.infer(inputs(x))[0]), ("bf16" if precision == "bf16" else "fp32")


def from_onnx(onnx_model: bytes, engine: str, threads: int,
               feed: Feed = None) -> Tuple[Runner, str]:
    """A runner of ``engine`` (onnxruntime, openvino, openvino-fp32) for an exported model, and its
    precision."""
    if engine == "onnxruntime":
        return _onnxruntime(onnx_model, threads, feed), "fp32"
    return _openvino(onnx_model, threads, "f32" if engine == "openvino-fp32" else None, feed)
