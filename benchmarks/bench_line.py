"""A fair line under load: ``--clients`` page clients (20) arrive evenly over ``--over`` seconds (2) at a
server whose workers have one inference slot each, and each sends one photo the page's way
(``--protocol``, see ``page_client.py``), waiting in line until it has its depth map.

    .venv/bin/python benchmarks/bench_line.py                                 # this checkout, 1 worker
    .venv/bin/python benchmarks/bench_line.py --workers 2                     # the line across workers
    .venv/bin/python benchmarks/bench_line.py --servers 2 --redis             # across hosts (one Redis)
    .venv/bin/python benchmarks/bench_line.py --checkout ../main --protocol jitter   # before the line
    .venv/bin/python benchmarks/bench_line.py --ops [--redis]                 # what the line costs

Prints each client's arrival, wait (first try to depth map), the requests it found ahead of it (sent
before it and not yet answered) and what it was told on the way, then p50 / p95 / max wait, one request's
time *t* (what the servers took per request in the same run: the first answer to the last, over the
requests between; beside it the mean time a depth map held its slot, ``timings_ms.total``), the order
violations (pairs answered in the reverse of their arrival order; and those overtaken by more than *t*),
and the worst margin to the target: no client waits longer than (requests ahead) × *t* + 2 s.
Every photo is unique (random bytes after the image data), so each costs a real inference.

``--ops`` prints instead what the line adds to each request that needs a slot (taking a place, entering,
leaving) on each backend: in memory, a file in /dev/shm as the data folder usually is, and Redis.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import requests
from redis import Redis
from PIL import Image

import page_client
from load_test import ROOT, start_redis, start_server

SLACK_S = 2.0  # the target's allowance beyond (requests ahead) x one request's time
WORKLOADS = ((1600, "384"), (2400, "512"), (4000, "512"))  # (photo width, input size), cheapest first


@dataclass
class Arrival:
    """One page client's photo: when it was sent and answered (seconds from the burst's start), the
    server's own time for it, and what the page was told on the way."""

    client: int
    sent: float
    done: float = float("nan")
    status: int = 0
    service_s: float = float("nan")
    answers: List[str] = field(default_factory=list)
    aheads: List[int] = field(default_factory=list)

    @property
    def wait(self) -> float:
        return self.done - self.sent


def burst_photo(side: int) -> bytes:
    """A textured JPEG ``side`` px wide: decoding and upsampling it keep a slot busy a little longer than
    the network alone, as a phone photo does."""
    y, x = np.mgrid[0:side * 2 // 3, 0:side]
    rgb = np.stack([(x // 7) % 256, (y // 5) % 256, ((x + 2 * y) // 11) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=88)
    return buf.getvalue()


def burst(urls: List[str], clients: int, over_s: float, photo: bytes, protocol: str,
          options: Dict[str, str]) -> List[Arrival]:
    """``clients`` pages, client i sending at i × over_s / clients (to ``urls[i % len(urls)]``), each one
    photo with ``options``; their arrivals, in client order."""
    out = [Arrival(i, i * over_s / clients) for i in range(clients)]
    t0 = time.monotonic() + 0.5

    def client(a: Arrival) -> None:
        time.sleep(max(0.0, t0 + a.sent - time.monotonic()))
        a.sent = time.monotonic() - t0
        with requests.Session() as session:
            trip = page_client.send(session, urls[a.client % len(urls)], "/api/v1/depth", protocol,
                                    random.Random(a.client),
                                    files={"image": ("p.jpg", photo + os.urandom(16))},
                                    data={**options, "views": "none"}, headers={"Accept": "application/json"})
        a.done = time.monotonic() - t0
        a.status = trip.response.status_code if trip.response is not None else 0
        a.answers = [f"{what} {status}" for what, status, _ in trip.answers]
        a.aheads = trip.aheads
        if a.status == 200:
            a.service_s = trip.response.json()["timings_ms"]["total"] / 1000

    threads = [threading.Thread(target=client, args=(a,), daemon=True) for a in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def ahead_of(arrivals: List[Arrival], a: Arrival) -> int:
    """The requests sent before ``a`` and not yet answered when it was sent."""
    return sum(1 for b in arrivals if b.sent < a.sent < b.done)


def pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


def summary(arrivals: List[Arrival]) -> Dict[str, float]:
    """The figures of a burst (see the module's docstring)."""
    waits = [a.wait for a in arrivals]
    dones = sorted(a.done for a in arrivals)
    t = (dones[-1] - dones[0]) / (len(dones) - 1)
    by_sent = sorted(arrivals, key=lambda a: a.sent)
    pairs = [(a, b) for i, a in enumerate(by_sent) for b in by_sent[i + 1:]]
    return {"p50": pct(waits, 50), "p95": pct(waits, 95), "max": max(waits), "t": t,
            "slot": statistics.fmean(a.service_s for a in arrivals if a.status == 200),
            "ratio": pct(waits, 95) / pct(waits, 50),
            "inversions": sum(1 for a, b in pairs if b.done < a.done),
            "overtaken": sum(1 for a, b in pairs if a.done - b.done > t),
            "margin": max(a.wait - (ahead_of(arrivals, a) * t + SLACK_S) for a in arrivals),
            "ok": sum(1 for a in arrivals if a.status == 200), "clients": len(arrivals)}


def report(arrivals: List[Arrival]) -> None:
    print(f"{'client':>6}{'sent s':>8}{'wait s':>8}{'ahead':>7}  told on the way")
    for a in sorted(arrivals, key=lambda a: a.sent):
        told = " ".join(str(n) for n in a.aheads) or "-"
        print(f"{a.client:>6}{a.sent:>8.2f}{a.wait:>8.2f}{ahead_of(arrivals, a):>7}  {a.status}: "
              f"{len(a.answers)} answers, ahead {told}")
    s = summary(arrivals)
    print(f"\n{s['ok']} of {s['clients']} got their depth map; one request's time t = {s['t']:.2f} s "
          f"(a slot's time per depth map: {s['slot']:.2f} s)")
    print(f"wait p50 {s['p50']:.1f} s, p95 {s['p95']:.1f} s (p95/p50 {s['ratio']:.2f}), max {s['max']:.1f} s")
    print(f"order: {s['inversions']} pairs answered out of arrival order, {s['overtaken']} overtaken by more "
          f"than t")
    print(f"worst wait - (ahead x t + {SLACK_S:g} s): {s['margin']:+.1f} s (target: <= 0)")


def line_costs(redis: Optional[Tuple[str, subprocess.Popen]], procs: List[subprocess.Popen],
               rounds: int = 2000) -> None:
    """Milliseconds per request of the line's three transactions, on each backend (``redis``: a
    running redis-server's URL and process, added to ``procs``)."""
    sys.path.insert(0, str(ROOT))
    from app.serving.line import Line, RedisLine, SqliteLine

    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        lines: Dict[str, Line] = {"memory (one process)": SqliteLine()}
        lines[f"file in {shm or 'a temp folder'}"] = SqliteLine(Path(folder) / "line.sqlite3")
        if redis:
            procs.append(redis[1])
            lines["redis on loopback"] = RedisLine(Redis.from_url(redis[0]))
        for name, line in lines.items():
            t0 = time.perf_counter()
            for _ in range(rounds):
                place = line.join(10, 100)
                line.enter(place.ticket, 10)
                line.leave(place.ticket)
            print(f"{name:<28} {(time.perf_counter() - t0) / rounds * 1000:.3f} ms per request "
                  f"(join, enter, leave; {rounds} rounds)")


def slot_s(url: str, photo: bytes, size: str) -> float:
    """The server's own time for a depth map of a new upload of ``photo`` at input size ``size``."""
    r = requests.post(url + "/api/v1/depth", files={"image": ("w.jpg", photo + os.urandom(16))},
                      data={"size": size, "views": "none"}, timeout=120)
    r.raise_for_status()
    return r.json()["timings_ms"]["total"] / 1000


def workload(urls: List[str], min_s: float,
             fixed: Optional[Tuple[int, str]] = None) -> Tuple[int, str, bytes]:
    """The cheapest (photo width, input size) of ``WORKLOADS`` whose depth map holds a slot at least
    ``min_s`` on this machine (else the costliest; ``fixed`` instead if given), and its photo; every
    worker warmed up first (a worker's first requests, and its first at a new input size, are slower)."""
    def warm(photo: bytes, size: str) -> None:
        for url in urls:
            for _ in range(4):  # with several workers behind a URL, each gets some
                slot_s(url, photo, size)

    warm(burst_photo(WORKLOADS[0][0]), WORKLOADS[0][1])
    for side, size in [fixed] if fixed else WORKLOADS:
        photo = burst_photo(side)
        if min(slot_s(urls[0], photo, size) for _ in range(2)) >= min_s:
            break
    warm(photo, size)
    return side, size, photo


def start_servers(args: argparse.Namespace, tmp: Path, procs: List[subprocess.Popen]) -> List[str]:
    """The servers of the run (and their Redis), their processes added to ``procs``; their URLs."""
    weights = args.weights
    if not weights:
        sys.path.insert(0, str(ROOT / "tests"))
        from support.synthetic import write_synthetic_weights

        weights = str(write_synthetic_weights(ROOT / "tests/fixtures/state_dict_manifest.json",
                                              tmp / "synthetic.pt"))
    env = {"DEPTHMAP_INFERENCE_SLOTS": "1", "DEPTHMAP_TORCH_THREADS": str(max(1, 2 // args.workers))}
    if args.redis:
        env["DEPTHMAP_REDIS_URL"], redis_proc = start_redis(tmp)
        procs.append(redis_proc)
    urls = []
    for n in range(args.servers):
        (tmp / f"s{n}").mkdir()
        url, proc = start_server(weights, args.workers, env, tmp / f"s{n}" / "server.log",
                                 args.checkout.resolve())
        urls.append(url)
        procs.append(proc)
    return urls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.environ.get("MIDAS_WEIGHTS"))
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the code the servers run")
    ap.add_argument("--protocol", choices=page_client.PROTOCOLS, default="line")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--servers", type=int, default=1)
    ap.add_argument("--redis", action="store_true",
                    help="the servers share a redis-server started for the run")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--over", type=float, default=2.0, help="seconds over which the clients arrive")
    ap.add_argument("--min-request", type=float, default=0.5,
                    help="the photo and input size are the cheapest that hold a slot this long here")
    ap.add_argument("--side", type=int, help="the photo's width instead (with --size)")
    ap.add_argument("--size", help="the network's input size instead (the option `size`, with --side)")
    ap.add_argument("--ops", action="store_true", help="only what the line costs per request")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        procs: List[subprocess.Popen] = []
        try:
            if args.ops:
                line_costs(start_redis(Path(tmp)) if args.redis else None, procs)
                return
            urls = start_servers(args, Path(tmp), procs)
            side, size, photo = workload(urls, args.min_request,
                                         (args.side, args.size) if args.side and args.size else None)
            print(f"# {args.clients} page clients ({args.protocol}) over {args.over:g} s; {args.servers} "
                  f"server(s) x {args.workers} worker(s), 1 slot each; a {len(photo) >> 10} KB photo "
                  f"{side} px wide at input size {size}; code: {args.checkout}")
            report(burst(urls, args.clients, args.over, photo, args.protocol, {"size": size}))
        finally:
            for proc in reversed(procs):
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)


if __name__ == "__main__":
    main()
