"""Engine benchmark: eager vs TorchScript forward latency, and the CLI's peak memory.

    .venv/bin/python benchmarks/bench_engine.py --weights PATH [--runs 50] [--sizes 256 384 512]

Prints one table measured in one run (eager and scripted calls interleaved, so machine noise hits
both alike): median and p10..p90 per engine and input size, and the scripted/eager ratio. Then runs
``depthmap predict`` on the sample photos in a child process and prints its peak RSS.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.model import DepthModel, resolve_weights  # noqa: E402

log = logging.getLogger("bench")


def quantiles(xs: list) -> tuple:
    q = statistics.quantiles(xs, n=10)
    return statistics.median(xs), q[0], q[-1]


def cli_peak_rss(weights: Path, photo_dir: Path) -> None:
    """Runs ``depthmap predict`` in a child and prints its wall time and peak RSS. Call it before
    loading any model here: a forked child's RSS high-water mark starts with the parent's pages."""
    photos = sorted(p for p in Path(photo_dir).iterdir() if p.suffix in (".png", ".jpg"))
    depthmap = Path(sys.executable).parent / "depthmap"
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        subprocess.run([str(depthmap), "predict", *map(str, photos), "--weights", str(weights),
                        "--out", out], check=True, capture_output=True)
        wall = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"# depthmap predict on {len(photos)} photos: wall {wall:.2f} s, peak RSS {peak_mb:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="checkpoint (default: MIDAS_WEIGHTS, cache, download)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--photos", default=str(ROOT / "tests/fixtures/samples"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    weights = resolve_weights(args.weights)
    cli_peak_rss(weights, Path(args.photos))
    engines = {"eager": DepthModel.load(weights, args.threads, script=False),
               "torchscript": DepthModel.load(weights, args.threads, script=True)}
    threads = engines["eager"].threads
    print(f"\n# forward pass, 1 x 3 x S x S float32, {threads} threads, {args.runs} runs "
          f"after {args.warmup} warm-ups, engines interleaved")
    print(f"{'size':>5} {'engine':>12} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'vs eager':>9}")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        x = rng.normal(size=(1, 3, size, size)).astype(np.float32)
        times = {name: [] for name in engines}
        for i in range(args.warmup + args.runs):
            for name, model in engines.items():
                t = time.perf_counter()
                model(x)
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - t) * 1000)
        base = statistics.median(times["eager"])
        for name, ts in times.items():
            med, p10, p90 = quantiles(ts)
            print(f"{size:>5} {name:>12} {med:>10.1f} {p10:>8.1f} {p90:>8.1f} {med / base:>8.2f}x")

if __name__ == "__main__":
    main()
