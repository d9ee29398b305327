"""What the shared result store costs per request, next to the in-process cache it replaced.

    .venv/bin/python benchmarks/bench_store.py [--runs 5] [--megapixels 12]

One entry the size of a 12 MP photo's result (the upload, the photo as RGB, the float32 depth and the
network output) is put and read back through each backend:

- in-process: what the old per-worker LRU did, a dict of references (no copy, nothing shared);
- files in /dev/shm (the embedded default) and in the system's temporary folder;
- Redis: Debian's redis-server, started here on a free loopback port in a temporary folder.

``put`` is one upload's write; ``get, other worker`` a read by a worker that does not hold the entry
(everything crosses the store); ``get, same worker`` a read of an entry this worker used last (the
in-memory front: only the store's version check crosses). Medians of ``--runs``, in ms.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.options import Options  # noqa: E402
from app.serving.store import SHM, Entry, FileStore, RedisStore, ResultStore  # noqa: E402


def entry(megapixels: float) -> Entry:
    h = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    w = h * 4 // 3
    rng = np.random.default_rng(0)
    return Entry("0123456789abcdef0123456789abcdef", rng.bytes(int(megapixels * 350_000)), "photo",
                 Options().depth_options(), rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                 rng.random((h, w), dtype=np.float32), rng.random((256, 341), dtype=np.float32))


def ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def costs(a: ResultStore, b: ResultStore, e: Entry, runs: int) -> List[float]:
    """put on ``a``; get on ``b`` with its in-memory front emptied first (another worker); get on ``a``."""
    def cold() -> None:
        b._local.clear()  # noqa: SLF001 - what a worker that never read this entry holds
        b.get(e.id)
    return [ms(lambda: a.put(e), runs), ms(cold, runs), ms(lambda: a.get(e.id), runs)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--megapixels", type=float, default=12.0)
    args = parser.parse_args()
    e = entry(args.megapixels)
    print(f"# one result of {args.megapixels:g} MP: {e.nbytes / 2**20:.0f} MB; median of {args.runs}, ms\n")
    print(f"{'store':34s}{'put':>9}{'get, other worker':>19}{'get, same worker':>18}")
    rows: Dict[str, List[float]] = {}

    local: "OrderedDict[str, Entry]" = OrderedDict()
    rows["in-process (the old cache)"] = [ms(lambda: local.__setitem__(e.id, e), args.runs),
                                          ms(lambda: local.get(e.id), args.runs),
                                          ms(lambda: local.get(e.id), args.runs)]
    folders = []
    if SHM.is_dir():
        folders.append(("files, /dev/shm (memory)", Path(tempfile.mkdtemp(dir=SHM, prefix="bench-store-"))))
    folders.append((f"files, {tempfile.gettempdir()}", Path(tempfile.mkdtemp(prefix="bench-store-"))))
    redis_dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                              "--bind", "127.0.0.1", "--dir", str(redis_dir), "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for name, folder in folders:
            rows[name] = costs(FileStore(folder, 2**31, 3600), FileStore(folder, 2**31, 3600), e, args.runs)
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
        a, b = RedisStore(url, 3600), RedisStore(url, 3600)
        a.put(e)  # connects
        rows["Redis, loopback"] = costs(a, b, e, args.runs)
        used = a.client.info("memory")["used_memory"]
        print()
        for name, (put, cold, hot) in rows.items():
            print(f"{name:34s}{put:9.1f}{cold:19.1f}{hot:18.2f}")
        print(f"\nRedis memory with this one result: {used / 2**20:.0f} MB")
    finally:
        redis.terminate()
        redis.wait()
        for _, folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(redis_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
