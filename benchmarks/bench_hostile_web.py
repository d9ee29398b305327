"""What the request guards cost, and what an upload of someone else's photo costs now.

    .venv/bin/python benchmarks/bench_hostile_web.py [--weights PATH] [--requests 200]

1. The guard alone (``app/web/guards.py``, the Host and cross-site checks every request passes), called
   in a request context of the real app: microseconds per request, for a plain GET, a same-origin POST
   and a refused cross-site POST.
2. A real ``depthmap serve`` (1 worker; the tests' synthetic weights unless ``--weights``: the same
   network, the same speed), sequential requests (GETs on one connection, each POST on its own), median
   and p95 in ms: the page, and the refusals (another site's upload of a 240 KB photo, an unknown Host),
   next to a real upload.
3. The same photo uploaded again: by its owner with the owner token (answered from the store) and by
   someone else (a result of their own: a new inference).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench import contention, machine, start_server, stop  # noqa: E402

PHOTO = ROOT / "tests/fixtures/samples/chelsea.png"
CROSS_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}


def guard_us(weights: Path, data_dir: Path, number: int) -> Dict[str, float]:
    """Microseconds per call of the app's guard in a request context of each kind."""
    from app import create_app

    app = create_app({"MIDAS_WEIGHTS": str(weights), "DATA_DIR": str(data_dir)})
    guard = next(f for f in app.before_request_funcs[None] if f.__name__ == "guard")
    kinds = {"GET /": ("GET", {}), "POST, this site's page": ("POST", {"Sec-Fetch-Site": "same-origin"}),
             "POST, another site's page (refused)": ("POST", CROSS_SITE)}
    out = {}
    for kind, (method, headers) in kinds.items():
        with app.test_request_context("/api/v1/depth", method=method,
                                      headers={"Host": "127.0.0.1:8000", **headers}):
            def once() -> None:
                try:
                    guard()
                except Exception:  # noqa: BLE001 - the refusal is what is timed
                    pass
            out[kind] = min(timeit.repeat(once, number=number, repeat=5)) / number * 1e6
    return out


def timed(fn: Callable[[], object], n: int) -> List[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def row(name: str, times: List[float], status: object) -> None:
    p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)]
    print(f"| {name} | {status} | {statistics.median(times):.1f} | {p95:.1f} | {len(times)} |")


def over_the_wire(url: str, n: int) -> None:
    import requests

    session = requests.Session()
    photo = PHOTO.read_bytes()

    def post(headers: Dict[str, str], data: bytes = photo) -> requests.Response:
        # a connection each: gunicorn may close one whose refused body it did not drain whole
        return requests.post(url + "/api/v1/depth", files={"image": ("p.png", data)}, data={"views": "none"},
                             headers=headers, timeout=120)

    print("\n## 2. Over the wire (ms per request)\n")
    print("| request | status | median | p95 | requests |\n|---|---|---|---|---|")
    cases = {"GET / (the page)": lambda: session.get(url + "/", timeout=30),
             "GET /, unknown Host": lambda: session.get(url + "/", headers={"Host": "evil.example"},
                                                        timeout=30),
             "POST a photo from another site's page": lambda: post(CROSS_SITE)}
    for name, fn in cases.items():
        status = fn().status_code
        row(name, timed(fn, n), status)
    uploads = max(5, n // 20)
    counter = iter(range(10**9))
    fresh = timed(lambda: post({}, photo + next(counter).to_bytes(8, "little")), uploads)  # new bytes each
    row("POST a new photo (an inference)", fresh, 200)

    print("\n## 3. The same photo again (ms per request)\n")
    print("| who | status | median | p95 | requests |\n|---|---|---|---|---|")
    first = post({}).json()
    owner = {"X-Owner-Token": first["owner_token"]}
    row("its owner, with the owner token (from the store)", timed(lambda: post(owner), uploads), 200)
    row("someone else (a result of their own)", timed(lambda: post({}), uploads), 200)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.environ.get("MIDAS_WEIGHTS"))
    ap.add_argument("--requests", type=int, default=200, help="requests per cheap kind")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.weights:
            weights = Path(args.weights)
        else:
            from support.synthetic import write_synthetic_weights

            weights = write_synthetic_weights(ROOT / "tests/fixtures/state_dict_manifest.json",
                                              Path(tmp) / "synthetic.pt")
        print(f"# {machine()}\n# before: {contention()}")
        print("\n## 1. The guard alone (µs per request, best of 5)\n\n| request | µs |\n|---|---|")
        for kind, us in guard_us(weights, Path(tmp) / "data", 20000).items():
            print(f"| {kind} | {us:.1f} |")
        with open(Path(tmp) / "server.log", "wb") as log:
            proc, url, _ = start_server(weights, 1, "auto", log)
            try:
                over_the_wire(url, args.requests)
            finally:
                stop(proc)
        print(f"\n# after: {contention()}")


if __name__ == "__main__":
    main()
