"""Video limits hold for every frame a job decodes, whatever the file's headers say: the frame count and
the duration in every container the studio reads, and the pixels of each frame (a stream that grows
midway, which `probe` cannot see, is stopped at the first larger frame). With the limits, nothing of a
refused clip's output is left behind."""

from __future__ import annotations

from fractions import Fraction

import pytest

from app.options import Options, VideoOptions
from app.imaging.video import FrameReader, Limits, VideoError, probe, process_video
from support.clips import moving_scene, size_change_ts, write_clip

CONTAINERS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".ts")


@pytest.mark.parametrize("suffix", CONTAINERS)
def test_frame_and_duration_limits_hold_while_decoding_in_every_container(tmp_path, suffix) -> None:
    clip = write_clip(tmp_path / f"scene{suffix}", moving_scene(12, 64, 48), fps=10)
    fps = Fraction(10)
    # the reader alone, as a job decodes: it does not ask what the headers said
    with pytest.raises(VideoError) as frames:
        list(FrameReader(clip, 64, limits=Limits(max_frames=7), fps=fps))
    assert frames.value.code == "too_long" and "more than 7 frames" in frames.value.message
    with pytest.raises(VideoError) as seconds:
        list(FrameReader(clip, 64, limits=Limits(max_seconds=0.3), fps=fps))
    assert seconds.value.code == "too_long" and "the limit is 0.3 s" in seconds.value.message
    # at the limits (the same half-second leeway as probe's), every frame comes through
    limits = Limits(max_frames=12, max_seconds=1.2, max_pixels=64 * 48)
    at_limits = FrameReader(clip, 64, limits=limits, fps=fps)
    assert len(list(at_limits)) == 12 and at_limits.stopped is None


def test_a_stream_that_grows_midway_is_stopped_at_its_first_larger_frame(tmp_path) -> None:
    clip = size_change_ts(tmp_path / "grows.ts", (10, 160, 120), (4, 640, 480))
    limits = Limits(max_pixels=160 * 120)
    info = probe(clip, limits)  # the headers show the first size only: accepted at upload
    assert (info.width, info.height, info.frames) == (160, 120, 14)
    assert sum(1 for _ in FrameReader(clip, 640)) == 14  # without a limit the large frames decode
    reader = FrameReader(clip, 640, limits=limits)
    with pytest.raises(VideoError) as grown:
        for rgb in reader:
            assert rgb.shape == (120, 160, 3)
    assert grown.value.code == "too_large" and "640x480" in grown.value.message
    assert reader.read <= 10  # no frame past the size change was given out


@pytest.mark.parametrize("norm", ["clip", "frame"])
def test_a_clip_refused_midway_leaves_no_file(tmp_path, model, norm) -> None:
    clip = size_change_ts(tmp_path / "grows.ts", (6, 96, 64), (3, 320, 240))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VideoError) as refused:
        process_video(clip, out / "grows.depth.mp4", model, Options(),
                      VideoOptions.from_strings({"norm": norm, "depth_zip": "on"}),
                      limits=Limits(max_pixels=96 * 64))
    assert refused.value.code == "too_large"
    assert list(out.iterdir()) == []  # no part file, spool or frames.csv
