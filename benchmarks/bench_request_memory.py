"""What one request costs a worker in memory: the peak RSS increase of the worst request of each route.

    .venv/bin/python benchmarks/bench_request_memory.py [--weights PATH] [--side 4096] [--only NAME...]

Starts ``depthmap serve`` (one worker, its default settings, results in a folder of /dev/shm as the
default store's), uploads a photo of ``--side`` × ``--side`` noise (4096 × 4096 = 16.8 MP: the largest
working size at the default ``DEPTHMAP_MAX_SIDE``; noise makes the largest PNGs), then sends each
route's worst request one at a time and prints, per request, the worker's peak RSS over its RSS just
before (``VmHWM`` after resetting it through ``/proc/PID/clear_refs``), the answer's size and the time.
Synthetic weights unless ``--weights`` (the same network, so the same memory). The target: no request
raises the worker's peak by more than 600 MB (``TARGET_MB``). Needs root or the server's own user
(``clear_refs``), and the ``test`` extra (requests, PyAV for the video row).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from bench import peak_rss_mb, reset_peaks, start_server, stop, worker_pids  # noqa: E402

TARGET_MB = 600
CHUNK = 1 << 20


def noise_jpeg(side: int, seed: int = 0) -> bytes:
    """A ``side`` × ``side`` JPEG of colour noise (the largest PNGs of every view)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def flat_png(side: int, shade: int) -> bytes:
    """A ``side`` × ``side`` PNG of a gradient (a few KB: many fit in one request body)."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = ((ramp[None, :] + ramp[:, None] + shade) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.dstack([pixels] * 3)).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


class Bench:
    """The server, its worker and the photo's result."""

    def __init__(self, url: str, master: int, photo: bytes) -> None:
        import requests

        self.session = requests.Session()
        self.url, self.master, self.photo = url, master, photo
        self.owner: Dict[str, str] = {}  # the X-Owner-Token of the photo's upload, where the server gives one
        self.rows: List[Tuple[str, str, float, float, float, int]] = []

    def worker(self) -> int:
        pids = worker_pids(self.master)
        assert len(pids) == 1, pids
        return pids[0]

    def depth_id(self) -> str:
        """The photo's depth_id: its earlier result, or a new one if the store let that go (the default
        budget keeps one 16 MP result)."""
        r = self.session.post(self.url + "/api/v1/depth", files={"image": ("noise.jpg", self.photo)},
                              data={"views": "none"}, headers=self.owner, timeout=600)
        r.raise_for_status()
        if r.json().get("owner_token"):
            self.owner = {"X-Owner-Token": r.json()["owner_token"]}
        return r.json()["depth_id"]

    def measure(self, name: str, what: str, send: Callable[[], Any]) -> None:
        """One request: the worker's peak RSS over its RSS before, the answer's bytes and time."""
        pid = self.worker()
        time.sleep(0.5)  # the previous answer's buffers freed
        before, _ = peak_rss_mb(pid)
        reset_peaks([pid])
        t0 = time.perf_counter()
        r = send()
        size = 0
        for part in r.iter_content(CHUNK):
            size += len(part)
        seconds = time.perf_counter() - t0
        after, peak = peak_rss_mb(pid)
        if r.status_code >= 400:
            sys.exit(f"{name}: {r.status_code} {r.text[:300]}")
        self.rows.append((name, what, before, peak - before, seconds, size))
        print(f"| {name} | {what} | {before:.0f} | {peak - before:.0f} | {size / 1e6:.1f} MB | "
              f"{seconds:.1f} s |", flush=True)

    def get(self, name: str, path: str, what: str) -> None:
        depth_id = self.depth_id()
        self.measure(name, what, lambda: self.session.get(self.url + path.format(id=depth_id), stream=True,
                                                          timeout=900))


def routes(b: Bench, side: int) -> Dict[str, Callable[[], None]]:
    """Each route's worst request at the default limits."""
    def upload() -> None:
        b.session.delete(f"{b.url}/api/v1/depth/{b.depth_id()}", headers=b.owner, timeout=60)
        b.owner = {}
        b.measure("POST /depth", "the photo, all three views as PNG", lambda: b.session.post(
            b.url + "/api/v1/depth", files={"image": ("noise.jpg", b.photo)}, stream=True, timeout=900))

    def render() -> None:
        depth_id = b.depth_id()
        body = {"depth_id": depth_id, "upsample": "fgs"}
        b.measure("POST /render", "a new upsampling (fgs) of the cached result, all views",
                  lambda: b.session.post(b.url + "/api/v1/render", json=body, stream=True, timeout=900))

    def batch_zip() -> None:
        depth_id = b.depth_id()
        query = "&".join([f"depth_id={depth_id}"] * 20)
        b.measure("GET /batch.zip", "the same result named 20 times, all views",
                  lambda: b.session.get(f"{b.url}/api/v1/batch.zip?{query}", stream=True, timeout=900))

    def batch_post() -> None:
        photos = [("image", (f"p{i}.png", flat_png(side, i))) for i in range(20)]
        b.measure("POST /batch", f"20 different {side}×{side} photos (a few KB each), as a zip",
                  lambda: b.session.post(b.url + "/api/v1/batch", files=photos, data={"views": "all"},
                                         headers={"Accept": "application/zip"}, stream=True, timeout=1800))

    def video_zip() -> None:
        video_result_zip(b)

    made: Dict[str, Callable[[], None]] = {"upload": upload}
    for view in ("heatmap", "overlay", "gray", "photo"):
        made[view] = (lambda v=view: b.get(f"GET /{v}.png", f"/api/v1/depth/{{id}}/{v}.png", "full size"))
    made["clahe"] = lambda: b.get("GET /heatmap.png", "/api/v1/depth/{id}/heatmap.png?clahe=on&log=on&clip=5",
                                  "full size, CLAHE and log (the float path)")
    for ext, what in (("npy", "raw depth"), ("png", "16-bit PNG"), ("pfm", "PFM"), ("exr", "OpenEXR")):
        made[ext] = (lambda e=ext, w=what: b.get(f"GET .{e}", f"/api/v1/depth/{{id}}.{e}", w))
    for ext in ("ply", "glb"):
        made[ext] = (lambda e=ext: b.get(f"GET .{e}", f"/api/v1/depth/{{id}}.{e}?grid=2048",
                                         "grid 2048 (the most)"))
    made["zip"] = lambda: b.get("GET .zip", "/api/v1/depth/{id}.zip?grid=2048", "everything, grid 2048")
    for layout in ("sbs", "anaglyph-dubois"):
        made[layout] = (lambda lay=layout: b.get("GET /stereo.png",
                                                 f"/api/v1/depth/{{id}}/stereo.png?layout={lay}",
                                                 f"full size, {lay}"))
    made["normals"] = lambda: b.get("GET /normals.png", "/api/v1/depth/{id}/normals.png?normal_smooth=20",
                                    "full size, smoothing 20 (the most)")
    made["legend"] = lambda: b.get("GET /legend.json", "/api/v1/depth/{id}/legend.json?log=on&clip=20",
                                   "log, clip 20")
    made["preview"] = lambda: b.get("GET /preview.npy", "/api/v1/depth/{id}/preview.npy?max_side=8192",
                                    "max_side 8192 (full size)")
    made["metric"] = lambda: b.get("GET /metric.npy", "/api/v1/depth/{id}/metric.npy?scale=1&shift=0.1",
                                   "full size")
    made.update({"render": render, "batch.zip": batch_zip, "batch": batch_post, "video": video_zip})
    return made


def video_result_zip(b: Bench, frames: int = 60) -> None:
    """A 1280×720 clip's job with the 16-bit zip; the zip's download measured (the job itself runs in
    the video consumer, not in a request)."""
    from support.clips import write_clip

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", (rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
                                                   for _ in range(frames)))
        r = b.session.post(b.url + "/api/v1/video", files={"video": ("clip.mp4", clip.read_bytes())},
                           data={"depth_zip": "on"}, timeout=600)
    r.raise_for_status()
    job = r.json()["id"]
    deadline = time.monotonic() + 1800
    while (state := b.session.get(f"{b.url}/api/v1/jobs/{job}", timeout=60).json()["state"]) != "done":
        if state in ("failed", "cancelled") or time.monotonic() > deadline:
            sys.exit(f"the video job did not finish: {state}")
        time.sleep(1)
    b.measure("GET /jobs/…/depth.zip", f"a {frames}-frame 1280×720 job's 16-bit zip", lambda: b.session.get(
        f"{b.url}/api/v1/jobs/{job}/depth.zip", stream=True, timeout=600))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights")
    ap.add_argument("--side", type=int, default=4096, help="side of the square noise photo")
    ap.add_argument("--only", nargs="*", help="route keys to measure (default: all)")
    args = ap.parse_args()
    weights = args.weights
    if not weights:
        from support.synthetic import write_synthetic_weights

        weights = str(write_synthetic_weights(ROOT / "tests/fixtures/state_dict_manifest.json",
                                              Path(tempfile.mkdtemp()) / "synthetic.pt"))
    photo = noise_jpeg(args.side)
    with tempfile.TemporaryFile() as log:
        proc, url, _ = start_server(Path(weights), 1, "auto", log)
        try:
            bench = Bench(url, proc.pid, photo)
            print(f"# {args.side}×{args.side} noise photo ({args.side ** 2 / 1e6:.1f} MP, JPEG "
                  f"{len(photo) / 1e6:.1f} MB); one worker, default settings; MB = 2^20 bytes")
            print("| route | request | worker RSS before (MB) | peak increase (MB) | answer | time |")
            print("|---|---|---|---|---|---|")
            table = routes(bench, args.side)
            for key in args.only or table:
                table[key]()
            worst = max(bench.rows, key=lambda row: row[3])
            verdict = "met" if worst[3] <= TARGET_MB else "NOT MET"
            print(f"\nlargest increase: {worst[0]} ({worst[1]}), {worst[3]:.0f} MB; target "
                  f"<= {TARGET_MB} MB: {verdict}")
            print(json.dumps({row[0] + " " + row[1]: round(row[3]) for row in bench.rows}))
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
