"""Depth Anything V2 Small through the studio's whole chain, photo file -> depth, against the official
implementation's outputs (../shared/models/depth_anything_v2_small/reference) on every path a user takes:
the pipeline, a server that loads both models (API, page, exports, healthz), the command line and video.

The network alone, engine by engine, is tested in test_dav2_network.py.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from app.depth.registry import DEPTH_ANYTHING_V2_SMALL as DAV2
from app.options import Options
from app.imaging.pipeline import predict
from support.clips import write_clip
from support.forms import form_data, post_depth
from support.samples import DAV2_REFERENCES, SAMPLES, dav2_reference
from support.servers import run_cli

TOLERANCE = 1e-4  # max |ours - official| / max |official|: the bound for fp32 engines


def rel_error(ours: np.ndarray, official: np.ndarray) -> float:
    assert ours.shape == official.shape
    return float(np.abs(ours.astype(np.float64) - official).max() / np.abs(official).max())


@pytest.mark.parametrize("name,size", DAV2_REFERENCES, ids=[f"{n}-{s}" for n, s in DAV2_REFERENCES])
def test_photo_file_to_depth_is_the_official_chain(dav2_model, dav2_reference_dir, name, size) -> None:
    result = predict(SAMPLES[name].read_bytes(), dav2_model, Options(model=DAV2.name, size=size))
    assert rel_error(result.pred, dav2_reference(dav2_reference_dir, name, size, "net_output")) <= TOLERANCE
    assert rel_error(result.depth, dav2_reference(dav2_reference_dir, name, size, "upsampled")) <= TOLERANCE


def test_size_zero_is_the_official_518(dav2_model, dav2_reference_dir) -> None:
    opts = Options(model=DAV2.name)
    assert opts.size == 518
    result = predict(SAMPLES["astronaut"].read_bytes(), dav2_model, opts)
    official = dav2_reference(dav2_reference_dir, "astronaut", 518, "upsampled")
    assert rel_error(result.depth, official) <= TOLERANCE


def test_a_server_with_both_models(two_model_app, dav2_reference_dir, samples) -> None:
    client = two_model_app.test_client()
    health = client.get("/healthz").get_json()
    assert health["model"] == "midas-small"  # the first named is the default
    assert [m["name"] for m in health["models"]] == ["midas-small", DAV2.name]
    assert health["models"][1]["sizes"] == [364, 518] and health["models"][1]["licence"] == "Apache-2.0"

    midas = post_depth(client, samples["coffee"], views="none").get_json()
    assert midas["options"]["model"] == "midas-small" and midas["options"]["size"] == 256
    r = post_depth(client, samples["coffee"], views="heatmap", model=DAV2.name, size="364")
    body = r.get_json()
    assert r.status_code == 200 and body["options"]["model"] == DAV2.name and body["options"]["size"] == 364
    assert body["depth_id"] != midas["depth_id"]  # one id per model for the same photo
    raw = np.load(io.BytesIO(client.get(f"/api/v1/depth/{body['depth_id']}.npy").data))
    assert rel_error(raw, dav2_reference(dav2_reference_dir, "coffee", 364, "upsampled")) <= TOLERANCE

    # a size of the other model: a clear 422 that names the model's own sizes
    bad = post_depth(client, samples["coffee"], views="none", model=DAV2.name, size="256")
    assert bad.status_code == 422 and bad.get_json()["error"] == "bad_option"
    assert "364 or 518" in bad.get_json()["message"]

    # re-rendering a MiDaS result with the other model runs the same upload through it: the depth of the
    # other model's own upload (a result of the MiDaS result's owner, not of that upload's), then kept
    to_dav2 = {"depth_id": midas["depth_id"], "model": DAV2.name, "size": 364, "views": "none"}
    again = client.post("/api/v1/render", json=to_dav2).get_json()
    assert again["depth_id"] not in (body["depth_id"], midas["depth_id"]) and not again["cached"]
    assert np.array_equal(np.load(io.BytesIO(client.get(f"/api/v1/depth/{again['depth_id']}.npy").data)), raw)
    assert client.post("/api/v1/render", json=to_dav2).get_json()["depth_id"] == again["depth_id"]

    # everything downstream takes the new model's depth unchanged
    exported = client.get(f"/api/v1/depth/{body['depth_id']}.zip")
    assert exported.status_code == 200 and zipfile.ZipFile(io.BytesIO(exported.data)).namelist()
    stereo = client.get(f"/api/v1/depth/{body['depth_id']}/stereo.png?layout=anaglyph")
    assert stereo.status_code == 200 and stereo.mimetype == "image/png"
    legend = client.get(f"/api/v1/depth/{body['depth_id']}/legend.json").get_json()
    assert "relative inverse depth" in legend["unit"]

    page = client.get("/").get_data(as_text=True)
    assert 'name="model"' in page and f'value="{DAV2.name}"' in page and "Depth Anything V2 Small" in page


def test_a_model_the_server_does_not_load_is_a_clear_422(client, samples) -> None:
    r = post_depth(client, samples["coffee"], views="none", model=DAV2.name)
    body = r.get_json()
    assert r.status_code == 422 and body["error"] == "bad_option"
    assert "not loaded" in body["message"] and "midas-small" in body["message"]
    page = client.get("/").get_data(as_text=True)
    assert 'id="f-model"' not in page  # one model: no selector


def test_predict_command_with_the_model_flag(dav2_weights_path, dav2_reference_dir, tmp_path) -> None:
    out = tmp_path / "out"
    run = run_cli(["predict", str(SAMPLES["rocket"]), "--model", DAV2.name, "--size", "364",
                   "--weights", str(dav2_weights_path), "--out", str(out)])
    assert run.returncode == 0, run.stderr
    depth = np.load(out / "rocket.depth.npy")
    assert rel_error(depth, dav2_reference(dav2_reference_dir, "rocket", 364, "upsampled")) <= TOLERANCE
    assert {p.name for p in out.iterdir()} >= {"rocket.heatmap.png", "rocket.gray.png", "rocket.overlay.png"}


def test_the_other_models_weights_are_one_clear_line(weights_path, tmp_path) -> None:
    run = run_cli(["predict", str(SAMPLES["rocket"]), "--model", DAV2.name, "--weights", str(weights_path),
                   "--out", str(tmp_path / "out")])
    assert run.returncode == 2
    assert "does not fit Depth Anything V2 Small" in run.stderr and "Traceback" not in run.stderr


def test_video_with_depth_anything(dav2_model, tmp_path) -> None:
    from app.options import VideoOptions
    from app.imaging.video import process_video

    rng = np.random.default_rng(3)
    frames = [np.clip(rng.normal(120, 40, (96, 128, 3)) + i * 10, 0, 255).astype(np.uint8) for i in range(3)]
    src = write_clip(tmp_path / "clip.mp4", frames)
    result = process_video(src, tmp_path / "out.mp4", dav2_model, Options(model=DAV2.name, size=364),
                           VideoOptions(norm="frame"))
    assert result.frames == 3 and (tmp_path / "out.mp4").stat().st_size > 0


def test_form_without_javascript_takes_the_model(two_model_app, samples) -> None:
    client = two_model_app.test_client()
    r = client.post("/", **form_data({"image": (samples["chelsea"], "chelsea.png"), "model": DAV2.name,
                                      "size": "364"}))
    assert r.status_code == 303
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert f'<option value="{DAV2.name}" selected' in page and '<option value="364" selected' in page



def test_weights_download_checks_digest_and_fit(dav2_weights_server, dav2_weights_path, weights_path,
                                                tmp_path) -> None:
    from app.depth.model import file_digest, resolve_weights
    from app.depth.registry import WeightsError

    digest = "sha256:" + file_digest(dav2_weights_path, "sha256")
    url = f"{dav2_weights_server}/{DAV2.weights_filename}"
    got = resolve_weights(None, cache=tmp_path / "cache", url=url, digest=digest, model=DAV2)
    assert got == tmp_path / "cache" / DAV2.weights_filename
    assert got.read_bytes() == dav2_weights_path.read_bytes()
    # cached now: found again without the server
    assert resolve_weights(None, cache=tmp_path / "cache", url="http://127.0.0.1:9/x", model=DAV2) == got

    wrong = f"{dav2_weights_server}/wrong/{DAV2.weights_filename}"  # MiDaS's file under this name
    with pytest.raises(WeightsError, match="corrupt or not the official file"):
        resolve_weights(None, cache=tmp_path / "c2", url=wrong, digest=digest, model=DAV2)
    # a mirror's own digest matches, but the strict load refuses the tensors: nothing lands in the cache
    with pytest.raises(WeightsError, match="does not fit Depth Anything V2 Small"):
        resolve_weights(None, cache=tmp_path / "c3", url=wrong, model=DAV2,
                        digest="sha256:" + file_digest(weights_path, "sha256"))
    assert not (tmp_path / "c3" / DAV2.weights_filename).exists()
    # offline: one message naming the file, its URL and the variable to set
    with pytest.raises(WeightsError) as info:
        resolve_weights(None, cache=tmp_path / "c4", url="http://127.0.0.1:9/x", model=DAV2)
    assert DAV2.weights_filename in str(info.value) and "DAV2_WEIGHTS" in str(info.value)


def test_an_error_keeps_the_chosen_model_and_size(two_model_app) -> None:
    client = two_model_app.test_client()
    fields = {"image": (b"not an image", "x.png"), "model": DAV2.name, "size": "364"}
    r = client.post("/", **form_data(fields))
    page = r.get_data(as_text=True)
    assert r.status_code == 415 and "supported format" in page  # the form again, with its error
    assert f'<option value="{DAV2.name}" selected' in page and '<option value="364" selected' in page
