"""Web benchmark: request latency split by stage, and re-render latency from the cache.

    .venv/bin/python benchmarks/bench_web.py --weights PATH [--runs 10]

Starts ``depthmap serve`` (the real gunicorn server) on a free loopback port, posts each sample photo
and a 12-megapixel JPEG made from one of them, and prints medians of the server's own stage timings
(``timings_ms``) next to the wall time the client saw. Each upload gets a few random bytes appended
after the image data (decoders ignore them) so that every run is a real inference, not a cache hit.
Then it re-renders the cached depth with a new colormap, through ``POST /api/v1/render`` (all three
views, JSON), ``GET /api/v1/depth/<id>/heatmap.png`` (one full-size view, as a download) and the same
with ``max_side=1600`` (the preview the page shows).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("decode", "preprocess", "infer", "upsample", "render", "encode", "total")
COLORMAPS = ("viridis", "jet", "magma", "turbo")


def start_server(weights: str, log: Path) -> tuple:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MIDAS_WEIGHTS": weights, "DEPTHMAP_ACCESS_LOG": "/dev/null"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "depthmap"), "serve", "--bind",
                                 f"127.0.0.1:{port}"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    while True:
        try:
            requests.get(url + "/healthz", timeout=1).raise_for_status()
            break
        except requests.RequestException:
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                sys.exit(f"server did not start:\n{log.read_text()}")
            time.sleep(0.1)
    print(f"# server ready {time.perf_counter() - t0:.1f} s after start (model load + compile + warm-up)")
    return url, proc


def photos() -> Dict[str, bytes]:
    out = {p.stem: p.read_bytes() for p in sorted((ROOT / "tests/fixtures/samples").iterdir())
           if p.suffix in (".png", ".jpg")}
    with Image.open(io.BytesIO(out["astronaut"])) as im:
        big = im.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    out["12MP (4000x3000 JPEG)"] = buf.getvalue()
    return out


def med(xs: List[float], width: int = 11) -> str:
    return f"{statistics.median(xs):{width}.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.environ.get("MIDAS_WEIGHTS"),
                    required="MIDAS_WEIGHTS" not in os.environ, help="checkpoint [env MIDAS_WEIGHTS]")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url, proc = start_server(str(Path(args.weights).resolve()), Path(tmp) / "server.log")
        try:
            print(f"\n## POST /api/v1/depth (all three views as PNG), median of {args.runs} runs, ms")
            print(f"{'photo':24s}{'size':>11s}" + "".join(f"{s:>11s}" for s in STAGES) + f"{'wall':>11s}")
            samples = photos()
            for name, data in samples.items():
                stages: Dict[str, List[float]] = {s: [] for s in STAGES}
                wall = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    r = requests.post(url + "/api/v1/depth", timeout=300,
                                      files={"image": ("p", data + os.urandom(8))})
                    wall.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                    body = r.json()
                    for s in STAGES:
                        stages[s].append(body["timings_ms"][s])
                dims = f"{body['width']}x{body['height']}"
                print(f"{name:24s}{dims:>11s}" + "".join(med(stages[s]) for s in STAGES) + med(wall))

            print(f"\n## re-render from the cache (new colormap each time), median of {args.runs} runs, ms")
            print(f"{'photo':24s}{'render':>11s}{'encode':>11s}{'wall':>11s}{'GET 1 view':>12s}"
                  f"{'GET preview':>13s}")
            for name, data in samples.items():
                # posted as is: earlier runs may have pushed it out of the (byte-bounded) cache
                depth_id = requests.post(url + "/api/v1/depth", files={"image": ("p", data)},
                                         data={"views": "none"}, timeout=300).json()["depth_id"]
                render, encode, wall, get, preview = [], [], [], [], []
                for i in range(args.runs):
                    cmap = COLORMAPS[i % len(COLORMAPS)]
                    t = time.perf_counter()
                    body = requests.post(url + "/api/v1/render", timeout=300,
                                         json={"depth_id": depth_id, "colormap": cmap}).json()
                    wall.append((time.perf_counter() - t) * 1000)
                    render.append(body["timings_ms"]["render"])
                    encode.append(body["timings_ms"]["encode"])
                    t = time.perf_counter()
                    requests.get(f"{url}/api/v1/depth/{depth_id}/heatmap.png", params={
                        "colormap": cmap, "contrast": str(1 + i / 100)}, timeout=300).raise_for_status()
                    get.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()  # what the page loads: the view at most 1600 px long
                    requests.get(f"{url}/api/v1/depth/{depth_id}/heatmap.png", params={
                        "colormap": cmap, "contrast": str(1 + i / 100), "max_side": "1600"},
                        timeout=300).raise_for_status()
                    preview.append((time.perf_counter() - t) * 1000)
                print(f"{name:24s}{med(render)}{med(encode)}{med(wall)}{med(get, 12)}{med(preview, 13)}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


if __name__ == "__main__":
    main()
