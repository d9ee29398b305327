"""``depthmap video`` as a real process on real files."""

from __future__ import annotations

import zipfile

import pytest

from support.clips import moving_scene, stream_info, write_clip
from support.servers import run_cli


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "walk.webm", moving_scene(8, 96, 64))


def test_video_with_options_and_zip(weights_path, clip, tmp_path) -> None:
    out = tmp_path / "out" / "walk.mp4"
    proc = run_cli(["video", str(clip), "--out", str(out), "--weights", str(weights_path), "--view", "side",
                    "--colormap", "turbo", "--no-ema", "--ema-alpha", "0.5", "--no-bilateral", "--norm",
                    "frame", "--stride", "2", "--depth-zip"])
    assert proc.returncode == 0, proc.stderr
    info = stream_info(out)
    assert (info["codec"], info["width"], info["height"], info["frames"]) == ("h264", 192, 64, 4)
    assert "4 frames, 192x64 at 5 fps" in proc.stderr
    names = zipfile.ZipFile(out.with_name("walk.depth.zip")).namelist()
    assert len(names) == 5 and "frames.csv" in names


def test_video_defaults_name_the_output_after_the_input(weights_path, clip, tmp_path) -> None:
    proc = run_cli(["video", str(clip), "--weights", str(weights_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stream_info(tmp_path / "walk.depth.mp4")["frames"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.depth.mp4"]  # no zip, spool or part


@pytest.mark.parametrize("content,needle", [
    (b"", "The file is empty"),
    (b"plain text, not a video" * 8, "not a video"),
])
def test_bad_video_exits_1_with_one_line(weights_path, tmp_path, content, needle) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    proc = run_cli(["video", str(bad), "--weights", str(weights_path), "--out", str(tmp_path / "o.mp4")])
    assert proc.returncode == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("args,needle", [
    (["--stride", "0"], "stride: must be between 1 and 30"),
    (["--view", "3d"], "'3d' is not one of"),
    (["--norm", "global"], "'global' is not one of"),
    (["--ema-alpha", "0"], "ema-alpha: must be between"),
])
def test_bad_video_options_exit_2(weights_path, clip, args, needle) -> None:
    proc = run_cli(["video", str(clip), "--weights", str(weights_path), *args])
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr


def test_engine_option_reaches_the_video_model(weights_path, clip, tmp_path) -> None:
    proc = run_cli(["video", str(clip), "--weights", str(weights_path), "--engine", "eager"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "engine eager (fp32)" in proc.stderr


def test_no_weights_and_downloading_off_exits_2(weights_server, clip, tmp_path) -> None:
    """DEPTHMAP_WEIGHTS_DOWNLOAD=false holds for the CLI as for the server: no download, one line."""
    env = {"DEPTHMAP_CACHE": str(tmp_path / "cache"), "MIDAS_WEIGHTS_URL": f"{weights_server}/junk.pt",
           "DEPTHMAP_WEIGHTS_DOWNLOAD": "false"}
    proc = run_cli(["video", str(clip), "--out", str(tmp_path / "o.mp4")], env=env)
    assert proc.returncode == 2 and "downloading is off" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "o.mp4").exists()


def test_motion_jpeg_avi_is_a_video(weights_path, tmp_path) -> None:
    """What webcams, cameras and OpenCV write: Motion-JPEG in AVI, every frame a JPEG."""
    src = write_clip(tmp_path / "cam.avi", moving_scene(6, 96, 64), codec="mjpeg")
    proc = run_cli(["video", str(src), "--weights", str(weights_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stream_info(tmp_path / "cam.depth.mp4")["frames"] == 6
