"""Stereo 3D and normal maps: which gap fill wins, and what a 12 MP photo costs.

1. Gap fill. A synthetic scene (a real photo as the background, a flat plane in front of it) is seen by
   the left eye; the gaps the plane leaves are filled by each method and compared with what that eye
   truly sees there (the background, known in full): mean absolute error per channel (0-255) and the
   share of gap pixels closer to the plane's colour than to the truth (foreground leaking in).
   Methods: ``mirror`` (app.imaging.stereo.fill_holes: the background's texture mirrored into the gap),
   ``edge`` (the background edge pixel repeated: a smear) and ``telea`` (OpenCV's inpainting of the
   gap mask, which draws on every side).
2. Time of a stereo pair (every layout) and of a normal map, for a 12 MP photo (4000 x 3000) and for a
   page preview (1600 x 1200).
3. Frames per second of a 720p clip (a pan across rocket.jpg, 1280 x 720, 30 frames) made into a
   heatmap video and into a full side-by-side 3D video, in one run (the network on the tests'
   synthetic weights: the same network, the same speed; the default engine).

    python benchmarks/bench_stereo.py [--rounds N] [--skip-video]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app.imaging.normals import normal_map  # noqa: E402
from app.options import STEREO_LAYOUTS, NormalOptions, StereoOptions  # noqa: E402
from app.imaging.pipeline import normalize  # noqa: E402
from app.imaging.stereo import disparity, fill_holes, forward_warp, hole_sources, stereo  # noqa: E402
from bench_store import ms  # noqa: E402
from support.scenes import Plane, render  # noqa: E402

log = logging.getLogger("bench_stereo")
MAGENTA = np.array([255, 0, 255], np.uint8)


def fill_edge(image: np.ndarray, shown: np.ndarray, filled: np.ndarray) -> np.ndarray:
    ys, xs, edge, _ = hole_sources(shown, filled)
    out = image.copy()
    out[ys, xs] = image[ys, edge]
    return out


def fill_telea(image: np.ndarray, shown: np.ndarray, filled: np.ndarray) -> np.ndarray:
    return cv2.inpaint(image, (~filled).astype(np.uint8), 5, cv2.INPAINT_TELEA)


METHODS: Dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "mirror": fill_holes, "edge": fill_edge, "telea": fill_telea}


def streaks(image: np.ndarray, gap: np.ndarray) -> float:
    """The share of gap pixels whose colour repeats their left neighbour's in the gap: a smear."""
    both = gap[:, 1:] & gap[:, :-1]
    same = (image[:, 1:] == image[:, :-1]).all(axis=-1)
    return float((same & both).sum() / max(1, both.sum()))


def fill_table(backgrounds: List[str], divergences: List[float]) -> None:
    print("\ngap fill against the truth (left eye, convergence 0: the background stays, the plane moves):")
    print("MAE per channel (0-255), leak = gap pixels tinted with the plane's magenta, smear = gap pixels")
    print("repeating their left neighbour (the truth's own share in brackets)")
    print(f"{'background':<10} {'div %':>5} {'gap px':>6}  " + "  ".join(f"{m:>20}" for m in METHODS))
    print(f"{'':<24}" + "  ".join(f"{'MAE  leak  smear':>20}" for _ in METHODS))
    for name in backgrounds:
        with Image.open(ROOT / f"tests/fixtures/samples/{name}") as im:
            bg = np.asarray(im.convert("RGB").resize((640, 400)))
        planes = [Plane(100, 300, 240, 400, 4.0, tuple(MAGENTA.tolist()))]
        photo, depth, _ = render(bg, 1.0, planes)
        near = normalize(depth)
        for divergence in divergences:
            shift = np.rint(disparity(near, divergence, 0.0) * 0.5).astype(np.int32)
            image, shown, filled = forward_warp(photo, near, shift)
            truth, _, known = render(bg, 1.0, planes, [0, int(shift[200, 300])])
            gap = ~filled & known
            row = [f"{name.split('.')[0]:<10} {divergence:>5.1f} {int(gap.sum()):>6}  "]
            for fill in METHODS.values():
                out = fill(image, shown, filled)
                got, want = out[gap].astype(np.int32), truth[gap].astype(np.int32)
                mae = float(np.abs(got - want).mean())
                leak = float((np.minimum(got[:, 0], got[:, 2]) - got[:, 1] > 60).mean())  # a magenta tint
                row.append(f"{mae:>6.1f} {leak * 100:>4.0f}% {streaks(out, gap) * 100:>4.0f}%"
                           f" ({streaks(truth, gap) * 100:.0f}%)")
            print("  ".join(row))


def speed_table(rounds: int, width: int, height: int) -> None:
    with Image.open(ROOT / "tests/fixtures/samples/rocket.jpg") as im:
        photo = np.asarray(im.convert("RGB").resize((width, height), Image.BICUBIC))
    yy = np.mgrid[0:height, 0:width][0].astype(np.float32)
    depth = 1.0 + yy / height  # a floor coming nearer toward the bottom ...
    depth[height // 4:height * 3 // 4, width * 3 // 8:width * 5 // 8] = 3.0  # ... and an object on it
    print(f"\n{width * height / 1e6:.1f} MP ({width} x {height}), {rounds} rounds, "
          f"{cv2.getNumThreads()} OpenCV threads")
    for name in STEREO_LAYOUTS:
        opts = StereoOptions(layout=name, divergence=2.5)
        print(f"stereo {name:<16} median {ms(lambda o=opts: stereo(photo, depth, o), rounds):7.0f} ms")
    print(f"normal map {'':<12} median {ms(lambda: normal_map(depth, NormalOptions()), rounds):7.0f} ms")


def video_table() -> None:
    from app.depth.model import DepthModel
    from app.options import Options, VideoOptions
    from app.imaging.video import process_video
    from support.clips import load_photo, pan, write_clip
    from support.synthetic import write_synthetic_weights

    with tempfile.TemporaryDirectory() as tmp:
        weights = write_synthetic_weights(ROOT / "tests/fixtures/state_dict_manifest.json",
                                          Path(tmp) / "synthetic.pt")
        model = DepthModel.load(weights)
        photo = load_photo(ROOT / "tests/fixtures/samples/rocket.jpg", 1920)
        src = write_clip(Path(tmp) / "pan.mp4", pan(photo, 30, 1280, 720), fps=15)
        print(f"\n720p clip (1280 x 720, 30 frames), engine {model.engine}, {model.threads} threads")
        for view in ("heatmap", "stereo"):
            t0 = time.perf_counter()
            result = process_video(src, Path(tmp) / f"{view}.mp4", model, Options(),
                                   VideoOptions(view=view, layout="sbs"))
            seconds = time.perf_counter() - t0
            stages = ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items())
            print(f"{view:<8} {result.width} x {result.height}: {result.frames / seconds:5.2f} frames/s "
                  f"(s per stage: {stages})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-video", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    fill_table(["coffee.png", "chelsea.png", "astronaut.png"], [2.0, 5.0, 10.0])
    speed_table(args.rounds, 4000, 3000)
    speed_table(args.rounds, 1600, 1200)
    if not args.skip_video:
        video_table()


if __name__ == "__main__":
    main()
