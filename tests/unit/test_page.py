"""The studio page without JavaScript: plain form posts with Flask's test client."""

from __future__ import annotations

import html
import io
import re
from typing import Dict, List
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from app.options import COLORMAPS
from support.forms import form_data

CONTROLS = ("image", "views", "colormap", "alpha", "log", "clahe", "clahe_clip", "contrast", "brightness",
            "invert", "size", "square")


def submit(client, fields: Dict[str, object]):
    return client.post("/", **form_data(fields))


def image_sources(page: str) -> Dict[str, str]:
    """figure view -> its <img> src, for the figures that are shown."""
    out = {}
    for m in re.finditer(r'<figure data-view="(\w+)"\s*>\s*<img alt="[^"]*"\s*src="([^"]+)"', page):
        out[m.group(1)] = html.unescape(m.group(2))
    return out


def selected(page: str, name: str) -> List[str]:
    block = re.search(rf'<select id="f-{name}" name="{name}".*?</select>', page, re.S).group(0)
    return re.findall(r'<option value="([^"]+)" selected[ >]', block)


def error_text(page: str) -> str:
    m = re.search(r'<p id="error" class="error" role="alert"\s*>([^<]*)</p>', page)
    return html.unescape(m.group(1)) if m else ""


def test_empty_page_has_every_control_with_defaults(client) -> None:
    r = client.get("/")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert 'enctype="multipart/form-data"' in page and 'method="post"' in page
    for name in CONTROLS:
        assert f'name="{name}"' in page, name
    for cmap in COLORMAPS:
        assert f'<option value="{cmap}"' in page
    assert selected(page, "colormap") == ["inferno"] and selected(page, "views") == ["all"]
    assert selected(page, "size") == ["256"] and selected(page, "square") == ["off"]
    assert not re.search(r'name="(log|clahe|invert)" id="[^"]+" checked', page)
    assert image_sources(page) == {} and error_text(page) == ""


def test_page_uses_no_external_resources(client) -> None:
    page = client.get("/").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for asset in ("/static/style.css", "/static/studio.js"):
        with client.get(asset) as r:
            assert r.status_code == 200 and b"http://" not in r.data and b"https://" not in r.data


def test_upload_redirects_to_a_result_page_with_every_view(client, samples) -> None:
    r = submit(client, {"image": (samples["chelsea"], "chelsea.png")})
    assert r.status_code == 303
    location = r.headers["Location"]
    depth_id = parse_qs(urlsplit(location).query)["depth_id"][0]
    page = client.get(location).get_data(as_text=True)
    sources = image_sources(page)
    assert set(sources) == {"photo", "heatmap", "overlay", "gray"}
    size = Image.open(io.BytesIO(samples["chelsea"])).size
    for view, src in sources.items():
        img = client.get(src)
        assert img.status_code == 200 and img.mimetype == "image/png", view
        assert Image.open(io.BytesIO(img.data)).size == size
        assert depth_id in src
    downloads = re.findall(r'class="button download" download\s*href="([^"]+)"', page)
    # the four views', then the stereo image's and the normal map's (with their default settings)
    assert len(downloads) == 6 and all("download=1" in d for d in downloads)
    for name, link in zip(("stereo", "normals"), downloads[4:], strict=True):
        assert f"/{name}.png?" in link
        with client.get(link) as got:
            width = Image.open(io.BytesIO(got.data)).size[0]
            assert got.status_code == 200 and width == (2 * size[0] if name == "stereo" else size[0])
    # the page shows previews; the downloads are full size
    assert all("max_side=1600" in src for src in sources.values())
    assert not any("max_side" in d for d in downloads)
    assert f'href="/api/v1/depth/{depth_id}.npy"' in page
    assert f'name="depth_id" value="{depth_id}"' in page


def test_changing_options_rerenders_the_same_depth(client, samples) -> None:
    first = submit(client, {"image": (samples["rocket"], "rocket.jpg")}).headers["Location"]
    depth_id = parse_qs(urlsplit(first).query)["depth_id"][0]
    # browsers send an empty file part when no new file was chosen
    r = submit(client, {"image": (b"", ""), "depth_id": depth_id, "colormap": "jet", "views": "heatmap",
                        "invert": "on"})
    assert r.status_code == 303
    query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert query["depth_id"] == [depth_id] and query["colormap"] == ["jet"] and query["invert"] == ["on"]
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert set(image_sources(page)) == {"photo", "heatmap"}
    assert selected(page, "colormap") == ["jet"] and selected(page, "views") == ["heatmap"]
    assert re.search(r'name="invert" id="f-invert" checked', page)
    before = client.get(image_sources(client.get(first).get_data(as_text=True))["heatmap"]).data
    after = client.get(image_sources(page)["heatmap"]).data
    assert before != after


def test_changing_size_reinfers_without_a_new_upload(client, samples) -> None:
    first = submit(client, {"image": (samples["rocket"], "rocket.jpg")}).headers["Location"]
    depth_id = parse_qs(urlsplit(first).query)["depth_id"][0]
    r = submit(client, {"depth_id": depth_id, "size": "384"})
    new_id = parse_qs(urlsplit(r.headers["Location"]).query)["depth_id"][0]
    assert r.status_code == 303 and new_id != depth_id
    assert selected(client.get(r.headers["Location"]).get_data(as_text=True), "size") == ["384"]


@pytest.mark.parametrize("fields, status, message", [
    ({}, 400, "Choose a photo first."),
    ({"image": (b"", "")}, 400, "Choose a photo first."),
    ({"image": (b"not an image", "x.jpg"), "colormap": "viridis"}, 415, "not an image"),
    ({"image": (b"", "empty.png")}, 400, "The file is empty."),
    ({"depth_id": "0" * 32}, 404, "upload the photo again"),
    ({"image": (b"\x89PNG\r\n\x1a\n\0\0", "x.png"), "alpha": "5"}, 422, "alpha"),
    ({"image": (b"\x89PNG\r\n\x1a\n\0\0", "x.png"), "views": "3d"}, 422, "Display mode"),
])
def test_errors_appear_next_to_the_form(client, fields, status, message) -> None:
    r = submit(client, fields)
    page = r.get_data(as_text=True)
    assert r.status_code == status and r.mimetype == "text/html"
    assert message in error_text(page)
    assert 'id="studio-form"' in page  # the form is still there to try again
    if fields.get("colormap"):
        assert selected(page, "colormap") == [fields["colormap"]]  # the user's choices are kept


def test_expired_result_page_says_so(client) -> None:
    r = client.get("/?depth_id=" + "a" * 32 + "&colormap=jet")
    assert r.status_code == 404 and "upload the photo again" in error_text(r.get_data(as_text=True))


def test_upload_over_the_limit_is_a_413_page(client, app, samples, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 50_000)
    r = submit(client, {"image": (samples["chelsea"], "chelsea.png")})
    assert r.status_code == 413 and "larger than this server's limit" in error_text(r.get_data(as_text=True))


def test_unknown_page_is_an_html_404(client) -> None:
    r = client.get("/no/such/page")
    assert r.status_code == 404 and r.mimetype == "text/html"
    assert "Back to the studio" in r.get_data(as_text=True)


def test_unknown_page_answers_json_to_json_clients(client) -> None:
    r = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"


def test_result_keeps_shown_when_a_later_post_fails(client, samples) -> None:
    first = submit(client, {"image": (samples["coffee"], "coffee.png")}).headers["Location"]
    depth_id = parse_qs(urlsplit(first).query)["depth_id"][0]
    r = submit(client, {"depth_id": depth_id, "contrast": "nan"})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and "contrast" in error_text(page)
    assert depth_id in image_sources(page)["heatmap"]
    assert np.asarray(Image.open(io.BytesIO(client.get(image_sources(page)["gray"]).data))).ndim == 2
