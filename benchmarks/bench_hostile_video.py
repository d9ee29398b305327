"""Hostile clips against the video jobs: what the worst small uploads cost on disk and in memory, without
the bounds and with them.

    .venv/bin/python benchmarks/bench_hostile_video.py [--weights PATH] [--frames 300] [--budget-mb 512]

1. Storage. A static 1920x1080 clip (a photo held still: a tiny upload) through a real job (``VideoJobs``
   on an SQLite queue, its consumer in this process) with ``depth_zip=on`` and ``out_side=1920``: the
   16-bit PNGs of a static scene barely compress. First 60 frames without a budget (the issue's case:
   the zip's bytes, and those bytes extrapolated to ``VIDEO_MAX_FRAMES``), then ``--frames`` frames
   under a ``--budget-mb`` budget: the most bytes the jobs' folder held (sampled every 20 ms), the job's
   end and how long it ran before it stopped.
2. A stream that grows. An MPEG-TS clip of 10 frames at 320x240, then 4 at 7680x4320 (its headers show
   only the first size, so the upload is accepted): processed without per-frame limits (what a consumer
   did before) and with the default ``VIDEO_MAX_PIXELS``, each in a fresh process: the peak RSS and the
   outcome.

Each case runs in a fresh child process (peak RSS is the process's own). Without ``--weights`` (or
``MIDAS_WEIGHTS``) the tests' synthetic weights are used: the same network, so the same speed and sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app.config import BY_ENV  # noqa: E402
from support.clips import load_photo, moving_scene, write_clip  # noqa: E402

MB = 1024 * 1024
SAMPLES = ROOT / "tests/fixtures/samples"


def static_clip(path: Path, frames: int) -> Path:
    """A photo held still at 1920x1080: x264 sends the first frame and then almost nothing."""
    frame = cv2.resize(load_photo(SAMPLES / "rocket.jpg"), (1920, 1080), interpolation=cv2.INTER_AREA)
    return write_clip(path, (frame for _ in range(frames)), fps=30)


def growing_clip(path: Path) -> Path:
    """10 frames at 320x240, then 4 at 7680x4320, in one MPEG-TS stream."""
    first = write_clip(path.with_suffix(".a.ts"), moving_scene(10, 320, 240), codec="libx264")
    then = write_clip(path.with_suffix(".b.ts"), moving_scene(4, 7680, 4320), codec="libx264")
    path.write_bytes(first.read_bytes() + then.read_bytes())
    return path


def status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (the peak since the last ``reset_peak``) of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> float:
    """Starts the peak RSS over from now (Linux: ``/proc/self/clear_refs``), so that the model's load,
    whose own peak is far higher, does not hide the clip's; returns the RSS now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_mb("VmRSS")


def job_case(weights: str, src: str, budget: int) -> Dict[str, Any]:
    """One job through the real queue and consumer, in a temporary folder; the folder's bytes sampled."""
    from app.serving.jobdata import Room
    from app.serving.jobs import UPLOAD, VideoJobs, make_huey
    from app.depth.model import DepthModel
    from app.options import Options, VideoOptions

    model = DepthModel.load(Path(weights))
    loaded = reset_peak()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        jobs = VideoJobs(make_huey(Path(tmp) / "data"), Path(tmp) / "jobs", lambda: {"midas-small": model},
                         max_bytes=budget, ttl_s=3600, lock_path=Path(tmp) / "data" / "consumer.lock")
        job_id, workdir = jobs.new_workdir()
        (workdir / UPLOAD).write_bytes(Path(src).read_bytes())
        vopts = VideoOptions.from_strings({"depth_zip": "on", "out_side": "1920", "norm": "frame"})
        jobs.submit(job_id, "static", {"options": Options().as_dict(), "video_options": vopts.as_dict()}, {})
        room, most, t0 = Room(jobs.root, 0), 0, time.perf_counter()
        jobs.start_embedded()
        while (job := jobs.get(job_id)) is None or job.state not in ("done", "failed", "cancelled"):
            most = max(most, room.used())
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        kept = room.used()
        jobs.shutdown()
    return {"state": job.state, "error": (job.error or {}).get("error"), "frames": job.done,
            "wall_s": wall, "most_bytes": most, "kept_bytes": kept, "peak_mb": status_mb("VmHWM"),
            "loaded_mb": loaded}


def grow_case(weights: str, src: str, limited: bool) -> Dict[str, Any]:
    """The growing stream through ``process_video``, with or without the default per-frame limits."""
    from app.depth.model import DepthModel
    from app.options import Options, VideoOptions
    from app.imaging.video import Limits, VideoError, process_video

    model = DepthModel.load(Path(weights))
    loaded = reset_peak()
    limits = Limits(max_pixels=BY_ENV["DEPTHMAP_VIDEO_MAX_PIXELS"].default) if limited else Limits()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        try:
            result = process_video(Path(src), Path(tmp) / "out.mp4", model, Options(),
                                   VideoOptions(norm="frame"), limits=limits)
            outcome = f"done, {result.frames} frames"
        except VideoError as exc:
            outcome = f"refused: {exc.code}"
    return {"outcome": outcome, "wall_s": time.perf_counter() - t0, "peak_mb": status_mb("VmHWM"),
            "loaded_mb": loaded}


def run_child(*args: str) -> Dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def storage_table(weights: str, frames: int, budget_mb: int, tmp: Path) -> None:
    short = static_clip(tmp / "static60.mp4", 60)
    long = static_clip(tmp / f"static{frames}.mp4", frames)
    most_frames = BY_ENV["DEPTHMAP_VIDEO_MAX_FRAMES"].default
    print("## Storage: a static 1920x1080 clip, depth_zip=on, out_side=1920, norm=frame")
    print("| clip | upload | budget | end | frames done | most bytes held | kept after | ran for | peak RSS "
          "(after the model's load) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for clip, budget in ((short, 0), (long, budget_mb * MB)):
        r = run_child("job", weights, str(clip), str(budget))
        end = r["state"] + (f" ({r['error']})" if r["error"] else "")
        limit = f"{budget // MB} MB" if budget else "none"
        print(f"| {clip.stem} | {clip.stat().st_size / 1024:.0f} KB | {limit} | {end} | {r['frames']} | "
              f"{r['most_bytes'] / MB:.1f} MB | "
              f"{r['kept_bytes'] / MB:.1f} MB | {r['wall_s']:.0f} s | {r['peak_mb']:.0f} MB "
              f"({r['loaded_mb']:.0f} MB) |", flush=True)
        if not budget:
            per_frame = r["kept_bytes"] / max(1, r["frames"])
            print(f"|  | at {most_frames} frames (VIDEO_MAX_FRAMES), without a budget: "
                  f"{per_frame * most_frames / 1e9:.1f} GB ({per_frame / MB:.2f} MB per frame) |||||||",
                  flush=True)


def grow_table(weights: str, tmp: Path) -> None:
    clip = growing_clip(tmp / "grows.ts")
    print(f"\n## A stream that grows: 10 frames at 320x240, then 4 at 7680x4320 (MPEG-TS, "
          f"{clip.stat().st_size / 1024:.0f} KB)")
    print("| per-frame limits | outcome | ran for | peak RSS while processing | RSS after the model's load |")
    print("|---|---|---|---|---|")
    for limited in (False, True):
        r = run_child("grow", weights, str(clip), "1" if limited else "0")
        print(f"| {'VIDEO_MAX_PIXELS (default)' if limited else 'none (before)'} | {r['outcome']} | "
              f"{r['wall_s']:.1f} s | {r['peak_mb']:.0f} MB | {r['loaded_mb']:.0f} MB |", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, weights, src, arg = sys.argv[2:6]
        result = job_case(weights, src, int(arg)) if kind == "job" else grow_case(weights, src, arg == "1")
        print(json.dumps(result))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.environ.get("MIDAS_WEIGHTS"),
                    help="checkpoint [env MIDAS_WEIGHTS; default: the tests' synthetic weights]")
    ap.add_argument("--frames", type=int, default=300, help="frames of the clip run under the budget")
    ap.add_argument("--budget-mb", type=int, default=BY_ENV["DEPTHMAP_VIDEO_BYTES"].default // MB)
    ap.add_argument("--skip-storage", action="store_true")
    ap.add_argument("--skip-grow", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        weights = args.weights
        if not weights:
            from support.synthetic import write_synthetic_weights

            weights = str(write_synthetic_weights(ROOT / "tests/fixtures/state_dict_manifest.json",
                                                  Path(tmp) / "synthetic.pt"))
        if not args.skip_storage:
            storage_table(weights, args.frames, args.budget_mb, Path(tmp))
        if not args.skip_grow:
            grow_table(weights, Path(tmp))


if __name__ == "__main__":
    main()
