"""The JSON API with Flask's test client: every route, and every error as JSON with the right status."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from app.serving.store import FileStore
from app.options import Options
from app.imaging.pipeline import predict
from support.forms import form_data, post_depth
from support.images import photo_size, pil_bytes, png_header_only, truncated
from support.samples import SAMPLES


def data_uri_image(uri: str, fmt: str = "PNG") -> np.ndarray:
    prefix = f"data:image/{fmt.lower()};base64,"
    assert uri.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):], validate=True))) as im:
        assert im.format == fmt
        return np.asarray(im)


def jpeg_array(data: bytes) -> np.ndarray:
    assert data.startswith(b"\xff\xd8\xff")
    return np.asarray(Image.open(io.BytesIO(data)))


def png_array(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG")
    return np.asarray(Image.open(io.BytesIO(data)))


def test_depth_answers_views_id_and_timings(client, samples) -> None:
    r = post_depth(client, samples["chelsea"], "chelsea.png")
    assert r.status_code == 200 and r.mimetype == "application/json"
    body = r.get_json()
    width, height = photo_size(samples["chelsea"])
    assert (body["width"], body["height"]) == (width, height)
    assert re.fullmatch(r"[0-9a-f]{32}", body["depth_id"]) and r.headers["X-Depth-Id"] == body["depth_id"]
    assert set(body["views"]) == {"heatmap", "overlay", "gray"}
    assert data_uri_image(body["views"]["heatmap"]).shape == (height, width, 3)
    assert data_uri_image(body["views"]["overlay"]).shape == (height, width, 3)
    assert data_uri_image(body["views"]["gray"]).shape == (height, width)
    assert {"decode", "infer", "render", "encode", "total"} <= set(body["timings_ms"])
    assert body["options"] == Options().as_dict()
    assert "infer;dur=" in r.headers["Server-Timing"]


def test_same_photo_again_with_its_owner_token_comes_from_the_cache(client, samples) -> None:
    first = post_depth(client, samples["coffee"], views="none").get_json()
    again = post_depth(client, samples["coffee"], views="none",
                       headers={"X-Owner-Token": first["owner_token"]}).get_json()
    assert again["depth_id"] == first["depth_id"] and again["cached"]
    assert again["timings_ms"]["infer"] == 0.0 and again["owner_token"] == first["owner_token"]


def test_options_reach_the_pipeline(client, samples) -> None:
    body = post_depth(client, samples["rocket"], colormap="gray", views="heatmap,gray").get_json()
    heat, gray = (data_uri_image(body["views"][v]) for v in ("heatmap", "gray"))
    assert list(body["views"]) == ["heatmap", "gray"]
    assert np.array_equal(heat[..., 0], gray) and np.array_equal(heat[..., 2], gray)
    inverted = post_depth(client, samples["rocket"], invert="true", views="gray").get_json()
    flipped = data_uri_image(inverted["views"]["gray"]).astype(int)
    assert np.abs(flipped - (255 - gray.astype(int))).max() <= 1  # rounding either side of .5


@pytest.mark.parametrize("views, expected", [
    ("heatmap", ["heatmap"]), ("none", []), ("", []), ("all", ["heatmap", "overlay", "gray"]),
    ("overlay, gray", ["overlay", "gray"]), ("gray,gray", ["gray"]),
])
def test_views_option_picks_views(client, samples, views, expected) -> None:
    body = post_depth(client, samples["chelsea"], views=views).get_json()
    assert list(body["views"]) == expected


def test_accept_png_with_one_view_returns_the_png(client, samples) -> None:
    r = post_depth(client, samples["chelsea"], view="gray", headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.mimetype == "image/png"
    width, height = photo_size(samples["chelsea"])
    assert png_array(r.data).shape == (height, width)
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Depth-Id"])


def test_accept_png_with_several_views_is_refused(client, samples) -> None:
    r = post_depth(client, samples["chelsea"], headers={"Accept": "image/png"})
    assert r.status_code == 406 and r.get_json()["error"] == "not_acceptable"


def test_format_jpeg_gives_jpeg_colour_views_and_a_lossless_gray(client, samples) -> None:
    png = post_depth(client, samples["chelsea"]).get_json()
    r = post_depth(client, samples["chelsea"], format="jpeg", headers={"X-Owner-Token": png["owner_token"]})
    assert r.status_code == 200 and r.mimetype == "application/json"
    body = r.get_json()
    assert body["depth_id"] == png["depth_id"] and list(body["views"]) == ["heatmap", "overlay", "gray"]
    for view in ("heatmap", "overlay"):
        lossy = data_uri_image(body["views"][view], "JPEG").astype(int)
        exact = data_uri_image(png["views"][view]).astype(int)
        assert lossy.shape == exact.shape and 0 < np.abs(lossy - exact).mean() < 4  # close, not equal
    assert np.array_equal(data_uri_image(body["views"]["gray"]), data_uri_image(png["views"]["gray"]))


def test_accept_jpeg_with_one_view_returns_the_jpeg(client, samples) -> None:
    accept = {"Accept": "image/jpeg"}
    r = post_depth(client, samples["chelsea"], view="heatmap", format="jpeg", headers=accept)
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    width, height = photo_size(samples["chelsea"])
    assert jpeg_array(r.data).shape == (height, width, 3)
    gray = post_depth(client, samples["chelsea"], view="gray", format="jpeg", headers={"Accept": "image/*"})
    assert gray.status_code == 200 and gray.mimetype == "image/png"  # gray stays lossless
    several = post_depth(client, samples["chelsea"], format="jpeg", headers=accept)
    assert several.status_code == 406 and several.get_json()["error"] == "not_acceptable"


def test_render_from_cache_changes_the_image_not_the_depth(client, app, samples) -> None:
    first = post_depth(client, samples["astronaut"], views="heatmap").get_json()
    calls = []
    service = app.extensions["depth_service"]
    model = service.models["midas-small"]
    service.models["midas-small"] = lambda x: calls.append(1) or model(x)
    try:
        r = client.post("/api/v1/render", json={"depth_id": first["depth_id"], "colormap": "viridis",
                                                 "views": "heatmap"})
        fields = {"depth_id": first["depth_id"], "colormap": "viridis", "views": "heatmap"}
        form = client.post("/api/v1/render", **form_data(fields))
    finally:
        service.models["midas-small"] = model
    body = r.get_json()
    assert r.status_code == 200 and not calls and body["depth_id"] == first["depth_id"] and body["cached"]
    assert body["views"] == form.get_json()["views"]
    before, after = (data_uri_image(b["views"]["heatmap"]) for b in (first, body))
    assert before.shape == after.shape and not np.array_equal(before, after)
    assert body["timings_ms"]["infer"] == 0.0 and body["options"]["colormap"] == "viridis"


def test_render_with_a_new_size_reinfers_and_gives_a_new_id(client, app, samples, monkeypatch,
                                                             tmp_path) -> None:
    monkeypatch.setattr(app.extensions["depth_service"], "store", FileStore(tmp_path, 10**9, 3600))  # empty
    first = post_depth(client, samples["rocket"], views="none").get_json()
    r = client.post("/api/v1/render", json={"depth_id": first["depth_id"], "size": 384, "views": "gray"})
    body = r.get_json()
    assert r.status_code == 200 and body["depth_id"] != first["depth_id"] and not body["cached"]
    assert body["options"]["size"] == 384 and (body["width"], body["height"]) == photo_size(samples["rocket"])
    # the options of the depth are kept when a render does not name them
    again = client.post("/api/v1/render", json={"depth_id": body["depth_id"], "views": "none"}).get_json()
    assert again["options"]["size"] == 384 and again["depth_id"] == body["depth_id"]


def test_new_upsampling_rerenders_without_inference(client, app, samples) -> None:
    first = post_depth(client, samples["chelsea"], views="none").get_json()
    service = app.extensions["depth_service"]
    model, calls = service.models["midas-small"], []
    service.models["midas-small"] = lambda x: calls.append(1) or model(x)
    try:
        r = client.post("/api/v1/render", json={"depth_id": first["depth_id"], "upsample": "guided",
                                                 "guided_radius": 1, "views": "none"})
    finally:
        service.models["midas-small"] = model
    body = r.get_json()
    assert r.status_code == 200 and not calls and body["depth_id"] != first["depth_id"]
    assert body["options"]["upsample"] == "guided" and body["timings_ms"]["infer"] == 0.0
    plain, guided = (np.load(io.BytesIO(client.get(f"/api/v1/depth/{i}.npy").data))
                     for i in (first["depth_id"], body["depth_id"]))
    assert plain.shape == guided.shape and not np.array_equal(plain, guided)
    # a view URL for the new depth needs no upsampling options: they belong to its depth_id
    assert client.get(f"/api/v1/depth/{body['depth_id']}/heatmap.png").status_code == 200


def test_raw_depth_is_the_float32_prediction(app, client, samples) -> None:
    body = post_depth(client, samples["coffee"], "coffee.png", views="none").get_json()
    r = client.get(f"/api/v1/depth/{body['depth_id']}.npy")
    assert r.status_code == 200 and 'filename="coffee.depth.npy"' in r.headers["Content-Disposition"]
    depth = np.load(io.BytesIO(r.data), allow_pickle=False)
    # the app's own model (auto: whichever exact engine this machine runs fastest)
    expected = predict(samples["coffee"], app.extensions["depth_models"]["midas-small"], Options()).depth
    assert depth.dtype == np.float32 and depth.shape == (body["height"], body["width"])
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-6)


def test_view_images_by_url(client, samples) -> None:
    body = post_depth(client, samples["chelsea"], "chelsea.png", views="overlay").get_json()
    base = f"/api/v1/depth/{body['depth_id']}"
    photo = client.get(f"{base}/photo.png")
    width, height = photo_size(samples["chelsea"])
    assert photo.status_code == 200 and png_array(photo.data).shape == (height, width, 3)
    assert np.array_equal(png_array(photo.data), np.asarray(Image.open(io.BytesIO(samples["chelsea"]))))
    overlay = client.get(f"{base}/overlay.png")
    assert np.array_equal(png_array(overlay.data), data_uri_image(body["views"]["overlay"]))
    download = client.get(f"{base}/heatmap.png?colormap=jet&download=1")
    assert 'filename="chelsea.heatmap.png"' in download.headers["Content-Disposition"]
    assert "max-age" in download.headers["Cache-Control"]
    jpeg = client.get(f"{base}/overlay.png?format=jpeg&download=1")
    assert jpeg.status_code == 200 and jpeg.mimetype == "image/jpeg"
    assert 'filename="chelsea.overlay.jpg"' in jpeg.headers["Content-Disposition"]
    assert np.abs(jpeg_array(jpeg.data).astype(int) - png_array(overlay.data)).mean() < 4
    photo_jpeg = client.get(f"{base}/photo.png?format=jpeg&max_side=200")
    assert photo_jpeg.mimetype == "image/jpeg" and max(jpeg_array(photo_jpeg.data).shape) == 200
    gray = client.get(f"{base}/gray.png?format=jpeg&download=1")
    assert gray.mimetype == "image/png"  # gray stays lossless
    assert 'filename="chelsea.gray.png"' in gray.headers["Content-Disposition"]


def test_unicode_filename_survives_in_downloads(client, samples) -> None:
    body = post_depth(client, samples["rocket"], "火箭.jpg", views="none").get_json()
    r = client.get(f"/api/v1/depth/{body['depth_id']}.npy")
    assert "filename*=UTF-8''%E7%81%AB%E7%AE%AD.depth.npy" in r.headers["Content-Disposition"]


def test_deleted_depth_is_a_404_with_advice(client, samples) -> None:
    body = post_depth(client, samples["chelsea"], views="none").get_json()
    assert client.get(f"/api/v1/depth/{body['depth_id']}.npy").status_code == 200
    owner = {"X-Owner-Token": body["owner_token"]}
    deleted = client.delete(f"/api/v1/depth/{body['depth_id']}", headers=owner)
    assert deleted.status_code == 204 and deleted.data == b""
    again = client.delete(f"/api/v1/depth/{body['depth_id']}", headers=owner)
    assert again.status_code == 404 and again.get_json()["error"] == "not_cached"
    assert client.delete("/api/v1/depth/not-an-id", headers=owner).get_json()["error"] == "not_cached"
    for r in (client.get(f"/api/v1/depth/{body['depth_id']}.npy"),
              client.get(f"/api/v1/depth/{body['depth_id']}/heatmap.png"),
              client.post("/api/v1/render", json={"depth_id": body["depth_id"]})):
        assert r.status_code == 404
        assert r.get_json()["error"] == "not_cached" and "upload the photo again" in r.get_json()["message"]


def test_store_stays_within_its_byte_budget(client, app, samples, monkeypatch, tmp_path) -> None:
    service = app.extensions["depth_service"]
    budget = 3_000_000  # about two of the sample photos' entries
    monkeypatch.setattr(service, "store", FileStore(tmp_path, max_bytes=budget, ttl_s=3600))
    ids = [post_depth(client, samples[n], views="none").get_json()["depth_id"] for n in samples]
    stats = client.get("/healthz").get_json()["store"]
    assert 0 < stats["bytes"] <= budget and stats["entries"] < len(ids)
    assert client.get(f"/api/v1/depth/{ids[-1]}.npy").status_code == 200
    assert client.get(f"/api/v1/depth/{ids[0]}.npy").status_code == 404


def test_healthz(client, app) -> None:
    body = client.get("/healthz").get_json()
    model = app.extensions["depth_models"]["midas-small"]
    assert body["status"] == "ok" and body["model"] == model.name
    assert body["weights_sha256"] == model.weights_sha256 and body["torch_threads"] == 2
    assert body["uptime_s"] >= 0
    # the engine that runs, not the setting's name for it
    assert (body["engine_setting"], body["engine"], body["precision"]) == ("auto", model.engine, "fp32")
    assert body["engine"] != "auto" and body["torchscript"] == (model.engine == "torchscript")


# errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, status, error", [
    ({"colormap": "rainbow"}, 422, "bad_option"),
    ({"alpha": "2"}, 422, "bad_option"),
    ({"alpha": "nan"}, 422, "bad_option"),
    ({"contrast": "inf"}, 422, "bad_option"),
    ({"brightness": "-inf"}, 422, "bad_option"),
    ({"contrast": "abc"}, 422, "bad_option"),
    ({"size": "300"}, 422, "bad_option"),
    ({"size": "256.0"}, 422, "bad_option"),
    ({"square": "circle"}, 422, "bad_option"),
    ({"log": "maybe"}, 422, "bad_option"),
    ({"clahe_grid": "0"}, 422, "bad_option"),
    ({"colour": "jet"}, 422, "bad_option"),
    ({"views": "depth"}, 422, "bad_option"),
    ({"format": "webp"}, 422, "bad_option"),
    ({"format": "jpg "}, 422, "bad_option"),
])
def test_bad_options_are_422(client, samples, fields, status, error) -> None:
    r = post_depth(client, samples["chelsea"], **fields)
    assert r.status_code == status and r.mimetype == "application/json"
    body = r.get_json()
    assert body["error"] == error and list(fields)[0] in body["message"]


@pytest.mark.parametrize("make, status, error", [
    (lambda s: b"", 400, "empty"),
    (lambda s: b"hello, this is text", 415, "not_image"),
    (lambda s: b"<html><body>hi</body></html>", 415, "not_image"),
    (lambda s: b"%PDF-1.4\n%...", 415, "not_image"),
    (lambda s: b"PK\x03\x04" + b"\0" * 40, 415, "not_image"),
    (lambda s: truncated(s["chelsea"]), 400, "corrupt"),
    (lambda s: truncated(s["rocket"]), 400, "corrupt"),
    (lambda s: png_header_only(50000, 50000), 413, "too_large"),
])
def test_bad_images_are_4xx(client, samples, make, status, error) -> None:
    r = post_depth(client, make(samples), "photo.jpg")
    assert r.status_code == status, r.get_json()
    assert r.get_json()["error"] == error and r.get_json()["message"]


def test_missing_file(client) -> None:
    r = client.post("/api/v1/depth", **form_data({"colormap": "jet"}))
    assert r.status_code == 400 and r.get_json()["error"] == "missing_file"


def test_wrong_field_name_is_named_in_the_message(client, samples) -> None:
    r = client.post("/api/v1/depth", **form_data({"file": (samples["chelsea"], "a.png")}))
    assert r.status_code == 400 and "'file'" in r.get_json()["message"]


def test_two_files_are_refused(client, samples) -> None:
    r = client.post("/api/v1/depth", **form_data({"image": [(samples["chelsea"], "a.png"),
                                                             (samples["rocket"], "b.jpg")]}))
    assert r.status_code == 400 and r.get_json()["error"] == "too_many_files"


def test_not_multipart_is_415(client, samples) -> None:
    r = client.post("/api/v1/depth", data=samples["chelsea"], content_type="image/png")
    assert r.status_code == 415 and r.get_json()["error"] == "unsupported_type"


def test_body_over_the_limit_is_413(client, app, samples, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 100_000)
    r = post_depth(client, samples["astronaut"])
    assert r.status_code == 413
    assert r.get_json() == {"error": "too_large",
                            "message": "The upload is larger than this server's limit of 0.0953674 MB."}


@pytest.mark.parametrize("method, path, status, error", [
    ("get", "/api/v1/depth", 405, "method_not_allowed"),
    ("get", "/api/v1/nothing", 404, "not_found"),
    ("get", "/api/v1/depth/0123456789abcdef0123456789abcdef.npy", 404, "not_cached"),
    ("get", "/api/v1/depth/not-an-id.npy", 404, "not_cached"),
    ("get", "/api/v1/depth/../../etc/passwd.npy", 404, "not_found"),
    ("post", "/api/v1/render", 400, "missing_depth_id"),
])
def test_route_errors_are_json(client, method, path, status, error) -> None:
    r = getattr(client, method)(path)
    assert r.status_code == status and r.get_json()["error"] == error


def test_render_json_body_must_be_an_object(client) -> None:
    r = client.post("/api/v1/render", json=[1, 2])
    assert r.status_code == 400 and r.get_json()["error"] == "bad_request"


@pytest.mark.parametrize("query, status, error", [
    ("heatmap.png?colormap=nope", 422, "bad_option"),
    ("heatmap.png?size=512", 422, "bad_option"),
    ("heatmap.png?format=gif", 422, "bad_option"),
    ("photo.png?format=", 200, None),
    ("depth.png", 404, "not_found"),
])
def test_view_url_errors(client, samples, query, status, error) -> None:
    depth_id = post_depth(client, samples["chelsea"], views="none").get_json()["depth_id"]
    r = client.get(f"/api/v1/depth/{depth_id}/{query}")
    assert r.status_code == status and (error is None or r.get_json()["error"] == error)


def test_server_error_is_json_without_details(app, samples, monkeypatch) -> None:
    service = app.extensions["depth_service"]

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "from_upload", broken)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    r = post_depth(app.test_client(), samples["chelsea"])
    assert r.status_code == 500 and r.get_json()["error"] == "internal_error"
    assert "secret" not in r.get_data(as_text=True)


def test_uploads_are_never_spooled_to_disk(client, samples, monkeypatch) -> None:
    import tempfile

    import werkzeug.formparser

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    for module in (tempfile, werkzeug.formparser):
        for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, no_disk)
    assert len(samples["astronaut"]) > 500 * 1024  # Werkzeug's own threshold for spooling to disk
    assert post_depth(client, samples["astronaut"], views="none").status_code == 200


def test_previews_are_bounded_and_keep_the_aspect(client, samples) -> None:
    body = post_depth(client, samples["rocket"], views="none").get_json()  # 640 x 427
    base = f"/api/v1/depth/{body['depth_id']}"
    for view in ("photo", "heatmap", "overlay", "gray"):
        small = Image.open(io.BytesIO(client.get(f"{base}/{view}.png?max_side=320").data))
        assert small.size == (320, 214), view
    full = Image.open(io.BytesIO(client.get(f"{base}/heatmap.png?max_side=1600").data))
    assert full.size == (640, 427)  # never enlarged
    for bad in ("10", "99999", "big"):
        r = client.get(f"{base}/gray.png?max_side={bad}")
        assert r.status_code == 422 and "max_side" in r.get_json()["message"]


@pytest.mark.parametrize("fmt,name", [("HEIF", "IMG_0001.HEIC"), ("AVIF", "photo.avif")])
def test_phone_formats_are_accepted(client, fmt, name) -> None:
    """What an iPhone uploads by default (HEIC) and AVIF: a depth map like any photo."""
    with Image.open(SAMPLES["chelsea"]) as im:
        data, size = pil_bytes(im.convert("RGB"), fmt, quality=90), im.size
    r = post_depth(client, data, name)
    assert r.status_code == 200, r.get_json()
    assert (r.get_json()["width"], r.get_json()["height"]) == size
