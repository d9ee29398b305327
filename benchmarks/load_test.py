"""Load test and soak of the real server, on loopback only, bounded in clients, time and requests.

    .venv/bin/python benchmarks/load_test.py [--weights PATH] [--clients 20] [--seconds 60] [--soak 1000]
    .venv/bin/python benchmarks/load_test.py --servers 2 --redis ...   # two server processes, one Redis

Starts ``depthmap serve`` (real gunicorn, the default settings unless ``--workers``/``--env`` say
otherwise) on a free loopback port, or ``--servers`` of them on ports of their own sharing a Redis that
``--redis`` starts (Debian's ``redis-server``), or uses ``--url`` (loopback addresses only). The clients
are spread over the servers, as a load balancer would. Without ``--weights`` (or ``MIDAS_WEIGHTS``) it
makes the synthetic weights of the tests, which cost the same to run as the official ones.

1. Warm-up: ``--warmup`` results from all clients, enough to fill the result cache to its byte bound
   (with a full cache, memory that still grows is a leak, not the cache doing its job).
2. Load: ``--clients`` concurrent API clients post sample photos to ``POST /api/v1/depth`` (all three
   views) for ``--seconds``. Every upload is unique (random bytes after the image data, which decoders
   ignore), so each one costs a real inference. Every 200 is checked (three PNG views at the photo's
   size); the only other acceptable answer is a 503 with Retry-After, which the clients honour (with
   jitter) before their next photo. ``--pages`` page-like clients run beside them: they wait in line
   for a refused photo as the page does (static/queue.js, ``page_client.py``), until it has its depth
   map.
3. Soak: ``--soak`` sequential requests, RSS sampled every 100.

Prints requests/s, p50/p95/p99 latency, answers by status, errors, and the servers' RSS (master and
workers, from /proc) after start, after warm-up, after the load and along the soak.
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import ipaddress
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urlparse

import numpy as np
import requests
from PIL import Image

import page_client

ROOT = Path(__file__).resolve().parents[1]
MAX_CLIENTS, MAX_SECONDS, MAX_REQUESTS = 64, 600, 20_000  # the bounds of one run
PNG_B64 = "data:image/png;base64,"


def sample_photos(max_side: Optional[int] = None) -> List[Tuple[str, bytes, Tuple[int, int]]]:
    """(name, bytes, (width, height)) of the test samples; with ``max_side``, shrunk to fit it (as JPEG),
    so a run is about the queue rather than decoding and upsampling big photos."""
    out = []
    for p in sorted((ROOT / "tests/fixtures/samples").iterdir()):
        if p.suffix in (".png", ".jpg"):
            data = p.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                if max_side and max(im.size) > max_side:
                    small = im.convert("RGB")
                    small.thumbnail((max_side, max_side))
                    buf = io.BytesIO()
                    small.save(buf, "JPEG", quality=90)
                    data, size = buf.getvalue(), small.size
                else:
                    size = im.size
            out.append((p.stem, data, size))
    return out


def unique(data: bytes) -> bytes:
    """The same image with 16 random bytes after its end: a new cache key, the same pixels."""
    return data + os.urandom(16)


def png_size(uri: str) -> Tuple[int, int]:
    """Width and height from a PNG data URI's IHDR, without decoding the image."""
    head = base64.b64decode(uri[len(PNG_B64):len(PNG_B64) + 32])
    return struct.unpack(">II", head[16:24])


@dataclass
class Tally:
    """What the clients saw; shared by the client threads."""

    latencies: Dict[str, List[float]] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    shown: Counter = field(default_factory=Counter)  # page clients: depth maps shown, by client number
    lock: threading.Lock = field(default_factory=threading.Lock)

    def merge(self, other: "Tally") -> None:
        for status, xs in other.latencies.items():
            self.latencies.setdefault(status, []).extend(xs)
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.shown.update(other.shown)

    def add(self, status: str, seconds: float, error: Optional[str] = None) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latencies.setdefault(status, []).append(seconds)
            if error:
                self.errors[error] += 1


def one_request(session: requests.Session, url: str, photo: Tuple[str, bytes, Tuple[int, int]],
                tally: Tally) -> float:
    """Posts one photo and checks the answer; returns the seconds to wait before the next (Retry-After)."""
    name, data, size = photo
    t0 = time.perf_counter()
    try:
        r = session.post(f"{url}/api/v1/depth", files={"image": (f"{name}.img", unique(data))}, timeout=120)
    except requests.RequestException as exc:
        tally.add("connection error", time.perf_counter() - t0, type(exc).__name__)
        return 1.0
    seconds = time.perf_counter() - t0
    error = None
    if r.status_code == 200:
        views = r.json().get("views", {})
        if sorted(views) != ["gray", "heatmap", "overlay"] or any(
                not v.startswith(PNG_B64) or png_size(v) != size for v in views.values()):
            error = "wrong result"
    elif r.status_code == 503:
        if not r.headers.get("Retry-After", "").isdigit() or r.json().get("error") != "busy":
            error = "503 without Retry-After"
    else:
        error = f"unexpected {r.status_code}"
    tally.add(str(r.status_code), seconds, error)
    retry = r.headers.get("Retry-After", "") if r.status_code == 503 else ""
    return float(retry) if retry.isdigit() else 0.0


def visit(session: requests.Session, url: str, photo: Tuple[str, bytes, Tuple[int, int]], tally: Tally,
          rng: random.Random, client: int) -> bool:
    """One photo in the page, the way static/studio.js, queue.js and live.js send it: ``POST
    /api/v1/depth`` with ``views=none``, waiting in line as the page does (``page_client.send``), then
    the two images the page draws its views from (``preview.npy`` and ``photo.png``). Each answer is
    tallied by status (the line's polls as ``poll 200``...), and the visit as a ``page visit`` (the
    seconds from the first try to the depth map) with the error a person would see if it did not end
    with its depth map. True when it did."""
    name, data, (width, height) = photo
    t0 = time.perf_counter()
    try:
        trip = page_client.send(session, url, "/api/v1/depth", "line", rng,
                                files={"image": (f"{name}.jpg", unique(data))}, data={"views": "none"},
                                headers={"Accept": "application/json"})
        r = trip.response
        for what, status, seconds in trip.answers:
            tally.add(str(status) if what == "send" else f"poll {status}", seconds)
        if r.status_code != 200:
            tally.add("page visit", time.perf_counter() - t0, f"page shows {r.status_code}")
            return False
        answer = r.json()
        base = f"{url}/api/v1/depth/{answer['depth_id']}"
        preview = session.get(f"{base}/preview.npy?max_side=256", timeout=60)
        photo_png = session.get(f"{base}/photo.png?max_side=256", timeout=60)
    except (requests.RequestException, ValueError, KeyError) as exc:
        tally.add("page visit", time.perf_counter() - t0, f"page shows {type(exc).__name__}")
        return False
    error = None
    if (answer.get("width"), answer.get("height")) != (width, height):
        error = "page shows a wrong size"
    elif preview.status_code != 200 or photo_png.status_code != 200:
        error = f"page shows {preview.status_code}/{photo_png.status_code} for its views"
    else:
        depth = np.load(io.BytesIO(preview.content), allow_pickle=False)
        with Image.open(io.BytesIO(photo_png.content)) as im:
            if depth.ndim != 2 or not np.isfinite(depth).all() or im.size[::-1] != depth.shape:
                error = "page shows a wrong depth map"
    tally.add("page visit", time.perf_counter() - t0, error)
    if error is None:
        with tally.lock:
            tally.shown[client] += 1
    return error is None


def run_clients(targets: List[Callable[[], None]]) -> float:
    """Runs every target in a thread of its own at once; the seconds until the last ended."""
    t0 = time.perf_counter()
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def api_clients(urls: List[str], clients: int, seconds: float, requests_total: int, photos: list,
                tally: Tally) -> List[Callable[[], None]]:
    """``clients`` API clients, spread over ``urls``, posting photos until ``seconds`` pass or
    ``requests_total`` are sent; a 503 is an answer, not retried (the next photo comes after
    Retry-After)."""
    clients = max(1, min(clients, MAX_CLIENTS))
    seconds = min(seconds, MAX_SECONDS) if seconds else MAX_SECONDS
    budget = min(requests_total, MAX_REQUESTS) if requests_total else MAX_REQUESTS
    lock, sent = threading.Lock(), [0]
    deadline = time.monotonic() + seconds

    def client(i: int) -> None:
        rng = random.Random(i)
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    if sent[0] >= budget:
                        return
                    sent[0] += 1
                wait = one_request(session, urls[i % len(urls)], rng.choice(photos), tally)
                # a polite client honours Retry-After (jittered, so the clients do not return in step)
                time.sleep(min(wait * rng.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))

    return [functools.partial(client, i) for i in range(clients)]


def page_clients(urls: List[str], clients: int, seconds: float, photos: list,
                 tally: Tally) -> List[Callable[[], None]]:
    """``clients`` pages, spread over ``urls``, each showing one photo after another (``visit``) for
    ``seconds``; a visit under way when the time is up is finished, as a person would wait for it."""
    clients = max(1, min(clients, MAX_CLIENTS))
    deadline = time.monotonic() + min(seconds, MAX_SECONDS)

    def client(i: int) -> None:
        rng = random.Random(1000 + i)
        with requests.Session() as session:
            while time.monotonic() < deadline:
                if not visit(session, urls[i % len(urls)], rng.choice(photos), tally, rng, i):
                    return  # a person who sees an error stops there
                time.sleep(rng.uniform(0.2, 1.0))  # a look at the result before the next photo

    return [functools.partial(client, i) for i in range(clients)]


def drive(url: str, clients: int, seconds: float = 0.0, requests_total: int = 0) -> Tuple[Tally, float]:
    """``clients`` API clients post photos until ``seconds`` pass or ``requests_total`` are sent."""
    tally = Tally()
    wall = run_clients(api_clients([url], clients, seconds, requests_total, sample_photos(), tally))
    return tally, wall


def drive_mixed(urls: List[str], apis: int, pages: int, seconds: float, max_side: Optional[int] = None,
                requests_total: int = 0) -> Tuple[Tally, Tally, float]:
    """``apis`` API clients and ``pages`` page clients at once for ``seconds`` (the API clients also at
    most ``requests_total`` requests), spread over ``urls``; the API clients' tally, the pages' tally and
    the wall time."""
    photos, api, page = sample_photos(max_side), Tally(), Tally()
    targets = api_clients(urls, apis, seconds, requests_total, photos, api) if apis else []
    targets += page_clients(urls, pages, seconds, photos, page) if pages else []
    return api, page, run_clients(targets)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def server_rss(master: int) -> Dict[str, float]:
    """RSS in MB of the gunicorn master and each worker (its children)."""
    out = {"master": rss_mb(master)}
    for task in Path(f"/proc/{master}/task").iterdir():
        for child in (task / "children").read_text().split():
            out[f"worker {child}"] = rss_mb(int(child))
    return out


def pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] * 1000 if xs else float("nan")


def report(title: str, tally: Tally, wall: float) -> None:
    total = sum(tally.statuses.values())
    ok = tally.latencies.get("200", [])
    print(f"\n## {title}: {total} requests in {wall:.1f} s = {total / wall:.2f} req/s "
          f"({len(ok) / wall:.2f} results/s)")
    print(f"{'answer':<18}{'count':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for status, n in sorted(tally.statuses.items()):
        xs = tally.latencies[status]
        print(f"{status:<18}{n:>7}{pct(xs, 50):>9.0f}{pct(xs, 95):>9.0f}{pct(xs, 99):>9.0f}")
    print("problems: " + (", ".join(f"{k} x{v}" for k, v in tally.errors.items()) or "none"))


def print_rss(label: str, rss: Dict[str, float]) -> None:
    print(f"RSS {label:<22}" + "  ".join(f"{k} {v:.0f} MB" for k, v in rss.items()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(weights: str, workers: int, extra_env: Dict[str, str], log: Path,
                 checkout: Path = ROOT) -> Tuple[str, subprocess.Popen]:
    """``depthmap serve`` running the code of ``checkout`` (this one unless told), its log in ``log``."""
    port = free_port()
    # results in a folder of this run's own
    env = {**os.environ, "MIDAS_WEIGHTS": weights, "DEPTHMAP_ACCESS_LOG": "/dev/null",
           "DEPTHMAP_DATA_DIR": str(log.parent / "data"), "PYTHONPATH": str(checkout), **extra_env}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "depthmap"), "serve", "--bind",
                                 f"127.0.0.1:{port}", "--workers", str(workers)],
                                # the working folder comes first on the server's import path
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=checkout)
    url, t0 = f"http://127.0.0.1:{port}", time.perf_counter()
    while True:
        try:
            requests.get(url + "/healthz", timeout=1).raise_for_status()
            return url, proc
        except requests.RequestException:
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                sys.exit(f"server did not start:\n{log.read_text()}")
            time.sleep(0.1)


def start_redis(folder: Path) -> Tuple[str, subprocess.Popen]:
    """Debian's ``redis-server`` on a free loopback port, memory only, with a password; its URL."""
    port, password = free_port(), "load-test"
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                             "--requirepass", password, "--save", "", "--appendonly", "no",
                             "--maxmemory", "1gb", "--maxmemory-policy", "volatile-lru"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    t0 = time.perf_counter()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"redis://:{password}@127.0.0.1:{port}/0", proc
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t0 > 20:
                sys.exit("redis-server did not start")
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.environ.get("MIDAS_WEIGHTS"))
    ap.add_argument("--url", action="append", default=[],
                    help="a running server on loopback, repeatable (then --workers/--env are unused)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes of each server")
    ap.add_argument("--servers", type=int, default=1,
                    help="server processes (depthmap serve, each on its own port), the clients spread over "
                    "them; more than one shares a Redis (--redis)")
    ap.add_argument("--redis", action="store_true",
                    help="start a redis-server for the run and give every server its DEPTHMAP_REDIS_URL")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra server environment, e.g. DEPTHMAP_INFERENCE_QUEUE=8")
    ap.add_argument("--clients", type=int, default=20, help="API clients")
    ap.add_argument("--pages", type=int, default=0,
                    help="page-like clients besides, during the load (they wait in line on 503)")
    ap.add_argument("--max-side", type=int, default=None, help="shrink the sample photos to fit this side")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=int, default=120,
                    help="results before the load: enough to fill the default 200 MB cache")
    ap.add_argument("--soak", type=int, default=1000, help="sequential requests after the load (0: none)")
    args = ap.parse_args()
    if args.servers > 1 and not args.redis and not any(e.startswith("DEPTHMAP_REDIS_URL=") for e in args.env):
        ap.error("--servers above 1 share results through Redis: add --redis")

    procs: List[subprocess.Popen] = []
    masters: List[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.url:
                urls = [u.rstrip("/") for u in args.url]
                for url in urls:
                    address = ipaddress.ip_address(socket.gethostbyname(urlparse(url).hostname or ""))
                    if not address.is_loopback:
                        sys.exit("refusing a load test against a non-loopback address")
            else:
                weights = args.weights
                if not weights:
                    sys.path.insert(0, str(ROOT / "tests"))
                    from support.synthetic import write_synthetic_weights

                    weights = str(write_synthetic_weights(ROOT / "tests/fixtures/state_dict_manifest.json",
                                                          Path(tmp) / "synthetic.pt"))
                    print("# synthetic weights (same architecture and cost as the official file)")
                extra = dict(e.split("=", 1) for e in args.env)
                if args.redis:
                    extra["DEPTHMAP_REDIS_URL"], redis_proc = start_redis(Path(tmp))
                    procs.append(redis_proc)
                urls = []
                for n in range(args.servers):
                    url, proc = start_server(weights, args.workers, extra, Path(tmp) / f"server-{n}.log")
                    urls.append(url)
                    procs.append(proc)
                    masters.append(proc.pid)
            run(args, urls, masters)
        finally:
            for proc in reversed(procs):  # the servers, then Redis
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)


def all_rss(masters: List[int]) -> Dict[str, float]:
    """``server_rss`` of every server, one name space (``s1 master``, ``s1 worker PID``... with several)."""
    if len(masters) == 1:
        return server_rss(masters[0])
    return {f"s{n + 1} {k}": v for n, m in enumerate(masters) for k, v in server_rss(m).items()}


def run(args: argparse.Namespace, urls: List[str], masters: List[int]) -> None:
    """The warm-up, the load and the soak against ``urls``; RSS of the ``masters``' processes along."""
    health = requests.get(urls[0] + "/healthz", timeout=10).json()
    print(f"# {', '.join(urls)}: {len(urls)} server(s) x {args.workers} worker(s), torch threads "
          f"{health['torch_threads']}, gate {health['gate']}, store {health['store']['backend']}")
    if masters:
        print_rss("after start", all_rss(masters))
    tally, wall = Tally(), 0.0
    while tally.statuses["200"] < args.warmup:  # results, not answers: the cache must be full
        more, _, seconds = drive_mixed(urls, max(1, args.clients), 0, 0, args.max_side,
                                       requests_total=max(1, args.clients) * 4)
        tally.merge(more)
        wall += seconds
    if args.warmup:
        report(f"warm-up ({args.clients} clients)", tally, wall)
    warm = all_rss(masters) if masters else {}
    if masters:
        print_rss("after warm-up", warm)
    tally, pages, wall = drive_mixed(urls, args.clients, args.pages, args.seconds, args.max_side)
    print(f"\n# load: {args.clients} API and {args.pages} page clients for {args.seconds:g} s"
          + (f", photos shrunk to {args.max_side} px" if args.max_side else ""))
    if args.clients:
        report(f"load ({args.clients} API clients, {args.seconds:g} s, {len(urls)} server(s))", tally, wall)
    if args.pages:
        report(f"the {args.pages} page clients meanwhile", pages, wall)
        print(f"pages that showed depth maps: {len(pages.shown)} of {args.pages}")
    if masters:
        after = all_rss(masters)
        print_rss("after load", after)
        growth = max(after[k] / warm[k] for k in warm if k in after)
        print(f"RSS after load / after warm-up (largest process ratio): {growth:.2f}")
    if args.soak:
        soak_rss = []
        for start in range(0, args.soak, 100):
            tally, wall = drive(urls[0], 1, requests_total=min(100, args.soak - start))
            bad = sum(v for k, v in tally.statuses.items() if k != "200")
            line = f"soak {start + 100:>5}: {100 / wall:.1f} req/s, non-200 {bad}"
            if masters:
                soak_rss.append(all_rss(masters))
                worst = max(v for k, v in soak_rss[-1].items() if "worker" in k)
                line += f", worker RSS {worst:.0f} MB"
            print(line)
    for url in urls:
        health = requests.get(url + "/healthz", timeout=10).json()
        print(f"# {url} after the run: store {health['store']}, gate {health['gate']}")


if __name__ == "__main__":
    main()
