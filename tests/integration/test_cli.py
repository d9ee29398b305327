"""The installed ``depthmap`` console script, run as a real process on real files."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.depth.model import WEIGHTS_FILENAME, file_digest
from support.samples import SAMPLES, reference
from support.servers import DEPTHMAP, run_cli


VIEWS = ("heatmap", "overlay", "gray")


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for p in SAMPLES.values():
        shutil.copy(p, d / p.name)
    return d


def test_console_script_is_installed() -> None:
    assert DEPTHMAP.is_file(), "pip install -e . should install the depthmap console script"


def test_predict_folder_with_bad_files(weights_path, photo_dir, tmp_path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.jpg").write_text("not an image at all")
    (bad / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    proc = run_cli(["predict", str(photo_dir), str(bad / "notes.jpg"), str(bad / "empty.png"),
                    "--weights", str(weights_path), "--out", str(out)])
    assert proc.returncode == 1, proc.stderr
    assert "notes.jpg: The file is not an image" in proc.stderr
    assert "empty.png: The file is empty" in proc.stderr
    assert "4 of 6 photos done" in proc.stderr
    for name, src in SAMPLES.items():
        h, w = png(src).shape[:2]
        for view in VIEWS:
            img = png(out / f"{name}.{view}.png")
            assert img.shape[:2] == (h, w), (name, view)
        depth = np.load(out / f"{name}.depth.npy")
        ref = reference(name, "upsampled")
        assert depth.dtype == np.float32 and depth.shape == (h, w)
        assert np.abs(depth - ref).max() <= 1e-4 * np.abs(ref).max()  # raw, not normalised
    assert not (out / "notes.heatmap.png").exists()


def test_predict_writes_exr_and_normals_on_request(weights_path, tmp_path) -> None:
    import av

    from app.imaging.normals import normal_map
    from app.options import NormalOptions

    out = tmp_path / "out"
    proc = run_cli(["predict", str(SAMPLES["coffee"]), "--weights", str(weights_path), "--out", str(out),
                    "--exr", "--normals", "--normal-strength", "2", "--normal-convention", "directx"])
    assert proc.returncode == 0, proc.stderr
    depth = np.load(out / "coffee.depth.npy")
    with av.open(str(out / "coffee.depth.exr")) as container:  # FFmpeg's own EXR decoder
        assert np.array_equal(next(container.decode(video=0)).to_ndarray(), depth)
    want = normal_map(depth, NormalOptions(normal_strength=2.0, normal_convention="directx"))
    assert np.array_equal(png(out / "coffee.normals.png"), want)
    plain = tmp_path / "plain"
    assert run_cli(["predict", str(SAMPLES["coffee"]), "--weights", str(weights_path), "--out",
                    str(plain)]).returncode == 0
    assert sorted(p.name for p in plain.iterdir()) == [f"coffee.{k}" for k in (
        "depth.npy", "gray.png", "heatmap.png", "overlay.png")]


def test_stereo_writes_the_layout_asked_for(weights_path, tmp_path) -> None:
    from app.options import StereoOptions
    from app.imaging.stereo import stereo

    out = tmp_path / "out"
    proc = run_cli(["stereo", str(SAMPLES["rocket"]), str(SAMPLES["chelsea"]), "--weights", str(weights_path),
                    "--out", str(out), "--layout", "sbs-half", "--divergence", "3", "--convergence", "0.2",
                    "--swap-eyes"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.sbs-half.png", "rocket.sbs-half.png"]
    # the same image the core makes from the same depth (the CLI's depth, from predict)
    depth_dir = tmp_path / "depth"
    assert run_cli(["predict", str(SAMPLES["chelsea"]), "--weights", str(weights_path), "--out",
                    str(depth_dir)]).returncode == 0
    photo = np.asarray(Image.open(SAMPLES["chelsea"]).convert("RGB"))
    want = stereo(photo, np.load(depth_dir / "chelsea.depth.npy"),
                  StereoOptions(layout="sbs-half", divergence=3.0, convergence=0.2, swap_eyes=True))
    assert np.array_equal(png(out / "chelsea.sbs-half.png"), want)


def test_stereo_bad_option_exits_2(weights_path, tmp_path) -> None:
    proc = run_cli(["stereo", str(SAMPLES["rocket"]), "--weights", str(weights_path), "--divergence", "12"])
    assert proc.returncode == 2 and "divergence: must be between 0.0 and 10.0" in proc.stderr


def test_predict_options_reach_the_views(weights_path, tmp_path) -> None:
    out = tmp_path / "out"
    proc = run_cli(["predict", str(SAMPLES["chelsea"]), "--weights", str(weights_path), "--out", str(out),
                    "--colormap", "gray", "--alpha", "0", "--size", "384", "--clahe", "--log", "--invert"])
    assert proc.returncode == 0, proc.stderr
    heat, over, gray = (png(out / f"chelsea.{v}.png") for v in VIEWS)
    np.testing.assert_array_equal(heat[:, :, 1], gray)  # gray colormap: every channel is the gray view
    np.testing.assert_array_equal(over, png(SAMPLES["chelsea"]))


def test_upsampling_and_flip_reach_the_depth(weights_path, tmp_path) -> None:
    depths = {}
    for name, args in {"plain": [], "guided": ["--upsample", "guided", "--guided-radius", "1.5"],
                       "flip": ["--flip"]}.items():
        out = tmp_path / name
        proc = run_cli(["predict", str(SAMPLES["rocket"]), "--weights", str(weights_path), "--out", str(out),
                        *args])
        assert proc.returncode == 0, proc.stderr
        depths[name] = np.load(out / "rocket.depth.npy")
    assert all(d.shape == depths["plain"].shape and d.dtype == np.float32 for d in depths.values())
    assert not np.array_equal(depths["guided"], depths["plain"])
    assert not np.array_equal(depths["flip"], depths["plain"])


@pytest.mark.parametrize("args,needle", [
    (["--upsample", "nearest"], "'nearest' is not one of"),
    (["--guided-eps", "0"], "--guided-eps: must be between"),
    (["--alpha", "2"], "alpha: must be between 0.0 and 1.0"),
    (["--contrast", "nan"], "contrast: must be a finite number"),
    (["--colormap", "nope"], "'nope' is not one of"),
    (["--size", "300"], "'300' is not one of"),
])
def test_bad_options_exit_2_with_a_message(weights_path, tmp_path, args, needle) -> None:
    proc = run_cli(["predict", str(SAMPLES["chelsea"]), "--weights", str(weights_path), *args])
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr


def test_missing_weights_is_one_clear_line(tmp_path) -> None:
    proc = run_cli(["predict", str(SAMPLES["chelsea"]), "--weights", str(tmp_path / "none.pt"),
                    "--out", str(tmp_path / "out")])
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "Weights file not found" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_first_run_downloads_into_the_cache(weights_server, weights_path, tmp_path) -> None:
    cache = tmp_path / "cache"
    env = {"DEPTHMAP_CACHE": str(cache), "MIDAS_WEIGHTS_URL": f"{weights_server}/{WEIGHTS_FILENAME}",
           "MIDAS_WEIGHTS_DIGEST": "gitblob:" + file_digest(weights_path, "gitblob")}
    proc = run_cli(["predict", str(SAMPLES["rocket"]), "--out", str(tmp_path / "out")], env=env)
    assert proc.returncode == 0, proc.stderr
    assert (cache / WEIGHTS_FILENAME).read_bytes() == weights_path.read_bytes()
    assert (tmp_path / "out" / "rocket.depth.npy").is_file()


def test_downloading_off_is_honoured(weights_server, weights_path, tmp_path) -> None:
    env = {"DEPTHMAP_CACHE": str(tmp_path / "cache"), "DEPTHMAP_WEIGHTS_DOWNLOAD": "false",
           "MIDAS_WEIGHTS_URL": f"{weights_server}/{WEIGHTS_FILENAME}",
           "MIDAS_WEIGHTS_DIGEST": "gitblob:" + file_digest(weights_path, "gitblob")}
    proc = run_cli(["predict", str(SAMPLES["rocket"]), "--out", str(tmp_path / "out")], env=env)
    assert proc.returncode == 2 and "downloading is off" in proc.stderr, proc.stderr
    assert not (tmp_path / "cache" / WEIGHTS_FILENAME).exists() and not (tmp_path / "out").exists()


def test_same_stem_twice_does_not_overwrite(weights_path, tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
    Image.new("RGB", (64, 32), (200, 0, 0)).save(a / "x.png")
    Image.new("RGB", (32, 64), (0, 200, 0)).save(b / "x.png")
    out = tmp_path / "out"
    proc = run_cli(["predict", str(a), str(b), "--weights", str(weights_path), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert png(out / "x.overlay.png").shape == (32, 64, 3)
    assert png(out / "x-2.overlay.png").shape == (64, 32, 3)


def test_engine_option_reaches_the_model(weights_path, tmp_path) -> None:
    out = tmp_path / "out"
    proc = run_cli(["predict", str(SAMPLES["coffee"]), "--weights", str(weights_path), "--out", str(out),
                    "--engine", "eager"])
    assert proc.returncode == 0, proc.stderr
    assert "engine eager (fp32)" in proc.stderr
    ref = reference("coffee", "upsampled")
    assert np.abs(np.load(out / "coffee.depth.npy") - ref).max() <= 1e-4 * np.abs(ref).max()


def test_unknown_engine_exits_2(weights_path) -> None:
    proc = run_cli(["predict", str(SAMPLES["chelsea"]), "--weights", str(weights_path), "--engine", "tpu"])
    assert proc.returncode == 2 and "'tpu' is not one of" in proc.stderr


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_engine_this_machine_cannot_run_is_one_clear_line(monkeypatch, caplog, weights_path, command) -> None:
    """An engine whose extra is missing (or bf16 on a CPU without it): exit 2 with what to do, before
    any model is loaded or any server started."""
    from click.testing import CliRunner

    from app import cli

    # serve asks the first, a model's loading the second
    for where in ("app.depth.engines", "app.depth.model"):
        monkeypatch.setattr(f"{where}.engine_problem",
                            lambda engine, model="midas-small": f"The {engine} engine needs X: do Y.")
    monkeypatch.setattr("os.execve", lambda *a: pytest.fail("gunicorn started"))
    args = [command, "--engine", "openvino", "--weights", str(weights_path)]
    result = CliRunner().invoke(cli.main, args + ([str(SAMPLES["chelsea"])] if command == "predict" else []))
    assert result.exit_code == 2
    assert "The openvino engine needs X: do Y." in caplog.text + result.output


def test_cli_lists_the_models_engines() -> None:
    from app import cli
    from app.depth.engines import ENGINES

    assert cli.ENGINES == ("auto",) + ENGINES
