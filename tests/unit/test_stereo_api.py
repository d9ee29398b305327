"""Stereo and normal-map images of a cached result over HTTP: the same pixels as the core makes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.imaging.normals import normal_map
from app.options import NormalOptions, StereoOptions
from app.imaging.pipeline import shrink
from app.imaging.stereo import stereo
from support.forms import post_depth
from support.samples import SAMPLES


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def cached(app):
    """A result's id, its photo and its raw depth, as the API gives them."""
    client = app.test_client()
    r = post_depth(client, SAMPLES["rocket"].read_bytes(), "rocket.jpg")
    assert r.status_code == 200
    depth_id = r.get_json()["depth_id"]
    photo = png(client.get(f"/api/v1/depth/{depth_id}/photo.png").data)
    depth = np.load(io.BytesIO(client.get(f"/api/v1/depth/{depth_id}.npy").data))
    return depth_id, photo, depth


@pytest.mark.parametrize("query", [
    {}, {"layout": "anaglyph-dubois", "divergence": "4", "convergence": "0"},
    {"layout": "top-bottom", "swap_eyes": "true"},
])
def test_stereo_png_is_the_cores_image(client, cached, query) -> None:
    depth_id, photo, depth = cached
    r = client.get(f"/api/v1/depth/{depth_id}/stereo.png", query_string=query)
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert np.array_equal(png(r.data), stereo(photo, depth, StereoOptions.from_strings(query)))


def test_normals_png_is_the_cores_image_and_downloads(client, cached) -> None:
    depth_id, _, depth = cached
    query = {"normal_strength": "3", "normal_smooth": "0", "normal_convention": "controlnet", "download": "1"}
    r = client.get(f"/api/v1/depth/{depth_id}/normals.png", query_string=query)
    assert r.status_code == 200
    want = normal_map(depth, NormalOptions(normal_strength=3.0, normal_smooth=0.0,
                                           normal_convention="controlnet"))
    assert np.array_equal(png(r.data), want)
    assert 'filename="rocket.normals.png"' in r.headers["Content-Disposition"]


def test_previews_are_bounded_by_max_side(client, cached) -> None:
    depth_id, photo, _ = cached
    r = client.get(f"/api/v1/depth/{depth_id}/stereo.png", query_string={"layout": "sbs", "max_side": "200"})
    h, w = shrink(photo, 200).shape[:2]
    assert max(h, w) == 200 and png(r.data).shape == (h, 2 * w, 3)


@pytest.mark.parametrize("route,query,status,code", [
    ("stereo", {"divergence": "11"}, 422, "bad_option"),
    ("stereo", {"layout": "vr360"}, 422, "bad_option"),
    ("stereo", {"divergense": "2"}, 422, "bad_option"),
    ("normals", {"normal_convention": "up"}, 422, "bad_option"),
    ("normals", {"normal_strength": "nan"}, 422, "bad_option"),
])
def test_bad_options_are_422(client, cached, route, query, status, code) -> None:
    r = client.get(f"/api/v1/depth/{cached[0]}/{route}.png", query_string=query)
    assert (r.status_code, r.get_json()["error"]) == (status, code)


@pytest.mark.parametrize("route", ["stereo", "normals"])
def test_unknown_result_is_404(client, route) -> None:
    r = client.get(f"/api/v1/depth/{'0' * 32}/{route}.png")
    assert r.status_code == 404 and r.get_json()["error"] == "not_cached"
