"""The speed benchmark: every figure behind docs/engines-and-speed.md, "Speed", measured in one run.

    .venv/bin/python benchmarks/bench.py [--weights PATH] [--quick] [--no-serve] [--sizes 256 384 512]

Needs the ``test`` extra (requests); the onnxruntime and openvino rows, and the OpenVINO bf16 reference
the fast-mode target is measured against, need the ``fast`` extra (``pip install -e ".[test,fast]"``).
Without ``--weights`` (or ``MIDAS_WEIGHTS``) it uses the tests' synthetic weights: the same network,
so the same speed. A full run takes about 4 minutes on 2 idle cores, ``--quick`` about 2 (10 under heavy
load from other jobs).

1. Forward pass of every engine at 256/384/512 px, the calls interleaved round by round (each round in
   a new order) so that a busy moment on a shared machine hits every engine alike; median, p10..p90,
   and each engine's median ratio to the official-style eager model and to OpenVINO bf16, taken
   within each round.
2. A whole request in-process (``DepthService``, as the server runs it) for the sample photos and a
   12 MP JPEG: decode, preprocess, infer, upsample, render and PNG-encode all three views; the total
   over the bare forward pass of the same request. 2b: the 12 MP JPEG the page's way (inference, then
   the depth and photo previews the page draws its first view from) and the API's way in each encoding
   (the earlier OpenCV PNG, the ISA-L PNG, JPEG, and WebP, which was measured and not kept), each over
   the forward pass; and decoding the JPEG at full size against libjpeg's reduced sizes.
3. Re-rendering a cached 12 MP result with a new colormap: all three views or one, full size or the
   page's preview (at most 1600 px).
4. ``depthmap serve`` with 1 and 2 workers: time to the first answer, requests/s with 4 clients, and
   RSS at start and the peak of a worker for a 12 MP photo the page's way and the API's way (each from
   a clean start: the other's result deleted, the peak counter reset).
5. The speed targets, each with its measured figure and whether it is met: the default engine at most
   0.4x eager, the fast engines at most 1.5x OpenVINO bf16, a whole request at most 1.3x its bare
   forward pass, a re-render at most 50 ms, a worker at most 600 MB.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import io
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app.depth.model import DepthModel, resolve_weights  # noqa: E402
from app.depth.engines import (AUTO_ORDER, ENGINES, EXACT_ENGINES, EngineError, auto_order, cpu_flags,  # noqa: E402
                         engine_problem, resolve_engine)
from app.options import COLORMAPS, Options  # noqa: E402
from app.imaging.pipeline import VIEWS, colorize, decode, display, encode, encode_png, iter_views  # noqa: E402
from app.serving.service import DepthService  # noqa: E402
from app.serving.store import FileStore  # noqa: E402

Stats = Tuple[float, float, float]
TARGETS: List[Tuple[str, str, str]] = []  # (target, measured, verdict), printed at the end


def stats(xs: Sequence[float]) -> Stats:
    """Median, 10th and 90th percentile."""
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=10, method="inclusive")
    return statistics.median(xs), q[0], q[-1]


def fmt(s: Stats) -> str:
    return f"{s[0]:8.1f} {s[1]:7.1f}..{s[2]:<7.1f}"


def target(name: str, value: float, limit: float, unit: str = "x") -> None:
    TARGETS.append((name, f"{value:.2f}{unit} (target <= {limit:g}{unit})",
                    "met" if value <= limit else "NOT met"))


def contention() -> str:
    load = os.getloadavg()
    try:
        some = Path("/proc/pressure/cpu").read_text().split()[1]  # avg10=..: % of time a task waited
    except OSError:
        some = "avg10=?"
    return f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, CPU pressure {some} %"


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    import torch

    versions = [f"torch {torch.__version__}"]
    for dist in ("onnxruntime", "openvino"):  # without importing openvino: that would report usage
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} not installed")
    return (f"{datetime.date.today()}, {model}, {len(os.sched_getaffinity(0))} CPUs, {' '.join(isa)}; "
            f"{platform.python_version()}, {', '.join(versions)}")


# 1. forward pass -------------------------------------------------------------------------------------

def load_engines(weights: Path, threads: Optional[int],
                 onnx_cache: Path) -> Dict[str, Callable[[np.ndarray], np.ndarray]]:
    engines: Dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for engine in ("eager",) + tuple(e for e in ENGINES if e != "eager"):
        problem = engine_problem(engine)
        if problem:
            print(f"# {engine}: skipped. {problem}")
            continue
        t = time.perf_counter()
        model = DepthModel.load(weights, threads=threads, engine=engine, warm_up=False, onnx_cache=onnx_cache)
        if engine == "openvino" and model.precision == "fp32":
            print("# openvino: computes in fp32 on this CPU, the same as openvino-fp32; not measured twice")
            continue
        name = f"{engine} ({model.precision})" if engine == "openvino" else engine
        engines[name] = model
        print(f"# {name}: loaded and compiled in {time.perf_counter() - t:.1f} s")
    return engines


def onnx_engine() -> Optional[str]:
    """The ONNX-based exact engine whose start-up the cached export shortens: the default where it is one."""
    return next((e for e in AUTO_ORDER if e != "torchscript" and engine_problem(e) is None), None)


def load_times(weights: Path, threads: Optional[int], onnx_cache: Path) -> Dict[str, float]:
    """Seconds to load and compile the first ONNX-based exact engine in-process (no warm-up), without
    and then with the cached ONNX export."""
    out: Dict[str, float] = {}
    engine = onnx_engine()
    if engine is None:
        return out
    for label in ("no cached export", "cached export"):
        t = time.perf_counter()
        DepthModel.load(weights, threads=threads, engine=engine, warm_up=False, onnx_cache=onnx_cache)
        out[f"{engine}, {label}"] = time.perf_counter() - t
    return out


def paired_ratio(times: Dict[str, List[float]], name: str, base: str) -> Optional[float]:
    """Median over rounds of this engine's time over the base's in the same round."""
    if base not in times:
        return None
    return statistics.median(a / b for a, b in zip(times[name], times[base], strict=True))


def interleaved_times(engines: Dict[str, Callable], x: np.ndarray, rounds: int) -> Dict[str, List[float]]:
    """Each engine's forward times on ``x`` in ms, after 2 warm-up calls each: ``rounds`` rounds, each
    calling every engine once in a new random order, so that a busy moment hits every engine alike."""
    for run in engines.values():
        run(x)
        run(x)
    times: Dict[str, List[float]] = {name: [] for name in engines}
    order = list(engines)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            t = time.perf_counter()
            engines[name](x)
            times[name].append((time.perf_counter() - t) * 1000)
    return times


def forward_table(engines: Dict[str, Callable], sizes: Sequence[int], rounds: int) -> Dict[int, Dict]:
    print(f"\n## 1. Forward pass, 1x3xSxS float32, {rounds} rounds after 2 warm-up calls, engines "
          "interleaved; ms; ratios are medians of the per-round ratios")
    print(f"{'size':>5} {'engine':18s} {'median':>8} {'p10..p90':>15} {'vs eager':>9} {'vs OV bf16':>11}")
    rng = np.random.default_rng(0)
    results: Dict[int, Dict] = {}
    for size in sizes:
        times = interleaved_times(engines, rng.normal(size=(1, 3, size, size)).astype(np.float32), rounds)
        results[size] = {}
        for name, ts in times.items():
            vs_eager, vs_ov = paired_ratio(times, name, "eager"), paired_ratio(times, name, "openvino (bf16)")
            results[size][name] = (stats(ts), vs_eager, vs_ov)
            ov = f"{vs_ov:10.2f}x" if vs_ov is not None else f"{'-':>11}"
            print(f"{size:>5} {name:18s} {fmt(stats(ts))} {vs_eager:8.2f}x {ov}")
        exact = {n: results[size][n][1] for n in results[size] if n in EXACT_ENGINES}
        fastest = min(exact, key=exact.__getitem__)
        chosen = resolve_engine("auto")
        slower = "" if fastest == chosen else f" (the default is {exact[chosen] / exact[fastest]:.2f}x it)"
        print(f"{size:>5} default: auto -> {chosen}, {exact[chosen]:.2f}x eager; fastest exact engine "
              f"measured: {fastest}, {exact[fastest]:.2f}x{slower}")
    return results


# 2. whole request, 3. re-render ----------------------------------------------------------------------

def photos() -> Dict[str, bytes]:
    out = {p.stem: p.read_bytes() for p in sorted((ROOT / "tests/fixtures/samples").iterdir())
           if p.suffix in (".png", ".jpg")}
    with Image.open(io.BytesIO(out["astronaut"])) as im:
        big = im.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    out["12 MP 4000x3000 JPEG"] = buf.getvalue()
    return out


STAGES = ("decode", "preprocess", "infer", "upsample", "render", "encode")


def scratch_store(max_bytes: int) -> FileStore:
    """The server's embedded result store, in a temporary folder of its own."""
    return FileStore(Path(tempfile.mkdtemp(prefix="bench-store-")), max_bytes, 3600)


def request_table(engine: str, model: DepthModel, samples: Dict[str, bytes], runs: int) -> Dict[str, float]:
    print(f"\n## 2. Whole request in-process, engine {engine}: decode -> ... -> 3 PNG views; median of "
          f"{runs}, ms")
    print(f"{'photo':22s}" + "".join(f"{s:>11}" for s in STAGES) + f"{'total':>9}{'total/infer':>12}")
    # evicts old uploads as the server would
    service = DepthService({model.name: model}, scratch_store(300 << 20))
    ratios: Dict[str, float] = {}
    for name, data in samples.items():
        rows: Dict[str, List[float]] = {s: [] for s in STAGES + ("total", "ratio")}
        for i in range(runs + 1):
            # a few random bytes after the image data (decoders ignore them): a new upload each time
            result = service.from_upload(data + os.urandom(8), "p", Options())
            _, times = service.render(result.entry, Options(), VIEWS)
            timings = {**result.timings_ms, **times}
            if i == 0:  # the first call at a new input shape is the engine's, not the request's
                continue
            for s in STAGES:
                rows[s].append(timings[s])
            total = sum(timings[s] for s in STAGES)
            rows["total"].append(total)
            rows["ratio"].append(total / timings["infer"])
        ratios[name] = statistics.median(rows["ratio"])
        print(f"{name:22s}" + "".join(f"{statistics.median(rows[s]):11.1f}" for s in STAGES)
              + f"{statistics.median(rows['total']):9.1f}{ratios[name]:11.2f}x")
    return ratios


def rerender_table(model: DepthModel, data: bytes, runs: int) -> Dict[str, float]:
    print(f"\n## 3. Re-render of a cached 12 MP result, a new colormap each time; median of {runs}, ms")
    service = DepthService({model.name: model}, scratch_store(1 << 30))
    entry = service.from_upload(data, "p", Options()).entry
    out: Dict[str, float] = {}
    cases = [("3 views, full size", VIEWS, None), ("heatmap, full size", ("heatmap",), None),
             ("3 views, page preview <= 1600 px", VIEWS, 1600)]
    # the page loads each view by its own GET, in parallel
    cases += [(f"{view}, page preview <= 1600 px", (view,), 1600) for view in VIEWS]
    print(f"{'what':34s}{'render':>9}{'encode':>9}{'total':>9}{'p10..p90':>17}")
    for label, views, max_side in cases:
        service.render(entry, Options(), views, max_side)  # the page makes the preview arrays once
        render, encode, total = [], [], []
        for i in range(runs):
            opts = Options(colormap=COLORMAPS[i % len(COLORMAPS)])
            t = time.perf_counter()
            _, times = service.render(entry, opts, views, max_side)
            total.append((time.perf_counter() - t) * 1000)
            render.append(times["render"])
            encode.append(times["encode"])
        s = stats(total)
        out[label] = s[0]
        print(f"{label:34s}{statistics.median(render):9.1f}{statistics.median(encode):9.1f}{s[0]:9.1f}"
              f"{s[1]:8.1f}..{s[2]:<8.1f}")
    # where the full-size heatmap's time goes
    parts: Dict[str, List[float]] = {"display levels": [], "colormap": [], "PNG": []}
    for i in range(runs):
        opts = Options(colormap=COLORMAPS[i % len(COLORMAPS)])
        t0 = time.perf_counter()
        levels = display(entry.depth, opts)
        t1 = time.perf_counter()
        heat = colorize(levels, opts.colormap)
        t2 = time.perf_counter()
        encode_png(heat, "heatmap")
        t3 = time.perf_counter()
        for part, a, b in (("display levels", t0, t1), ("colormap", t1, t2), ("PNG", t2, t3)):
            parts[part].append((b - a) * 1000)
    print("full-size heatmap, by step: " + ", ".join(
        f"{k} {statistics.median(v):.1f}" for k, v in parts.items()))
    return out


def opencv_png(img: np.ndarray, view: str) -> bytes:
    """The PNG encoder the views had before: OpenCV (libpng, zlib level 1) from a BGR copy."""
    import cv2

    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    flt = cv2.IMWRITE_PNG_FILTER_UP if view in ("overlay", "photo") else cv2.IMWRITE_PNG_FILTER_NONE
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, flt]
    return cv2.imencode(".png", bgr, params)[1].tobytes()


def pillow_webp(img: np.ndarray, view: str) -> bytes:
    """WebP at quality 90, Pillow's fastest method (0); gray would stay PNG as with JPEG."""
    if view == "gray":
        return encode_png(img, view)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "WEBP", quality=90, method=0)
    return buf.getvalue()


ENCODINGS: Dict[str, Callable[[np.ndarray, str], bytes]] = {
    "PNG, OpenCV (before)": opencv_png,
    "PNG, ISA-L (png)": lambda img, view: encode(img, view, "png"),
    "JPEG q90 (jpeg)": lambda img, view: encode(img, view, "jpeg"),
    "WebP q90 (not kept)": pillow_webp,
}


def big_photo_table(model: DepthModel, data: bytes, runs: int) -> Dict[str, float]:
    """The 12 MP JPEG the page's way and the API's way (each encoding), over the forward pass."""
    print(f"\n## 2b. 12 MP JPEG ({len(data) / 1e6:.1f} MB) in-process: the page's way to its first view and "
          f"the API's way in each encoding (3 full-size views); median of {runs}, ms; sizes of the 3 views")
    service = DepthService({model.name: model}, scratch_store(1 << 30))
    service.from_upload(data + os.urandom(8), "p", Options())  # the first call at this input shape
    page: Dict[str, List[float]] = {k: [] for k in ("decode", "infer", "upsample", "inference", "previews",
                                                    "total")}
    for _ in range(runs):
        t = time.perf_counter()
        result = service.from_upload(data + os.urandom(8), "p", Options())
        t1 = time.perf_counter()
        # what static/live.js draws the first view from: GET preview.npy and photo.png at 1600 px
        np.save(io.BytesIO(), service.preview(result.entry, 1600)[1], allow_pickle=False)
        service.photo_image(result.entry, 1600)
        t2 = time.perf_counter()
        for stage in ("decode", "infer", "upsample"):
            page[stage].append(result.timings_ms[stage])
        page["inference"].append((t1 - t) * 1000)
        page["previews"].append((t2 - t1) * 1000)
        page["total"].append((t2 - t) * 1000)
        service.store.delete(result.entry.id)
    med = {k: statistics.median(v) for k, v in page.items()}
    out = {"page": statistics.median(a / b for a, b in zip(page["total"], page["infer"], strict=True))}
    print(f"page, to the first view's data: {med['total']:.0f} ms = upload to depth_id "
          f"{med['inference']:.0f} "
          f"(decode {med['decode']:.0f}, forward {med['infer']:.0f}, upsample {med['upsample']:.0f}) + "
          f"1600 px previews {med['previews']:.0f}; {out['page']:.2f}x the forward pass")
    print(f"{'API, 3 full-size views':24s}{'render':>9}{'encode':>9}{'total':>9}{'total/infer':>12}"
          f"{'heatmap':>10}{'overlay':>10}{'gray':>10}")
    for label, fn in ENCODINGS.items():
        rows: Dict[str, List[float]] = {"render": [], "encode": [], "total": [], "ratio": []}
        sizes: Dict[str, int] = {}
        for _ in range(runs):
            result = service.from_upload(data + os.urandom(8), "p", Options())
            render = enc = 0.0
            t = time.perf_counter()
            for view, img in iter_views(result.entry.photo, result.entry.depth, Options(), VIEWS):
                t1 = time.perf_counter()
                render += t1 - t
                sizes[view] = len(fn(img, view))
                t = time.perf_counter()
                enc += t - t1
            render, enc = render * 1000, enc * 1000
            stages = sum(result.timings_ms[k] for k in ("decode", "preprocess", "infer", "upsample"))
            rows["render"].append(render)
            rows["encode"].append(enc)
            rows["total"].append(stages + render + enc)
            rows["ratio"].append((stages + render + enc) / result.timings_ms["infer"])
            service.store.delete(result.entry.id)
        out[label] = statistics.median(rows["ratio"])
        print(f"{label:24s}" + "".join(f"{statistics.median(rows[k]):9.0f}" for k in ("render", "encode",
                                                                                     "total"))
              + f"{out[label]:11.2f}x" + "".join(f"{sizes[v] / 1e6:8.2f}MB" for v in VIEWS))
    # decoding at the size the work needs: libjpeg's DCT scaling, through Pillow's draft mode
    times: Dict[str, List[float]] = {}
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
    for scale in (1, 2, 4, 8):
        for _ in range(runs):
            t = time.perf_counter()
            if scale == 1:
                decode(data)
            else:
                with Image.open(io.BytesIO(data)) as im:
                    im.draft("RGB", (width // scale, height // scale))
                    np.asarray(im)
            times.setdefault(f"1/{scale}", []).append((time.perf_counter() - t) * 1000)
    print("decoding the 12 MP JPEG: " + ", ".join(f"{k} {statistics.median(v):.0f} ms"
                                                  for k, v in times.items())
          + " (full size is what the depth map's size needs)")
    return out


# 4. serving ------------------------------------------------------------------------------------------

def worker_pids(master: int) -> List[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # field 4, ppid
            pids.append(int(stat.parent.name))
    return pids


def peak_rss_mb(pid: int) -> Tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    get = lambda key: int(re.search(rf"^{key}:\s+(\d+)", status, re.M).group(1)) / 1024  # noqa: E731
    return get("VmRSS"), get("VmHWM")


def reset_peaks(pids: Sequence[int]) -> None:
    """Starts each process's peak RSS (VmHWM) over from its current RSS."""
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def call(method: str, url: str, **kwargs: object) -> Any:
    """One request; a 503 (the server's queue is full) is retried after its Retry-After, for at most
    two minutes."""
    import requests

    deadline = time.monotonic() + 120
    while True:
        r = requests.request(method, url, timeout=300, **kwargs)
        if r.status_code != 503 or time.monotonic() > deadline:
            r.raise_for_status()
            return r
        time.sleep(float(r.headers.get("Retry-After") or 1))


def start_server(weights: Path, workers: int, engine: str, log, cache: Optional[Path] = None,
                 extra_env: Optional[Dict[str, str]] = None):
    """``depthmap serve`` on a free port (``extra_env`` added to its environment); returns the process,
    its URL and the seconds to the first answer of ``/healthz``."""
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPTHMAP_")}
    # a result store of its own (in memory, as the default's): the default one outlives the server, and
    # a later run's uploads of the same photos would be answered from it without inference
    data = tempfile.mkdtemp(prefix="bench-results-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    env.update(MIDAS_WEIGHTS=str(weights), DEPTHMAP_ACCESS_LOG="/dev/null", DEPTHMAP_ENGINE=engine,
               DEPTHMAP_DATA_DIR=data)
    env["PYTHONPATH"] = str(ROOT)  # this checkout's app, not whichever the venv's depthmap script finds
    if cache is not None:
        env["DEPTHMAP_CACHE"] = str(cache)
    env.update(extra_env or {})
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    # cwd too: gunicorn puts the working folder first on the workers' import path
    proc = subprocess.Popen([str(Path(sys.executable).parent / "depthmap"), "serve", "--bind",
                             f"127.0.0.1:{port}", "--workers", str(workers)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    proc.results_dir = data  # type: ignore[attr-defined] - removed by stop()
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return proc, url, time.perf_counter() - t0
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.perf_counter() - t0 > 180:
            log.seek(0)
            proc.kill()
            sys.exit(f"server did not start:\n{log.read().decode()}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    shutil.rmtree(proc.results_dir, ignore_errors=True)  # type: ignore[attr-defined]


def startup_table(weights: Path) -> Dict[str, float]:
    """``depthmap serve`` (1 worker) to its first /healthz answer, with the default engine and with the
    first ONNX-based one: in a new cache folder (the ONNX export is made and saved), and again in the
    same one (read back)."""
    import requests

    print("\n## 4a. Startup of depthmap serve, 1 worker, to the first /healthz answer")
    out = {}
    for asked in dict.fromkeys(filter(None, ["auto", onnx_engine()])):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryFile() as log:
            for label in ("no cached export", "cached export"):
                proc, url, ready = start_server(weights, 1, asked, log, Path(cache))
                engine = requests.get(url + "/healthz", timeout=10).json()["engine"]
                stop(proc)
                out[f"{asked} -> {engine}, {label}"] = ready
                print(f"engine {asked} -> {engine:14s} {label:18s} {ready:6.1f} s")
    return out


def serve_run(weights: Path, workers: int, engine: str, samples: Dict[str, bytes],
              requests_n: int, cache: Path) -> Dict[str, float]:
    with tempfile.TemporaryFile() as log:
        proc, url, ready = start_server(weights, workers, engine, log, cache)
        t0 = time.perf_counter() - ready
        try:
            while True:  # every worker loaded and warmed up, not just the one that answered
                log.seek(0)
                if log.read().decode().count("warm-up: ") >= workers:
                    break
                time.sleep(0.05)
            base = max(peak_rss_mb(pid)[0] for pid in worker_pids(proc.pid))
            call("POST", url + "/api/v1/depth", files={"image": ("p", samples["coffee"])})
            first = time.perf_counter() - t0

            done, lock = [0], threading.Lock()

            def client() -> None:
                while True:
                    with lock:
                        if done[0] >= requests_n:
                            return
                        done[0] += 1
                    call("POST", url + "/api/v1/depth",
                         files={"image": ("p", samples["coffee"] + os.urandom(8))})

            t = time.perf_counter()
            clients = [threading.Thread(target=client) for _ in range(4)]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            rate = requests_n / (time.perf_counter() - t)

            big = samples["12 MP 4000x3000 JPEG"]
            out = {"ready": ready, "first": first, "rate": rate, "base": base}
            if workers == 1:  # a re-render may reach another worker, which answers 404
                pids = worker_pids(proc.pid)
                # what the page asks for a 12 MP photo: inference only, then what it draws the views
                # from (static/live.js): the depth and photo previews; the time to the first view's data
                reset_peaks(pids)
                t = time.perf_counter()
                answer = call("POST", url + "/api/v1/depth", files={"image": ("p", big + os.urandom(8))},
                              data={"views": "none"}).json()
                depth_id, owner = answer["depth_id"], {"X-Owner-Token": answer["owner_token"]}
                call("GET", f"{url}/api/v1/depth/{depth_id}/preview.npy", params={"max_side": 1600})
                call("GET", f"{url}/api/v1/depth/{depth_id}/photo.png", params={"max_side": 1600})
                out["page_s"] = time.perf_counter() - t
                out["page_infer_s"] = answer["timings_ms"]["infer"] / 1000
                out["page"] = max(peak_rss_mb(pid) for pid in pids)
                # each API request from the same clean start: the earlier result deleted (the worker
                # keeps the last two results it used in memory), the peak counter reset
                for fmt in ("png", "jpeg"):
                    call("DELETE", f"{url}/api/v1/depth/{depth_id}", headers=owner)
                    reset_peaks(pids)
                    t = time.perf_counter()
                    r = call("POST", url + "/api/v1/depth", files={"image": ("p", big + os.urandom(8))},
                             data={"format": fmt})
                    body = r.json()
                    out[f"api_{fmt}_s"] = time.perf_counter() - t
                    out[f"api_{fmt}_ratio"] = out[f"api_{fmt}_s"] * 1000 / body["timings_ms"]["infer"]
                    out[f"api_{fmt}"] = max(peak_rss_mb(pid) for pid in pids)
                    out[f"api_{fmt}_mb"] = len(r.content) / 1e6
                    depth_id, owner = body["depth_id"], {"X-Owner-Token": body["owner_token"]}
            else:
                # the heaviest single request: 12 MP, all three views at full size, base64 in JSON
                for _ in range(workers):  # gunicorn may hand it to either worker
                    call("POST", url + "/api/v1/depth", files={"image": ("p", big + os.urandom(8))})
                out["api_png"] = max(peak_rss_mb(pid) for pid in worker_pids(proc.pid))
            return out
        finally:
            stop(proc)


def serve_table(weights: Path, engine: str, samples: Dict[str, bytes], requests_n: int, cache: Path) -> None:
    print(f"\n## 4. depthmap serve, engine {engine}: {requests_n} POST /api/v1/depth of coffee.png (3 views, "
          "JSON) from 4 client threads; then RSS / peak RSS of the worker for a 12 MP photo the way the page "
          "asks for it (inference, depth and photo previews), and 12 MP API requests (3 full-size views in "
          "JSON, PNG and JPEG), each from a clean start (2 workers: the larger, API PNG only)")
    print(f"{'workers':>7} {'healthz 200 after':>18} {'first depth map':>16} {'requests/s':>11} "
          f"{'RSS at start':>13} {'page flow':>16} {'API, PNG':>16} {'API, JPEG':>16}")
    rates = {}
    for workers in (1, 2):
        r = serve_run(weights, workers, engine, samples, requests_n, cache)
        rates[workers] = r["rate"]
        cells = [f"{r[k][0]:.0f} / {r[k][1]:.0f} MB" if k in r else "-"
                 for k in ("page", "api_png", "api_jpeg")]
        print(f"{workers:>7} {r['ready']:>16.1f} s {r['first']:>14.1f} s {r['rate']:>11.2f} "
              f"{r['base']:>10.0f} MB" + "".join(f"{c:>17}" for c in cells))
        if "page" in r:
            print(f"12 MP over HTTP: the page's first view's data after {r['page_s']:.2f} s "
                  f"({r['page_s'] / r['page_infer_s']:.1f}x its forward pass); the API's answer with 3 "
                  f"full-size views {r['api_png_s']:.2f} s as PNG ({r['api_png_mb']:.1f} MB of JSON), "
                  f"{r['api_jpeg_s']:.2f} s as JPEG ({r['api_jpeg_mb']:.1f} MB)")
            TARGETS.append(("12 MP photo by the page over HTTP: upload to the data of its first view",
                            f"{r['page_s']:.2f} s", "measured"))
            TARGETS.append(("serving: RSS of a worker at start", f"{r['base']:.0f} MB", "measured"))
            target("serving: peak RSS of a worker, 12 MP photo via the page", r["page"][1], 600, " MB")
            target("serving: peak RSS of a worker, 12 MP full-size API request, PNG", r["api_png"][1], 600,
                   " MB")
            target("serving: peak RSS of a worker, 12 MP full-size API request, JPEG", r["api_jpeg"][1], 600,
                   " MB")
    TARGETS.append(("serving: requests/s, 2 workers vs 1", f"{rates[2] / rates[1]:.2f}x", "measured"))


# 4c. the page's own drawing ----------------------------------------------------------------------------

# one control move as the page sees it: a new value, an input event; resolves with the page's own measure
# of the repaint (performance.now around the drawing in static/studio.js's show(): every shown view, and
# each view's own) plus the canvases' deferred drawing, and the time from the event to the frame after
# the repaint. The overlay's two drawImage calls are only recorded during show(); the canvas draws them
# when the frame is made. A frame callback registered after the page's own (which the input event
# registers) runs right after show() and makes every shown canvas draw at once (a one-pixel read), so
# that time is counted in the repaint too.
MOVE = """
const [name, value, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const form = document.getElementById('studio-form'), grid = document.getElementById('grid');
const before = grid.dataset.paints;
const times = () => Object.fromEntries([...grid.querySelectorAll('figure.live:not([hidden])')]
  .map(f => [f.dataset.view, Number(f.dataset.paintMs)]));
const el = form.elements[name];
if (el.type === 'checkbox') el.checked = value; else el.value = String(value);
el.dispatchEvent(new Event('input', {bubbles: true}));
const t0 = performance.now();
let deferred = 0;
requestAnimationFrame(() => {
  const t = performance.now();
  for (const c of grid.querySelectorAll('figure.live:not([hidden]) canvas')) {
    c.getContext('2d').getImageData(0, 0, 1, 1);
  }
  deferred = performance.now() - t;
});
(function wait() {
  // each view's time is 0 when the move left it as it was (not repainted)
  if (grid.dataset.paints !== before) {
    done([Number(grid.dataset.paintMs) + deferred, performance.now() - t0, times(), deferred]);
  } else requestAnimationFrame(wait);
})();
"""
# one round of moves: each option class, there and back
MOVES = [("colormap", c) for c in ("viridis", "turbo", "magma", "inferno")] + [
    ("contrast", 1.4), ("contrast", 1.0), ("brightness", 0.2), ("brightness", 0.0), ("invert", True),
    ("invert", False), ("log", True), ("log", False), ("clip", 3), ("clip", 1), ("alpha", 0.3),
    ("alpha", 0.5)]
# what the page shows: the views menu's choices
REPAINT_MODES = {"all": "3 views", "heatmap": "heatmap only", "overlay": "overlay only", "gray": "gray only"}


def p95(xs: Sequence[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def repaint_table(weights: Path, photo: bytes, rounds: int) -> Optional[Dict[str, float]]:
    """A 12 MP photo in the studio in headless Chromium (software rendering, as CI's): the page's repaint
    time per control move, its views drawn from the 1600 px depth preview, for each choice of shown views;
    per option class (a contrast move repaints every view, a colormap move all but gray, an opacity move
    only the overlay) and for each view. Returns the medians over all moves by label."""
    try:
        from support.browser import make_driver, upload, wait_settled
    except ImportError as exc:  # selenium: the test extra
        print(f"\n## 4c. skipped: {exc}")
        return None
    if not Path("/usr/bin/chromium").is_file():
        print("\n## 4c. skipped: no Chromium (apt install chromium chromium-driver)")
        return None
    print(f"\n## 4c. The page's own repaint per control move, 12 MP photo (1600 px preview), headless "
          f"Chromium; {rounds} rounds of {len(MOVES)} moves per choice of views; median / p95, ms "
          f"(target: 16 ms, one frame)")
    out: Dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as log:
        path = Path(tmp) / "big.jpg"
        path.write_bytes(photo)
        proc, url, _ = start_server(weights, 1, "auto", log, Path(tmp) / "cache")
        driver = make_driver()
        try:
            driver.set_script_timeout(60)
            driver.get(url + "/")
            t0 = time.perf_counter()
            upload(driver, path)
            wait_settled(driver, 300)
            first = time.perf_counter() - t0
            print(f"upload to the first view drawn: {first:.2f} s")
            out["first view"] = first
            size = driver.execute_script("const c = document.querySelector('#grid figure.live canvas');"
                                         "return c ? [c.width, c.height] : null")
            print(f"views drawn at {size[0]} x {size[1]} px" if size else "views NOT drawn in the page")
            classes = {"contrast": "contrast", "colormap": "colormap", "alpha": "opacity"}
            heads = ["every move", *(f"{c} move" for c in classes.values()), "event to frame"]
            print(f"{'shown':14s} " + " ".join(f"{h:>15s}" for h in heads)
                  + "  per view (median of its repaints; the canvases' deferred drawing, in every move)")
            for mode, label in REPAINT_MODES.items():
                driver.execute_script("const v = document.getElementById('studio-form').elements.views;"
                                      "v.value = arguments[0]; v.dispatchEvent(new Event('change', "
                                      "{bubbles: true}));", mode)
                wait_settled(driver, 60)
                paint: Dict[str, List[float]] = {"all": []}
                frame: List[float] = []
                deferred: List[float] = []
                views: Dict[str, List[float]] = {}
                for _ in range(rounds):
                    for name, value in MOVES:
                        p, f, each, late = driver.execute_async_script(MOVE, name, value)
                        deferred.append(late)
                        paint["all"].append(p)
                        paint.setdefault(name, []).append(p)
                        frame.append(f)
                        for view, ms in each.items():
                            if ms:
                                views.setdefault(view, []).append(ms)
                cells = [f"{statistics.median(xs):6.1f} / {p95(xs):5.1f}"
                         for xs in (paint["all"], *(paint[k] for k in classes), frame)]
                per_view = ", ".join([*(f"{v} {statistics.median(ms):.1f}" for v, ms in views.items()),
                                      f"deferred drawing {statistics.median(deferred):.1f}"])
                print(f"{label:14s} " + " ".join(f"{c:>15s}" for c in cells) + f"  {per_view}")
                out[label] = statistics.median(paint["all"])
                out[f"{label}, p95"] = p95(paint["all"])
        finally:
            driver.quit()
            stop(proc)
    return out


# -----------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.environ.get("MIDAS_WEIGHTS"),
                    help="checkpoint [env MIDAS_WEIGHTS; default: the tests' synthetic weights]")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and requests (about 2 minutes)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: all CPUs)")
    ap.add_argument("--no-serve", action="store_true", help="skip the server runs")
    args = ap.parse_args()
    rounds = {256: 12, 384: 8, 512: 6} if args.quick else {256: 30, 384: 16, 512: 10}
    runs = 4 if args.quick else 8

    with tempfile.TemporaryDirectory() as tmp:
        if args.weights:
            weights = resolve_weights(args.weights)
            kind = "weights " + weights.name
        else:
            from support.synthetic import write_synthetic_weights

            weights = write_synthetic_weights(ROOT / "tests/fixtures/state_dict_manifest.json",
                                              Path(tmp) / "synthetic.pt")
            kind = "synthetic weights (same network, same speed)"
        print(f"# {machine()}\n# {kind}\n# before: {contention()}")
        onnx_cache = Path(tmp) / "cache" / "onnx"  # what DEPTHMAP_CACHE=tmp/cache gives the servers
        engines = load_engines(weights, args.threads, onnx_cache)
        chosen = resolve_engine("auto")
        print(f"# default engine: auto -> {chosen} (the first of {', '.join(auto_order())} installed)")
        forward = {}
        for size in args.sizes:
            forward.update(forward_table(engines, [size], rounds.get(size, 8)))
        fresh = Path(tmp) / "fresh-onnx"
        loads = load_times(weights, args.threads, fresh)
        print("\n## 1b. Loading an ONNX engine in-process (no warm-up): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in loads.items()))
        samples = photos()
        default = engines[chosen]
        fast_name = "bf16" if "bf16" in engines else next(
            (n for n in engines if n.startswith("openvino (")), None)
        ratios = request_table(chosen, default, samples, runs)
        if fast_name:
            request_table(fast_name, engines[fast_name], samples, runs)
        big = big_photo_table(default, samples["12 MP 4000x3000 JPEG"], runs)
        rerender = rerender_table(default, samples["12 MP 4000x3000 JPEG"], runs * 2)
        del engines, default
        if not args.no_serve:
            for label, seconds in startup_table(weights).items():
                TARGETS.append((f"startup to /healthz, {label}", f"{seconds:.1f} s", "measured"))
            serve_table(weights, "auto", samples, 12 if args.quick else 24, Path(tmp) / "cache")
            repaint = repaint_table(weights, samples["12 MP 4000x3000 JPEG"], 2 if args.quick else 5)
            if repaint:
                for label in ("3 views", "heatmap only"):
                    target(f"page repaint per control move, 12 MP photo, {label}", repaint[label], 16, " ms")
        print(f"# after: {contention()}")

    print("\n## 5. Targets")
    f256 = forward.get(256, {})
    for size, row in forward.items():
        target(f"default engine (auto -> {chosen}) forward vs eager, {size} px", row[chosen][1], 0.4)
    for name in ("bf16", "onnxruntime"):
        if name in f256 and f256[name][2] is not None:
            target(f"fast mode {name} forward vs OpenVINO bf16, 256 px", f256[name][2], 1.5)
    samples_ratio = statistics.median(v for k, v in ratios.items() if not k.startswith("12 MP"))
    target("whole request (3 PNG views) vs bare forward, sample photos (median)", samples_ratio, 1.3)
    target("12 MP photo by the page: time to the first view's data vs bare forward", big["page"], 1.3)
    for label in ENCODINGS:
        target(f"12 MP photo by the API, 3 full-size views, {label}, vs bare forward", big[label], 1.3)
    target("re-render 12 MP, heatmap full size", rerender["heatmap, full size"], 50, " ms")
    target("re-render 12 MP, page preview of the heatmap", rerender["heatmap, page preview <= 1600 px"],
           50, " ms")
    for view in ("overlay", "gray"):
        target(f"re-render 12 MP, page preview of the {view}", rerender[f"{view}, page preview <= 1600 px"],
               50, " ms")
    target("re-render 12 MP, page preview of all 3 views in one call",
           rerender["3 views, page preview <= 1600 px"], 50, " ms")
    width = max(len(t[0]) for t in TARGETS)
    for name, measured, verdict in TARGETS:
        print(f"{name:{width}s}  {measured:34s} {verdict}")


if __name__ == "__main__":
    try:
        main()
    except EngineError as exc:
        sys.exit(str(exc))
