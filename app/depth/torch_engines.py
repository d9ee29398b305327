"""The torch side of the engines: a checkpoint strict-loaded into its network, the network run as it is
(eager), compiled (TorchScript) or exported to ONNX for ONNX Runtime and OpenVINO (whose runtimes are
in ``app.depth.model``).

Only what needs torch is here, so that a process whose engine reads a cached ONNX export never imports
torch (about 200 MB of a worker's memory): ``app.depth.model.DepthModel.load`` comes here only to build a
PyTorch engine or to make that export.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

# app.depth.engines first: it sets OMP_WAIT_POLICY, which libgomp reads once, when torch is imported
from .engines import (DAV2_SMALL, ONNX_OPSET, EngineError, Runner, engine_problem, from_onnx, onnx_cache_path,
                      read_onnx, refused_engine, runner_from_export, save_cached, save_positions)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn.utils.fusion import fuse_conv_bn_eval  # noqa: E402

from .cpus import usable_cpus  # noqa: E402
from .registry import MIDAS_SMALL, ModelSpec, WeightsError  # noqa: E402
from .midas import DepthwiseSeparable, InvertedResidual, MidasSmall  # noqa: E402
from .dav2 import DepthAnythingV2Small, PositionCache, WithPositions  # noqa: E402
from .positions import grid_of, positions_feed  # noqa: E402

log = logging.getLogger(__name__)

Network = Union[MidasSmall, DepthAnythingV2Small]


# loading -------------------------------------------------------------------------------------------------

def load_state_dict(path: Path, model: ModelSpec = MIDAS_SMALL) -> Dict[str, torch.Tensor]:
    """The checkpoint's tensors. Accepts a plain state_dict (official) or one wrapped under "model"."""
    try:
        # weights_only: a checkpoint is data, never code to run
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise WeightsError(f"Cannot read weights file {path}: {exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}. "
                           f"{model.how_to_fix(path)}") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # the official training scripts save {"model": ..., "optimizer": ...}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} is not a {model.title} state_dict. {model.how_to_fix(path)}")
    return obj


def new_network(model: ModelSpec = MIDAS_SMALL) -> Network:
    """``model``'s network with untrained weights."""
    return MidasSmall() if model is MIDAS_SMALL else DepthAnythingV2Small()


def load_network(path: Path, model: ModelSpec = MIDAS_SMALL) -> Network:
    """An eval-mode network of ``model`` with the file's weights, loaded with ``strict=True``."""
    net, state = new_network(model), load_state_dict(path, model)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise WeightsError(f"{path} does not fit {model.title}: "
                           f"{' '.join(line.strip() for line in first[:3])[:500]}. "
                           f"{model.how_to_fix(path)}") from None
    return net.eval()


def configure_threads(threads: Optional[int] = None) -> int:
    """Sets torch's intra-op thread count (default: the CPUs this process may use) and returns it."""
    n = threads or usable_cpus()  # a container's CPU quota included
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def network_model(net: Network) -> str:
    """The model name of a network object: ``midas-small`` or ``depth-anything-v2-small``."""
    return DAV2_SMALL if isinstance(net, DepthAnythingV2Small) else MIDAS_SMALL.name



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
# ``WithPositions`` for why); the TorchScript runner computes it once per grid size with ``PositionCache``,
# the ONNX runtimes' feed with ``app.depth.positions`` (NumPy)
DAV2_EXAMPLE = (1, 3, 364, 546)  # coffee.png's shape at 364 px; any multiples of 14 would do


def _dav2_example(positions: PositionCache) -> Tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(DAV2_EXAMPLE)
    return x, positions(*grid_of(x.shape[2], x.shape[3]))


def _inference(run: Runner) -> Runner:
    """``run`` under ``torch.inference_mode``: no autograd bookkeeping, nothing kept for a backward pass."""
    def inferred(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return run(x)
    return inferred


def _eager(net: Network) -> Runner:
    return _inference(lambda x: net(torch.from_numpy(x)).numpy())


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
    return _inference(lambda x: module(torch.from_numpy(x), positions(*grid_of(x.shape[2], x.shape[3])))
                      .numpy())


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
    return _inference(lambda x: module(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
                      .float().numpy())


def export_onnx(net: Network) -> bytes:
    """The network as an ONNX model with a free height and width (TorchScript-based exporter). Depth
    Anything V2's takes a second input, ``positions``: ``app.depth.positions.resize_positions(pos_embed,
    h // 14, w // 14)``."""
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



def cached_onnx(net: Network, weights_sha256: str, folder: Path) -> bytes:
    """The exported model, from ``folder`` when an earlier start wrote it there, else exported (2-5 s
    for MiDaS small, about 10 s for Depth Anything V2 Small) and written there for the next start.
    Depth Anything V2's trained position embedding is kept beside it (``save_positions``)."""
    path = onnx_cache_path(folder, weights_sha256, network_model(net))
    if isinstance(net, DepthAnythingV2Small):
        save_positions(_pos_embed(net), path)
    data = read_onnx(path)
    if data is None:
        t0 = time.perf_counter()
        data = export_onnx(net)
        log.info("ONNX export of %s: %.1f s", network_model(net), time.perf_counter() - t0)
        save_cached(data, path)
    return data


def _pos_embed(net: DepthAnythingV2Small) -> np.ndarray:
    return net.pretrained.pos_embed.detach().float().numpy()


def build_runner(net: Network, engine: str, threads: int, check: bool = True,
                 weights_sha256: Optional[str] = None,
                 onnx_cache: Optional[Path] = None) -> Tuple[Runner, str]:
    """The network (``MidasSmall`` or ``DepthAnythingV2Small``) compiled for ``engine`` (not ``auto``:
    see ``resolve_engine``), and the precision it computes in (fp32 or bf16). ``check=False`` skips the
    support check (tests build the bf16 engine on any CPU), not the engines refused for the network. The
    ONNX-based engines reuse the export in ``onnx_cache`` when ``weights_sha256`` is given."""
    model = network_model(net)
    problem = engine_problem(engine, model) if check else refused_engine(engine, model)
    if problem:
        raise EngineError(problem)
    if engine == "eager":
        return _eager(net), "fp32"
    if engine in ("torchscript", "bf16"):
        precision = "bf16" if engine == "bf16" else "fp32"
        return _traced(net, bf16=engine == "bf16"), precision
    # Depth Anything V2: the runner keeps its own copy of the trained position embedding, not the
    # network, and resizes it in NumPy, as a start from the cached export does without torch
    pos_embed = _pos_embed(net) if model == DAV2_SMALL else None
    feed = None if pos_embed is None else positions_feed(pos_embed)
    if weights_sha256 is None or onnx_cache is None:
        return from_onnx(export_onnx(net), engine, threads, feed)
    path = onnx_cache_path(onnx_cache, weights_sha256, model)
    if pos_embed is not None:
        save_positions(pos_embed, path)  # an export cached before the embedding was kept beside it
    saved = runner_from_export(path, engine, threads, feed)
    return saved or from_onnx(cached_onnx(net, weights_sha256, onnx_cache), engine, threads, feed)
