"""The video stages (app/imaging/video.py) on clips the tests write themselves: probing every container,
decoding with rotation and transparency, the EMA and bilateral filters and what they do to flicker and edges,
the clip's one range, the H.264 output, the 16-bit zip, bad and truncated files, stopping midway."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
from PIL import Image

from app.options import Options, VideoOptions
from app.imaging.video import (Ema, FrameReader, Limits, RangeSampler, VideoError, bilateral, output_size,
                               probe, process_video)
from support.clips import (load_photo, moving_scene, pan, read_video, static_noisy, stream_info, write_clip,
                           zero_frames)
from support.samples import SAMPLES

PLAIN = VideoOptions(ema=False, bilateral=False, norm="frame")


def brightness_model(x: np.ndarray) -> np.ndarray:
    """A stand-in network whose "depth" is the input's brightness, so a test knows the true depth."""
    return x[0].mean(axis=0).astype(np.float32)


def zip_depths(path: Path) -> tuple[List[np.ndarray], List[Dict[str, str]]]:
    """The 16-bit PNGs of a depth zip as uint16 arrays, and its frames.csv rows."""
    with zipfile.ZipFile(path) as z:
        rows = list(csv.DictReader(io.StringIO(z.read("frames.csv").decode())))
        pngs = [np.asarray(Image.open(io.BytesIO(z.read(r["png"])))) for r in rows]
    return pngs, rows


def flicker(frames: List[np.ndarray], scale: float = 65535.0) -> float:
    """Mean absolute frame-to-frame change, as a fraction of the full range."""
    changes = [np.abs(b.astype(np.float64) - a).mean() for a, b in zip(frames, frames[1:], strict=False)]
    return float(np.mean(changes)) / scale


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "scene.mp4", moving_scene(8, 96, 64))


@pytest.fixture(scope="module")
def short(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("short") / "short.mp4", moving_scene(4, 96, 64))


# probe ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix,fmt,codec,encoder", [
    (".mp4", "mp4", "h264", None), (".mov", "mov", "h264", None), (".mkv", "matroska", "h264", None),
    (".webm", "webm", "vp9", None), (".avi", "avi", "mpeg4", None), (".gif", "gif", "gif", None),
    # phones write HEVC in MP4/MOV; cameras, webcams and OpenCV write Motion-JPEG in AVI or MOV
    (".mp4", "mp4", "hevc", "libx265"), (".mov", "mov", "hevc", "libx265"),
    (".avi", "avi", "mjpeg", "mjpeg"), (".mov", "mov", "mjpeg", "mjpeg"),
])
def test_probe_reads_every_container(tmp_path, suffix, fmt, codec, encoder) -> None:
    path = write_clip(tmp_path / f"c{suffix}", moving_scene(9, 96, 64), fps=12, codec=encoder)
    info = probe(path)
    assert fmt in info.format and info.codec == codec
    assert (info.width, info.height, info.frames) == (96, 64, 9)
    assert abs(float(info.fps) - 12) < 0.6  # GIF stores delays in 1/100 s
    assert abs(info.duration_s - 0.75) < 0.1
    assert sum(1 for _ in FrameReader(path, 1280)) == 9


@pytest.mark.parametrize("name,data,code", [
    ("empty.mp4", b"", "empty"),
    ("notes.mp4", b"just some text, not a video at all\n" * 20, "not_video"),
    ("photo.png", SAMPLES["chelsea"].read_bytes(), "not_video"),
    ("photo.jpg", SAMPLES["rocket"].read_bytes(), "not_video"),
])
def test_probe_refuses_what_is_not_a_video(tmp_path, name, data, code) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(VideoError) as err:
        probe(path)
    assert err.value.code == code


def test_probe_truncated_mp4_without_its_index_is_corrupt(tmp_path, clip) -> None:
    # a camera writes the index (moov) last: cut it off and nothing can be decoded
    data = clip.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError) as err:
        probe(path)
    assert err.value.code == "corrupt" and "truncated or damaged" in err.value.message


@pytest.mark.parametrize("limits,code,needle", [
    (Limits(max_seconds=0.2), "too_long", "lasts 0.8 s; the limit is 0.2 s"),
    (Limits(max_frames=7), "too_long", "more than 7 frames"),
    (Limits(max_pixels=96 * 64 - 1), "too_large", "96x64"),
])
def test_probe_limits(clip, limits, code, needle) -> None:
    with pytest.raises(VideoError) as err:
        probe(clip, limits)
    assert err.value.code == code and needle in err.value.message
    probe(clip, Limits(max_seconds=1, max_frames=8, max_pixels=96 * 64))  # at the limits: fine


# decoding -----------------------------------------------------------------------------------------------

def test_output_size_is_even_and_fits() -> None:
    assert output_size(1920, 1080, 0, 1280) == (1280, 720)
    assert output_size(1920, 1080, -90, 1280) == (720, 1280)  # a portrait phone video
    assert output_size(101, 51, 0, 1280) == (100, 50)
    assert output_size(3, 3, 0, 64) == (2, 2)


def test_reader_turns_phone_videos_upright_and_scales(tmp_path) -> None:
    frame = np.zeros((64, 96, 3), np.uint8)
    frame[:16, :16] = (255, 0, 0)  # red in the stored frame's top-left corner
    path = write_clip(tmp_path / "phone.mp4", [frame] * 3, rotation=90)
    reader = FrameReader(path, max_side=48)
    frames = list(reader)
    assert len(frames) == 3 and frames[0].shape == (48, 32, 3)  # upright: portrait, longer side 48
    # turned 90 degrees counter-clockwise, the top-left corner is now bottom-left
    assert frames[0][-4:, :4, 0].mean() > 200 and frames[0][:4, :4, 0].mean() < 60


def test_reader_stride_and_gif_transparency_on_white(tmp_path) -> None:
    images = []
    for i in range(6):
        im = Image.new("P", (40, 30), 0)
        im.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
        im.paste(1, (i * 4, 5, i * 4 + 10, 25))
        images.append(im)
    path = tmp_path / "anim.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0, transparency=0,
                   disposal=2)
    frames = list(FrameReader(path, 1280, stride=2))
    assert len(frames) == 3
    assert frames[0][0, -1].tolist() == [255, 255, 255]  # transparent -> white, like photos
    assert frames[0][10, 2].tolist() == [200, 30, 30]


# filters --------------------------------------------------------------------------------------------------

def test_ema_follows_the_formula_and_cuts_noise() -> None:
    ema = Ema(0.7)
    first = np.full((4, 4), 2.0, np.float32)
    assert np.array_equal(ema(first), first)  # the first frame is taken as it is
    out = ema(np.zeros((4, 4), np.float32))
    assert np.allclose(out, 0.3 * 2.0)
    out[:] = 99  # the caller's copy, not the state
    assert np.allclose(ema(np.zeros((4, 4), np.float32)), 0.09 * 2.0)

    rng = np.random.default_rng(1)
    noise = [rng.normal(0, 1, (64, 64)).astype(np.float32) for _ in range(200)]
    ema = Ema(0.7)
    smoothed = [ema(n) for n in noise]
    # white noise through an EMA: variance alpha / (2 - alpha); frame-to-frame change sqrt(a^2 / (2 - a))
    assert np.std(smoothed[50:]) == pytest.approx(np.sqrt(0.7 / 1.3), rel=0.05)
    ratio = flicker(smoothed, 1.0) / flicker(noise, 1.0)
    assert ratio == pytest.approx(np.sqrt(0.49 / 1.3), rel=0.05)  # 0.61
    with pytest.raises(ValueError):
        Ema(0.0)


def test_bilateral_smooths_flat_regions_and_keeps_the_step() -> None:
    rng = np.random.default_rng(2)
    step = np.zeros((64, 64), np.float32)
    step[:, 32:] = 10.0  # a depth edge: far | near
    noisy = step + rng.normal(0, 0.3, step.shape).astype(np.float32)
    out = bilateral(noisy, diameter=5, sigma_color=0.1, sigma_space=2.0)
    assert out[:, 4:28].std() < noisy[:, 4:28].std() / 2  # flat regions: noise at least halved
    blurred = cv2.GaussianBlur(noisy, (5, 5), 2.0)  # the same window without the range term

    def edge_width(img: np.ndarray) -> float:
        row = img[8:56].mean(axis=0)
        return float(np.sum((row > 1.0) & (row < 9.0)))  # pixels between 10% and 90% of the step

    assert edge_width(out) == 0 and edge_width(blurred) >= 2
    # the range sigma is relative to the map's own range: the same result at any depth scale
    assert np.allclose(bilateral(noisy * 1000, 5, 0.1, 2.0), out * 1000, rtol=1e-4, atol=1e-2)
    assert np.array_equal(bilateral(np.ones((8, 8), np.float32)), np.ones((8, 8), np.float32))


def test_range_sampler_is_bounded_and_matches_percentiles() -> None:
    rng = np.random.default_rng(3)
    sampler = RangeSampler(capacity=20_000, per_frame=1000)
    frames = [rng.normal(i, 1.0, (100, 100)).astype(np.float32) for i in range(60)]
    for f in frames:
        sampler.add(f)
    assert sampler.values.size == 20_000  # fixed, however long the clip
    every = np.concatenate([f.ravel() for f in frames])
    lo, hi = sampler.range(1.0)
    assert lo == pytest.approx(np.percentile(every, 1), abs=0.3)
    assert hi == pytest.approx(np.percentile(every, 99), abs=0.3)
    assert sampler.range(0) == (float(every.min()), float(every.max()))


# whole clips ---------------------------------------------------------------------------------------------

def test_h264_video_that_browsers_play(model, clip, tmp_path) -> None:
    out = tmp_path / "out.mp4"
    result = process_video(clip, out, model)
    info = stream_info(out)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and "mp4" in info["format"]
    assert (info["width"], info["height"], info["frames"]) == (96, 64, 8)
    assert info["fps"] == 10
    assert (result.frames, result.width, result.height, result.warning) == (8, 96, 64, None)
    # +faststart: the index comes before the data, so playback starts before the download ends
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no spool or part file left


@pytest.mark.parametrize("view,width", [("heatmap", 96), ("gray", 96), ("overlay", 96), ("side", 192)])
def test_views(model, short, tmp_path, view, width) -> None:
    out = tmp_path / f"{view}.mp4"
    process_video(short, out, model, Options(colormap="viridis"), VideoOptions(view=view))
    frames = read_video(out)
    assert len(frames) == 4 and frames[0].shape == (64, width, 3)
    f = frames[2].astype(int)
    if view == "gray":
        assert np.abs(f[..., 0] - f[..., 2]).max() <= 6  # gray, up to the 4:2:0 colour rounding
    if view == "side":  # the frame itself on the left
        original = read_video(short)[2].astype(int)
        assert np.abs(f[:, :96] - original).mean() < 6


def test_stride_and_size_limit(model, tmp_path) -> None:
    src = write_clip(tmp_path / "big.mp4", moving_scene(10, 320, 200), fps=20)
    out = tmp_path / "out.mp4"
    result = process_video(src, out, model, vopts=VideoOptions(stride=3, out_side=160))
    info = stream_info(out)
    assert (info["width"], info["height"], info["frames"]) == (160, 100, 4)  # frames 0, 3, 6, 9
    assert info["fps"] == pytest.approx(20 / 3, rel=1e-3) and result.fps == pytest.approx(20 / 3)


def test_ema_cuts_flicker_on_a_static_noisy_clip(model, tmp_path) -> None:
    photo = load_photo(SAMPLES["coffee"], 128)
    src = write_clip(tmp_path / "static.mp4", static_noisy(photo, 10, sigma=8.0))
    runs = {}
    for name, vopts in {"raw": VideoOptions(ema=False, bilateral=False, depth_zip=True),
                        "ema": VideoOptions(ema=True, bilateral=False, depth_zip=True)}.items():
        process_video(src, tmp_path / f"{name}.mp4", model, vopts=vopts)
        runs[name] = flicker(zip_depths(tmp_path / f"{name}.depth.zip")[0])
    assert runs["ema"] < 0.8 * runs["raw"], runs


def test_clip_normalisation_holds_a_static_region_steady(tmp_path) -> None:
    # left half: the same grey all along; right half: brightens from dark to white. With the brightness
    # model, the right half sets each frame's range, so per-frame normalisation makes the left half
    # flicker and one range for the clip does not.
    frames = []
    for i in range(8):
        f = np.full((64, 96, 3), 110, np.uint8)
        f[:, 48:] = 40 + 30 * i
        frames.append(f)
    src = write_clip(tmp_path / "ramp.mp4", frames)
    left = {}
    for norm in ("frame", "clip"):
        out = tmp_path / f"{norm}.mp4"
        result = process_video(src, out, brightness_model, Options(clip=0.0),
                               VideoOptions(ema=False, bilateral=False, norm=norm, view="gray"))
        left[norm] = [float(f[8:56, 8:40, 0].mean()) for f in read_video(out)]
        if norm == "clip":
            assert result.value_range is not None
    assert max(left["clip"]) - min(left["clip"]) <= 3  # steady, up to H.264 rounding
    assert max(left["frame"]) - min(left["frame"]) > 100  # from white (brightest) to black (darkest)


@pytest.mark.parametrize("layout,size",
                         [("sbs", (64, 192)), ("top-bottom", (128, 96)), ("sbs-half", (64, 96))])
def test_stereo_video_is_a_3d_clip_with_the_set_parallax(tmp_path, layout, size) -> None:
    """A bright (near, with the brightness model) square on a dark background: in the side-by-side
    frames the square sits 10 px further right in the left eye than in the right eye (divergence 10 %
    of 96 px, the background on the screen plane), for every frame; H.264, every frame kept."""
    frames = []
    for i in range(5):
        f = np.full((64, 96, 3), 20, np.uint8)
        f[20:44, 30 + i:54 + i] = 235
        frames.append(f)
    src = write_clip(tmp_path / "square.mp4", frames)
    out = tmp_path / "sbs.mp4"
    vopts = VideoOptions(view="stereo", layout=layout, divergence=10.0, convergence=0.0, ema=False,
                         bilateral=False)
    result = process_video(src, out, brightness_model, Options(), vopts)
    info = stream_info(out)
    assert (info["codec"], info["pix_fmt"], info["frames"]) == ("h264", "yuv420p", 5)
    assert (info["height"], info["width"]) == size == (result.height, result.width)
    if layout != "sbs":
        return
    for i, frame in enumerate(read_video(out)):
        centres = []
        for eye in (frame[:, :96], frame[:, 96:]):
            bright = eye[20:44, :, 0].astype(float) > 128
            centres.append(np.nonzero(bright)[1].mean())
        assert abs(centres[0] - (42 + i + 5)) <= 1 and abs(centres[1] - (42 + i - 5)) <= 1, (i, centres)


def test_clip_pass_gives_the_same_depth_as_one_pass(model, tmp_path) -> None:
    # pass 2 renders from the spooled network output: the depth must be the very same
    photo = load_photo(SAMPLES["rocket"], 200)
    src = write_clip(tmp_path / "pan.mp4", pan(photo, 8, 120, 80))
    depth = {}
    for norm in ("frame", "clip"):
        process_video(src, tmp_path / f"{norm}.mp4", model, vopts=VideoOptions(norm=norm, depth_zip=True))
        pngs, rows = zip_depths(tmp_path / f"{norm}.depth.zip")
        depth[norm] = [float(r["lo"]) + p / 65535.0 * (float(r["hi"]) - float(r["lo"]))
                       for p, r in zip(pngs, rows, strict=True)]
        assert len(pngs) == 8 and pngs[0].dtype == np.uint16 and pngs[0].shape == (80, 120)
        assert [float(r["time_s"]) for r in rows] == pytest.approx([i / 10 for i in range(8)])
    _, rows = zip_depths(tmp_path / "clip.depth.zip")
    assert len({(r["lo"], r["hi"]) for r in rows}) == 1  # one range for the clip
    step = max(float(rows[0]["hi"]) - float(rows[0]["lo"]), 1e-9) / 65535.0
    for a, b in zip(depth["frame"], depth["clip"], strict=True):
        assert np.abs(a - b).max() <= 2 * step


def test_truncated_clip_gives_the_frames_before_the_cut(model, tmp_path) -> None:
    src = write_clip(tmp_path / "fast.mp4", moving_scene(20, 96, 64), faststart=True)
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    result = process_video(cut, tmp_path / "out.mp4", model, vopts=PLAIN)
    assert 0 < result.frames < 20 and "truncated" in result.warning
    assert stream_info(tmp_path / "out.mp4")["frames"] == result.frames


def test_damaged_frames_fail_clearly(model, tmp_path) -> None:
    src = write_clip(tmp_path / "fast.mp4", moving_scene(6, 96, 64), faststart=True)
    bad = tmp_path / "zeroed.mp4"
    bad.write_bytes(zero_frames(src.read_bytes()))  # every frame's bytes zeroed; the index intact
    with pytest.raises(VideoError) as err:
        process_video(bad, tmp_path / "out.mp4", model, vopts=PLAIN)
    assert err.value.code == "corrupt"
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.mp4.part").exists()


def test_progress_can_stop_the_work_and_leaves_no_files(model, clip, tmp_path) -> None:
    calls = []

    class Stop(Exception):
        pass

    def progress(pass_no: int, passes: int, done: int, total: int) -> None:
        calls.append((pass_no, passes, done, total))
        if pass_no == 2 and done == 3:
            raise Stop()

    out = tmp_path / "out.mp4"
    with pytest.raises(Stop):
        process_video(clip, out, model, vopts=VideoOptions(depth_zip=True), progress=progress)
    assert calls[0] == (1, 2, 0, 8) and (1, 2, 8, 8) in calls and calls[-1] == (2, 2, 3, 8)
    assert list(tmp_path.iterdir()) == []  # no video, zip, spool or CSV left behind


def test_image_options_reach_the_frames(model, short, tmp_path) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    process_video(short, a, model, Options(), VideoOptions(view="gray"))
    process_video(short, b, model, Options(invert=True), VideoOptions(view="gray"))
    fa, fb = read_video(a)[2].astype(int), read_video(b)[2].astype(int)
    assert np.abs(fa + fb - 255).mean() < 4  # inverted
    crop = tmp_path / "crop.mp4"
    process_video(short, crop, model, Options(square="crop"), VideoOptions(view="side"))
    assert read_video(crop)[0].shape == (64, 128, 3)  # 64x64 crop, twice
