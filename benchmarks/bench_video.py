"""Video benchmark: flicker with and without temporal smoothing, peak memory against clip length, and
frames per second.

    .venv/bin/python benchmarks/bench_video.py --weights PATH [--threads N] [--fps 15] [--size 640x360]

1. Flicker. A static-camera clip (the sample photo coffee.png, 320 px wide, 60 frames) with fresh
   Gaussian noise (sigma 8 gray levels) in every frame, as a sensor adds it. For each combination of
   EMA / bilateral / normalisation it prints the mean absolute frame-to-frame change of the normalised
   depth (the depth zip's 16-bit frames, which are min-max normalised per frame or over the clip,
   exactly as --norm says), as a percentage of the full range.
2. Memory. ``process_video`` on a 10 s and a 60 s clip (a pan across rocket.jpg, --size at --fps),
   each in a fresh child process; prints the child's peak RSS, its RSS after loading the model, and
   the frames per second with the time per stage. Default options (EMA, bilateral, one range for the
   clip: two passes) plus the 16-bit zip.

The clips are written here with the tests' helpers (tests/support/clips.py) into a temporary folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app.options import Options, VideoOptions  # noqa: E402
from support.clips import load_photo, pan, static_noisy, write_clip  # noqa: E402

SAMPLES = ROOT / "tests/fixtures/samples"


def zip_frames(path: Path) -> List[np.ndarray]:
    with zipfile.ZipFile(path) as z:
        rows = list(csv.DictReader(io.StringIO(z.read("frames.csv").decode())))
        return [np.asarray(Image.open(io.BytesIO(z.read(r["png"])))).astype(np.float64) / 65535.0
                for r in rows]


def flicker(frames: List[np.ndarray]) -> float:
    """Mean absolute frame-to-frame change, in percent of the normalised range."""
    return 100.0 * float(np.mean([np.abs(b - a).mean() for a, b in zip(frames, frames[1:], strict=False)]))


def flicker_table(model, tmp: Path) -> None:
    from app.imaging.video import process_video

    photo = load_photo(SAMPLES / "coffee.png", 320)
    src = write_clip(tmp / "static.mp4", static_noisy(photo, 60, sigma=8.0, seed=1), fps=30)
    print(f"## Flicker: static camera, coffee.png {photo.shape[1]}x{photo.shape[0]}, 60 frames, noise "
          "sigma 8 per frame")
    print("| EMA | bilateral | norm | flicker (% of range) | vs. no smoothing |")
    print("|---|---|---|---|---|")
    for norm in ("frame", "clip"):
        base = None
        for ema, bil in ((False, False), (True, False), (False, True), (True, True)):
            out = tmp / f"f-{norm}-{ema}-{bil}.mp4"
            vopts = VideoOptions(ema=ema, bilateral=bil, norm=norm, depth_zip=True)
            process_video(src, out, model, Options(), vopts)
            value = flicker(zip_frames(out.with_name(out.stem + ".depth.zip")))
            base = base or value
            print(f"| {'on (0.7)' if ema else 'off'} | {'on' if bil else 'off'} | {norm} | {value:.3f} | "
                  f"{value / base:.2f}x |", flush=True)


def child(weights: str, threads: int, src: str, out: str) -> None:
    """One clip in this (fresh) process; prints a JSON line with its figures."""
    from app.depth.model import DepthModel
    from app.imaging.video import process_video

    model = DepthModel.load(Path(weights), threads=threads or None)
    loaded = _rss_now_mb()
    t = time.perf_counter()
    result = process_video(Path(src), Path(out), model, Options(), VideoOptions(depth_zip=True))
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": result.frames, "wall": wall, "peak_mb": peak, "loaded_mb": loaded,
                      "seconds": result.seconds, "size": [result.width, result.height]}))


def _rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_table(weights: str, threads: int, fps: int, size: tuple, tmp: Path) -> None:
    width, height = size
    photo = load_photo(SAMPLES / "rocket.jpg", width * 2)
    if photo.shape[0] < height:
        raise SystemExit(f"--size {width}x{height} is too tall for the panned photo")
    print(f"\n## Memory and speed: a pan across rocket.jpg, {width}x{height} at {fps} fps, default options "
          f"+ depth zip, {threads or 'all'} torch threads, one fresh process per clip")
    print("| clip | frames | peak RSS | RSS after model load | growth | frames/s | ms per frame by stage |")
    print("|---|---|---|---|---|---|---|")
    for seconds in (10, 60):
        n = seconds * fps
        src = write_clip(tmp / f"pan{seconds}.mp4", pan(photo, n, width, height), fps=fps)
        proc = subprocess.run([sys.executable, __file__, "--child", weights, str(threads), str(src),
                               str(tmp / f"out{seconds}.mp4")], capture_output=True, text=True, check=True)
        r: Dict = json.loads(proc.stdout.strip().splitlines()[-1])
        stages = ", ".join(f"{k} {1000 * v / r['frames']:.1f}" for k, v in r["seconds"].items())
        print(f"| {seconds} s | {r['frames']} | {r['peak_mb']:.0f} MB | {r['loaded_mb']:.0f} MB | "
              f"{r['peak_mb'] - r['loaded_mb']:+.0f} MB | {r['frames'] / r['wall']:.1f} | {stages} |",
              flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="the checkpoint (the tests' synthetic one will do)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: every core)")
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the memory clips")
    ap.add_argument("--skip-flicker", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        if not args.skip_memory:
            memory_table(args.weights, args.threads, args.fps, size, Path(tmp))
        if not args.skip_flicker:
            from app.depth.model import DepthModel

            print()
            flicker_table(DepthModel.load(Path(args.weights), threads=args.threads or None), Path(tmp))


if __name__ == "__main__":
    main()
