"""Hostile and odd inputs through the API: the corpus of support/hostile.py (generated, nothing large is
committed), each with the answer a user should get, and property-based tests over options and mutated image
bytes: no 5xx, ever.

The same corpus is sent to a real gunicorn server in tests/integration/test_resilience.py, which checks the
worker survives it.
"""

from __future__ import annotations

import io
import re
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.options import Options
from support.forms import post_depth
from support.hostile import CORPUS, gradient
from support.images import pil_bytes


def png_size(data: bytes) -> Tuple[int, int]:
    assert data.startswith(b"\x89PNG")
    return Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_gets_the_right_answer(client, name: str) -> None:
    make, status, expected = CORPUS[name]
    r = post_depth(client, make(), "upload.jpg")
    assert r.status_code == status, (name, r.get_json())
    body = r.get_json()
    if status == 200:
        for view in ("heatmap", "overlay", "gray"):
            got = client.get(f"/api/v1/depth/{body['depth_id']}/{view}.png")
            assert got.status_code == 200 and png_size(got.data) == expected
    else:
        assert body["error"] == expected and len(body["message"]) > 10


@pytest.mark.parametrize("filename, stem", [
    ("../../etc/passwd.png", "passwd"),
    ("..\\..\\windows\\win.ini.png", "win.ini"),
    ("\x07bell\x1b[31m; Set-Cookie: x=1.png", "bell_31m_Set-Cookie_x_1"),
    ("evil\x00name.png", "evil_name"),
    ("/absolute/path/photo.png", "photo"),
    ("", "photo"),
])
def test_filenames_are_never_paths_or_headers(client, samples, filename: str, stem: str, tmp_path,
                                              monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = post_depth(client, samples["chelsea"], filename)
    assert r.status_code == 200
    got = client.get(f"/api/v1/depth/{r.get_json()['depth_id']}/heatmap.png?download=1")
    disposition = got.headers["Content-Disposition"]
    # (Werkzeug drops the backslashes of a Windows path before we see it; what is left is a plain name)
    assert re.search(rf'filename="[^"/\\]*{re.escape(stem)}\.heatmap\.png"', disposition), disposition
    assert "\r" not in disposition and "\n" not in disposition and "/" not in disposition
    assert list(tmp_path.iterdir()) == []  # nothing written where the server runs


def test_a_header_broken_by_a_raw_newline_in_the_filename_is_a_400(client, samples) -> None:
    # browsers escape it (%0D%0A); a hand-made request that does not breaks its own part header
    r = post_depth(client, samples["chelsea"], "a\r\nSet-Cookie: x=1.png")
    assert r.status_code == 400 and r.get_json()["error"] == "missing_file"


def test_security_headers_on_every_answer(client, samples) -> None:
    for r in (client.get("/"), client.get("/healthz"), client.get("/static/studio.js"),
              post_depth(client, b"", "upload.jpg"), client.get("/nothing")):
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in r.headers
        r.close()


# property-based: whatever the options or the bytes, the answer is a result or a clear 4xx ---------------

OPTION_NAMES = list(Options().as_dict()) + ["views", "max_side", "bogus", ""]
VALUES = st.one_of(
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.sampled_from(["on", "off", "true", "0", "1e309", "-0", "nan", "inferno", "crop", "pad", "fgs",
                     "guided", "joint_bilateral", "384", "512", "all", "none", "heatmap,gray", "\0"]),
)


@pytest.fixture(scope="module")
def tiny_id(app, samples) -> str:
    """A cached depth of a small photo, so option fuzzing costs renders, not inference."""
    small = pil_bytes(Image.open(io.BytesIO(samples["chelsea"])).convert("RGB").resize((48, 32)), "PNG")
    r = post_depth(app.test_client(), small, "upload.jpg")
    assert r.status_code == 200
    return r.get_json()["depth_id"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.sampled_from(OPTION_NAMES), VALUES, max_size=5))
def test_any_options_never_5xx(app, tiny_id, fields: Dict[str, str]) -> None:
    client = app.test_client()
    r = client.post("/api/v1/render", json={"depth_id": tiny_id, **fields})
    assert r.status_code in (200, 422), (fields, r.get_json())
    assert r.get_json()["error" if r.status_code == 422 else "depth_id"]
    r = client.get(f"/api/v1/depth/{tiny_id}/overlay.png", query_string=fields)
    assert r.status_code in (200, 422), (fields, r.data[:200])


HOSTILE_JSON = {
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, 413, "too_large"),
    "nested 20,000 deep": (b"[" * 20_000 + b"]" * 20_000, 400, "bad_request"),
    "object nested 10,000 deep": (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 400, "bad_request"),
    "a million numbers": (b"[" + b"0," * 1_000_000 + b"0]", 413, "too_large"),
    "an array": (b"[1, 2, 3]", 400, "bad_request"),
    "a string": (b'"depth"', 400, "bad_request"),
    "null": (b"null", 400, "bad_request"),
    "not JSON": (b"{'depth_id': 1}", 400, "bad_request"),
    "not UTF-8": (b'{"depth_id": "\xff\xfe"}', 400, "bad_request"),
}


@pytest.mark.parametrize("route", ["/api/v1/render", "/api/v1/depth/{id}/calibrate"])
@pytest.mark.parametrize("name", HOSTILE_JSON)
def test_hostile_json_is_a_4xx_on_every_json_route(app, tiny_id, route: str, name: str) -> None:
    body, status, code = HOSTILE_JSON[name]
    client = app.test_client()
    r = client.post(route.format(id=tiny_id), data=body, content_type="application/json")
    assert (r.status_code, r.get_json()["error"]) == (status, code), (name, r.get_json())
    assert "JSON" in r.get_json()["message"]
    assert client.post("/api/v1/render", json={"depth_id": tiny_id}).status_code == 200  # still serving


def seeds() -> List[bytes]:
    im = gradient(24, 16)
    return [pil_bytes(im, fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
    return bytes(data)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_mutated_images_never_5xx(app, data: bytes) -> None:
    r = post_depth(app.test_client(), data, "upload.jpg")
    assert r.status_code in (200, 400, 413, 415), (r.status_code, r.get_json())
    body = r.get_json()
    assert body.get("depth_id") if r.status_code == 200 else body["message"]
