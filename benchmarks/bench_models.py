"""Forward time of both models on every engine that runs each, in one run, against each model's official
eager code at the same input size (docs/engines-and-speed.md, "Depth Anything V2 Small").

    .venv/bin/python benchmarks/bench_models.py [--quick] [--threads N] [--dav2-weights PATH]

Input shapes are coffee.png's (600x400): MiDaS small at 256 and 384 px (256x160 and 384x256, its
upper-bound rule), Depth Anything V2 Small at 518 and 364 px (784x518 and 546x364, its lower-bound
rule). The baselines: MiDaS's ``eager`` engine (plain PyTorch, the official code's way) and Depth
Anything V2's ``official_style`` network (explicit attention, position embedding resized on every call).
Both use the tests' synthetic weights unless given real ones (same networks, same speed); Depth
Anything V2's are regenerated from the team's shared manifest. The calls are interleaved round by round
(``bench.interleaved_times``); each figure is the median of the rounds after 2 warm-up calls, each ratio
the median of the per-round ratios. A full run takes about 4 minutes on 2 idle cores, ``--quick`` about 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

# bench imports app.depth.model first, which sets OMP_WAIT_POLICY=PASSIVE before torch is imported: with torch
# imported first, its threads spin, and on a busy machine the PyTorch engines run several times slower
from bench import (ROOT, call, contention, fmt, interleaved_times, load_engines, machine, paired_ratio,
                   peak_rss_mb, photos, reset_peaks, start_server, stats, stop, worker_pids)

import torch  # after app.depth.model: see above
from app.depth.torch_engines import build_runner, configure_threads
from app.depth.model import resolve_weights
from app.depth.registry import MIDAS_SMALL
from app.depth.engines import (DAV2_SMALL, EXACT_ENGINES, EngineError, auto_order, engine_problem,
                               resolve_engine)
from app.depth.dav2 import DepthAnythingV2Small
from app.depth.registry import network_size

DAV2_MANIFEST = ROOT.parent / "shared/models/depth_anything_v2_small/state_dict_manifest.json"
COFFEE = (400, 600)  # coffee.png's height and width
MIDAS_SHAPES = {size: network_size(*COFFEE, size) for size in (256, 384)}
DAV2_SHAPES = {518: (518, 784), 364: (364, 546)}  # the official lower-bound resize of coffee.png
BASELINE = "official eager"
Runner = Callable[[np.ndarray], np.ndarray]


def dav2_engines(weights: Path, threads: int, onnx_cache: Path) -> Dict[str, Runner]:
    """The official-style eager network, then this project's network on each engine that runs it."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    engines: Dict[str, Runner] = {}
    for name in (BASELINE, "eager", "torchscript", "onnxruntime", "openvino-fp32"):
        engine = "eager" if name == BASELINE else name
        problem = engine_problem(engine, DAV2_SMALL)
        if problem:
            print(f"# depth-anything-v2-small, {engine}: skipped. {problem}")
            continue
        net = DepthAnythingV2Small(official_style=name == BASELINE).eval()
        net.load_state_dict(state, strict=True)
        t = time.perf_counter()
        engines[name] = build_runner(net, engine, threads, weights_sha256="bench", onnx_cache=onnx_cache)[0]
        print(f"# depth-anything-v2-small, {name}: compiled in {time.perf_counter() - t:.1f} s")
    return engines


def table(model: str, engines: Dict[str, Runner], shapes: Dict[int, Tuple[int, int]], base: str,
          rounds: Dict[int, int]) -> Dict[int, Dict[str, Tuple[float, float]]]:
    """Prints and returns, per input size, each engine's median ms and its ratio to ``base``."""
    print(f"\n{'model':24s} {'size':>4} {'input':>8} {'engine':15s} {'median':>8} {'p10..p90':>15} "
          f"{'vs official':>9} {'rounds':>6}   (ms; after 2 warm-up calls)")
    rng = np.random.default_rng(0)
    out: Dict[int, Dict[str, Tuple[float, float]]] = {}
    chosen = resolve_engine("auto", model)
    for size, (h, w) in shapes.items():
        n = rounds[size]
        with torch.inference_mode():
            times = interleaved_times(engines, rng.normal(size=(1, 3, h, w)).astype(np.float32), n)
        out[size] = {}
        for name, ts in times.items():
            ratio = paired_ratio(times, name, base)
            out[size][name] = (stats(ts)[0], ratio)
            print(f"{model:24s} {size:>4} {f'{w}x{h}':>8} {name:15s} {fmt(stats(ts))} {ratio:8.2f}x {n:>6}")
        exact = {e: r for e, (_, r) in out[size].items() if e in EXACT_ENGINES}
        fastest = min(exact, key=exact.__getitem__)
        print(f"{'':24s} {size:>4} default: auto -> {chosen} (first of {', '.join(auto_order(model=model))} "
              f"that runs here), {exact.get(chosen, float('nan')):.2f}x; fastest exact engine measured: "
              f"{fastest}, {exact[fastest]:.2f}x")
    return out


def serving_table(midas: Path, dav2: Path, cache: Path, runs: int) -> None:
    """``depthmap serve`` with both models (one worker, engine auto): its RSS at start and after each
    model's requests, and each whole request (coffee.png, the three views as PNG in JSON) over its own
    forward pass."""
    import statistics

    import requests

    print(f"\n## Serving both models: 1 worker, engine auto, POST /api/v1/depth of coffee.png (3 views), "
          f"median of {runs}; RSS / peak RSS of the worker after each model's requests")
    coffee = photos()["coffee"]
    with tempfile.TemporaryFile() as log:
        proc, url, ready = start_server(midas, 1, "auto", log, cache, {
            "DEPTHMAP_MODELS": f"{MIDAS_SMALL.name},{DAV2_SMALL}", "DAV2_WEIGHTS": str(dav2)})
        try:
            health = requests.get(url + "/healthz", timeout=10).json()
            pids = worker_pids(proc.pid)
            start = max(peak_rss_mb(pid)[0] for pid in pids)
            engines = ", ".join(f"{m['name']} {m['engine']}" for m in health["models"])
            print(f"/healthz after {ready:.1f} s ({engines}); RSS at start {start:.0f} MB")
            reset_peaks(pids)
            for model, size in ((MIDAS_SMALL.name, 256), (DAV2_SMALL, 364), (DAV2_SMALL, 518)):
                whole, ratios = [], []
                for i in range(runs):
                    t = time.perf_counter()
                    photo = coffee + bytes([i])  # a new upload each time, not a cached result
                    body = call("POST", url + "/api/v1/depth", files={"image": ("c.png", photo)},
                                data={"model": model, "size": str(size)}).json()
                    whole.append(time.perf_counter() - t)
                    ratios.append(whole[-1] * 1000 / body["timings_ms"]["infer"])
                rss, peak = max(peak_rss_mb(pid) for pid in pids)
                print(f"{model:24s} {size:>4}: whole request {statistics.median(whole) * 1000:7.0f} ms, "
                      f"{statistics.median(ratios):.2f}x its forward pass; worker RSS {rss:.0f} / peak "
                      f"{peak:.0f} MB")
        finally:
            stop(proc)


def video_table(dav2: Path, threads: int, cache: Path) -> None:
    """Depth Anything V2 Small on a 2 s 1280x720 clip at 30 fps (60 frames) in-process, heatmap view, one
    depth range for the clip (two passes): frames per second at 364 and 518 px."""
    from support.clips import write_clip

    from app.depth.model import DepthModel
    from app.depth.registry import DEPTH_ANYTHING_V2_SMALL
    from app.options import Options, VideoOptions
    from app.imaging.video import process_video

    print("\n## Video with Depth Anything V2 Small: 60 frames of 1280x720, heatmap, --norm clip")
    model = DepthModel.load(dav2, threads=threads, warm_up=False, onnx_cache=cache,
                            model=DEPTH_ANYTHING_V2_SMALL)
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        src = write_clip(Path(tmp) / "clip.mp4", (np.roll(base, 8 * i, axis=1) for i in range(60)), fps=30)
        for size in (364, 518):
            t = time.perf_counter()
            result = process_video(src, Path(tmp) / f"out{size}.mp4", model,
                                   Options(model=DAV2_SMALL, size=size), VideoOptions())
            took = time.perf_counter() - t
            print(f"{DAV2_SMALL} {size}: {result.frames} frames in {took:.1f} s, "
                  f"{result.frames / took:.2f} frames/s (engine {model.engine})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about 2 minutes)")
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: all CPUs)")
    ap.add_argument("--no-serve", action="store_true", help="skip the server and video runs")
    ap.add_argument("--midas-weights", default=None, help="MiDaS small checkpoint (default: synthetic)")
    ap.add_argument("--dav2-weights", default=None,
                    help="Depth Anything V2 Small checkpoint (default: synthetic, from the shared manifest)")
    args = ap.parse_args()
    midas_rounds = {256: 10, 384: 8} if args.quick else {256: 30, 384: 20}
    dav2_rounds = {518: 3, 364: 5} if args.quick else {518: 7, 364: 11}
    threads = configure_threads(args.threads)

    from support.synthetic import write_dav2_synthetic_weights, write_synthetic_weights

    with tempfile.TemporaryDirectory() as tmp:
        midas = (resolve_weights(args.midas_weights) if args.midas_weights else write_synthetic_weights(
            ROOT / "tests/fixtures/state_dict_manifest.json", Path(tmp) / "midas.pt"))
        dav2: Optional[Path] = Path(args.dav2_weights) if args.dav2_weights else None
        if dav2 is None and DAV2_MANIFEST.is_file():
            dav2 = write_dav2_synthetic_weights(DAV2_MANIFEST, Path(tmp) / "dav2.pt")
        print(f"# {machine()}\n# {threads} threads; weights: {midas.name}, {dav2.name if dav2 else 'none'}"
              f"\n# before: {contention()}")
        results: List[Tuple[str, Dict]] = []
        engines = load_engines(midas, threads, Path(tmp) / "onnx")
        named = {("official eager" if k == "eager" else k): v for k, v in engines.items()}
        results.append((MIDAS_SMALL.name,
                        table(MIDAS_SMALL.name, named, MIDAS_SHAPES, BASELINE, midas_rounds)))
        del engines
        if dav2 is None:
            print(f"# depth-anything-v2-small: skipped, no weights and no {DAV2_MANIFEST}")
        else:
            engines = dav2_engines(dav2, threads, Path(tmp) / "onnx")
            results.append((DAV2_SMALL, table(DAV2_SMALL, engines, DAV2_SHAPES, BASELINE, dav2_rounds)))
        if dav2 is not None and not args.no_serve:
            serving_table(midas, dav2, Path(tmp) / "cache", 3 if args.quick else 5)
            video_table(dav2, threads, Path(tmp) / "cache" / "onnx")
        print(f"# after: {contention()}")
    print("\n## Summary: median ms (ratio to the official eager at the same size)")
    for model, sizes in results:
        for size, row in sizes.items():
            cells = [f"{engine} {ms:.0f} ({ratio:.2f}x)" for engine, (ms, ratio) in row.items()]
            print(f"{model:24s} {size:>4}: " + ", ".join(cells))


if __name__ == "__main__":
    try:
        main()
    except EngineError as exc:
        sys.exit(str(exc))
