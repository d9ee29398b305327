"""Hostile clients against the real server: requests sent by another site's page, unknown Host names
(DNS rebinding), redirects off the site and control characters bound for a header, the security headers,
and someone who uploads the same bytes as someone else."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import ConfigError
from app.serving.store import Entry, FileStore
from app.config import trusted_host_names as host_names
from app.web.guards import trusted_host
from support.forms import form_data, post_depth
from support.servers import entries, running_server

TRUSTED = "studio.example,.lan.example"


@pytest.fixture(scope="module")
def server(weights_path: Path, tmp_path_factory) -> Tuple[str, Path]:
    """One real server that also answers to the names in ``TRUSTED``; its URL and its log."""
    log = tmp_path_factory.mktemp("guards") / "server.log"
    with running_server(weights_path, log, "--workers", "1",
                        env={"DEPTHMAP_TRUSTED_HOSTS": TRUSTED}) as (url, _):
        yield url, log


def upload(url: str, photo: bytes, name: str = "photo.png",
           headers: Optional[Dict[str, str]] = None) -> requests.Response:
    return requests.post(url + "/api/v1/depth", files={"image": (name, photo)}, data={"views": "none"},
                         headers=headers or {}, timeout=120)


def raw_status(url: str, request: bytes) -> int:
    """The status of a hand-written HTTP request (for bytes that client libraries refuse to send)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(request)
        head = s.recv(4096)
    return int(head.split(b" ", 2)[1])


def assert_still_serving(url: str, log: Path) -> None:
    assert requests.get(url + "/healthz", timeout=10).status_code == 200
    assert "Traceback" not in log.read_text()


# cross-site requests ----------------------------------------------------------------------------------------

def another_site(url: str) -> Dict[str, Dict[str, str]]:
    """What a browser sends with a request another site's page made, by kind of browser."""
    port = urlsplit(url).port
    return {"cross-site": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
            # another port of the same machine is another origin: a different app's page
            "same-site": {"Sec-Fetch-Site": "same-site", "Origin": f"http://127.0.0.1:{port + 1}"},
            "old browser": {"Origin": "http://evil.example"},
            "sandboxed frame": {"Origin": "null"},
            "old browser, other port": {"Origin": f"http://127.0.0.1:{port + 1}"}}


def test_another_sites_page_can_neither_post_nor_delete(server, samples) -> None:
    url, log = server
    mine = upload(url, samples["rocket"]).json()
    before = entries(url)
    form = {"image": ("p.png", samples["chelsea"])}
    for kind, headers in another_site(url).items():
        sent = {
            "depth": requests.post(url + "/api/v1/depth", files=form, headers=headers, timeout=60),
            "batch": requests.post(url + "/api/v1/batch", files=form, headers=headers, timeout=60),
            "video": requests.post(url + "/api/v1/video", files={"video": ("v.mp4", b"\0" * 1024)},
                                   headers=headers, timeout=60),
            "render": requests.post(url + "/api/v1/render", json={"depth_id": mine["depth_id"], "size": 384},
                                    headers=headers, timeout=60),
            "calibrate": requests.post(f"{url}/api/v1/depth/{mine['depth_id']}/calibrate", json={},
                                       headers=headers, timeout=60),
            "delete": requests.delete(f"{url}/api/v1/depth/{mine['depth_id']}", timeout=60,
                                      headers={**headers, "X-Owner-Token": mine["owner_token"]}),
            "delete job": requests.delete(url + "/api/v1/jobs/0123456789abcdef0123456789abcdef",
                                          headers=headers, timeout=60),
        }
        for route, r in sent.items():
            assert r.status_code == 403 and r.json()["error"] == "cross_site", (kind, route, r.text)
        # the page's own form: its page, with the error next to the form
        page = requests.post(url + "/", files=form, headers={**headers, "Accept": "text/html"}, timeout=60)
        assert page.status_code == 403 and 'id="studio-form"' in page.text and "another site" in page.text
    assert entries(url) == before  # nothing was computed or deleted
    assert requests.get(f"{url}/api/v1/depth/{mine['depth_id']}.npy", timeout=30).status_code == 200
    assert not list((log.parent / "data" / "jobs").glob("*/*"))  # no video was kept either
    assert_still_serving(url, log)


def test_this_sites_page_and_clients_that_are_not_browsers_pass(server, samples) -> None:
    url, log = server
    port = urlsplit(url).port
    for headers in ({},  # curl, scripts, the CLI
                    {"Sec-Fetch-Site": "same-origin", "Origin": url},  # the studio's own page
                    {"Sec-Fetch-Site": "none"},  # the user's own navigation
                    {"Origin": url},  # an older browser on the studio's page
                    # behind a proxy that ends TLS: the browser's origin is https, the server sees http
                    {"Origin": f"https://127.0.0.1:{port}"},
                    {"Origin": "https://studio.example", "Host": "studio.example"},
                    {"Origin": "https://studio.example", "Host": "studio.example:443"}):
        r = upload(url, samples["coffee"], headers=headers)
        assert r.status_code == 200, (headers, r.text)
        owner = {**headers, "X-Owner-Token": r.json()["owner_token"]}
        deleted = requests.delete(f"{url}/api/v1/depth/{r.json()['depth_id']}", headers=owner, timeout=30)
        assert deleted.status_code == 204
    # reading is never refused: another site may link to the studio
    assert requests.get(url + "/", headers=another_site(url)["cross-site"], timeout=30).status_code == 200
    assert_still_serving(url, log)


# Host names ------------------------------------------------------------------------------------------------

def test_unknown_host_names_are_refused_and_ip_addresses_and_localhost_work(server) -> None:
    url, log = server
    port = urlsplit(url).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", "app.localhost", f"[::1]:{port}",
                 "10.0.0.7", "[2001:db8::1]:8000", "studio.example", "studio.example:8443", "lan.example",
                 "box.lan.example"):
        r = requests.get(url + "/healthz", headers={"Host": host}, timeout=10)
        assert r.status_code == 200, host
    for host in ("attacker.example", "127.0.0.1.nip.io", "localhost.attacker.example",
                 "studio.example.evil", "xlan.example", "evil.example:80", "a b", "", "[::1",
                 "studio.example:99999"):
        for method in ("GET", "POST"):
            r = requests.request(method, url + "/api/v1/depth" if method == "POST" else url + "/",
                                 headers={"Host": host, "Accept": "application/json"}, timeout=10)
            assert r.status_code == 400 and r.json()["error"] == "bad_host", (host, method, r.text)
    # bytes no client library sends: refused with a 400 (by the server or the app), never a 500
    for host in (b"evil\x01.example", b"127.0.0.1\x7f", "caf\u00e9.example".encode("latin-1")):
        assert raw_status(url, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") == 400, host
    assert "refused Host 'attacker.example'" in log.read_text()  # the operator sees what to add
    assert_still_serving(url, log)


def test_by_default_only_ip_addresses_and_localhost_are_served(app) -> None:
    client = app.test_client()
    assert client.get("/healthz").status_code == 200  # the test client's Host: localhost
    assert client.get("/healthz", headers={"Host": "192.168.1.20:8000"}).status_code == 200
    r = client.get("/healthz", headers={"Host": "studio.example", "Accept": "application/json"})
    assert r.status_code == 400 and r.get_json()["error"] == "bad_host"
    assert "DEPTHMAP_TRUSTED_HOSTS" in r.get_json()["message"]


def test_the_trusted_names_setting_is_checked_at_start() -> None:
    names = host_names(" Studio.example, .lan.example,bücher.example ")
    assert names == ("studio.example", ".lan.example", "bücher.example")
    assert trusted_host("xn--bcher-kva.example:8000", names) and trusted_host("a.b.lan.example", names)
    assert not trusted_host("xn--bcher-kva.example.evil", names)
    for bad in ("a..b", "studio.example:80", "a b", "[::1]", "x" * 64 + ".example", "a/b"):
        with pytest.raises(ConfigError, match="DEPTHMAP_TRUSTED_HOSTS"):
            host_names(bad)


# redirects and header-bound values ------------------------------------------------------------------------

def test_the_language_switch_never_leaves_the_site(server) -> None:
    url, log = server
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example", "\\\\evil.example",
                   "javascript:alert(1)", "evil.example", " //evil.example", "///evil.example"):
        r = requests.get(url + "/lang/en", params={"next": target}, allow_redirects=False, timeout=10)
        assert r.status_code == 303 and r.headers["Location"] == "/", target
    # a control character goes into no header: 400, never the 500 of a header with a newline
    for query in ("/%09/evil.example", "/%0d%0aSet-Cookie:%20x=1", "/%00", "/%7f", "/%0a"):
        r = requests.get(f"{url}/lang/en?next={query}", headers={"Accept": "application/json"},
                         allow_redirects=False, timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "bad_redirect", query
        assert "Set-Cookie" not in r.headers
    page = requests.get(f"{url}/lang/en?next=/%0d%0a", allow_redirects=False, timeout=10)  # a browser
    assert page.status_code == 400 and "control character" in page.text
    # this site's own pages, whatever their characters
    for target, location in (("/?views=gray", "/?views=gray"), ("/照片?x=1", "/%E7%85%A7%E7%89%87?x=1"),
                             ("/\u2028", "/%E2%80%A8")):
        r = requests.get(url + "/lang/zh_Hans", params={"next": target}, allow_redirects=False, timeout=10)
        assert r.status_code == 303 and r.headers["Location"] == location, target
    assert_still_serving(url, log)


@settings(max_examples=200, deadline=None)
@given(target=st.text(max_size=40)
       | st.text(alphabet="/\\:.@%?#\t\r\n eviltmp", max_size=20).map("/".__add__))
def test_any_next_is_a_local_path_or_a_400(app, target) -> None:
    r = app.test_client().get("/lang/en", query_string={"next": target},
                              headers={"Accept": "application/json"})
    assert r.status_code in (303, 400), r.status_code
    if r.status_code == 303:
        location = r.headers["Location"]
        assert location.isascii() and location.startswith("/") and not location.startswith("//")
        assert "\\" not in location and not urlsplit(location).netloc
    else:
        assert r.get_json()["error"] == "bad_redirect"


def test_a_planted_result_whose_name_would_break_a_header_is_absent(server, samples) -> None:
    url, log = server
    store = FileStore(log.parent / "data", 1 << 30, 3600)
    arr = np.zeros((4, 4), np.float32)
    for n, name in enumerate(('a\r\nSet-Cookie: x=1', 'a"; b', "../x", "")):
        key = f"{n:032x}"
        store.put(Entry(key, b"x", name, {}, np.zeros((4, 4, 3), np.uint8), arr, arr))
        for path in (f"/api/v1/depth/{key}.npy", f"/api/v1/depth/{key}/heatmap.png?download=1"):
            r = requests.get(url + path, timeout=10)
            assert r.status_code == 404 and r.json()["error"] == "not_cached", (name, path)
    assert_still_serving(url, log)


def test_security_headers_over_the_wire(server, samples) -> None:
    url, _ = server
    for r in (requests.get(url + "/", timeout=10), requests.get(url + "/static/studio.js", timeout=10),
              upload(url, samples["rocket"]), requests.get(url + "/nothing", timeout=10),
              requests.get(url + "/", headers={"Host": "attacker.example"}, timeout=10)):
        assert r.headers["Cross-Origin-Resource-Policy"] == "same-origin"
        policy = dict(item.strip().split("=") for item in r.headers["Permissions-Policy"].split(","))
        assert {"camera", "microphone", "geolocation", "usb"} <= set(policy)
        assert set(policy.values()) == {"()"}
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


# someone else's photo --------------------------------------------------------------------------------------

def disposition(url: str, path: str) -> str:
    r = requests.get(url + path, timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["Content-Disposition"]


def test_uploading_someone_elses_photo_changes_nothing_of_theirs(server, samples) -> None:
    url, log = server
    photo = samples["chelsea"]
    alice = upload(url, photo, "alice.png")
    a = alice.json()
    assert alice.headers["Cache-Control"] == "no-store" and alice.headers["X-Owner-Token"] == a["owner_token"]
    bob = upload(url, photo, "bob.png").json()
    # bob's upload is his own result: a new id, a new inference, nothing that says someone was first
    assert bob["depth_id"] != a["depth_id"] and bob["owner_token"] != a["owner_token"]
    assert not bob["cached"] and bob["timings_ms"]["infer"] > 0
    theirs = f"/api/v1/depth/{a['depth_id']}"
    for path in (f"{theirs}.npy", f"{theirs}/heatmap.png?download=1", f"{theirs}.zip"):
        assert "alice" in disposition(url, path) and "bob" not in disposition(url, path)
    assert "bob" in disposition(url, f"/api/v1/depth/{bob['depth_id']}.npy")
    gone = url + theirs
    alice_depth = np.load(io.BytesIO(requests.get(gone + ".npy", timeout=30).content))
    # bob cannot delete alice's result: not without a token, not with his, not with a made-up one
    for headers, status, code in (({}, 403, "not_owner"),
                                  ({"X-Owner-Token": bob["owner_token"]}, 403, "not_owner"),
                                  ({"X-Owner-Token": "f" * 32}, 403, "not_owner"),
                                  ({"X-Owner-Token": "not a token"}, 400, "bad_token"),
                                  ({"X-Owner-Token": a["owner_token"][:-1]}, 400, "bad_token")):
        r = requests.delete(gone, headers=headers, timeout=30)
        assert r.status_code == status and r.json()["error"] == code, headers
    assert np.array_equal(np.load(io.BytesIO(requests.get(gone + ".npy", timeout=30).content)), alice_depth)
    # nor reach it by sending the same bytes with a token of his own
    again = upload(url, photo, "bob2.png", headers={"X-Owner-Token": bob["owner_token"]}).json()
    assert again["depth_id"] == bob["depth_id"] and again["cached"]
    assert "alice" in disposition(url, f"/api/v1/depth/{a['depth_id']}.npy")
    bad = upload(url, photo, headers={"X-Owner-Token": "zz"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_token"
    # alice deletes hers with her token; bob's stays
    assert requests.delete(gone, headers={"X-Owner-Token": a["owner_token"]}, timeout=30).status_code == 204
    assert requests.get(gone + ".npy", timeout=30).status_code == 404
    assert requests.get(f"{url}/api/v1/depth/{bob['depth_id']}.npy", timeout=30).status_code == 200
    assert_still_serving(url, log)


def test_a_re_render_belongs_to_the_uploader_whoever_asks_for_it(server, samples) -> None:
    url, _ = server
    mine = upload(url, samples["astronaut"]).json()
    bigger = requests.post(url + "/api/v1/render", json={"depth_id": mine["depth_id"], "size": 384,
                                                          "views": "none"}, timeout=120)
    assert bigger.status_code == 200 and "owner_token" not in bigger.json()
    assert "X-Owner-Token" not in bigger.headers
    new = f"{url}/api/v1/depth/{bigger.json()['depth_id']}"
    assert requests.delete(new, timeout=30).json()["error"] == "not_owner"
    assert requests.delete(new, headers={"X-Owner-Token": mine["owner_token"]}, timeout=30).status_code == 204


def test_a_batch_answers_each_photo_its_owner_token(client, samples) -> None:
    r = client.post("/api/v1/batch", **form_data({"image": [(samples["rocket"], "a.jpg"),
                                                             (samples["coffee"], "b.jpg")]}))
    results = r.get_json()["results"]
    assert r.status_code == 200 and len({x["owner_token"] for x in results}) == 2
    for x in results:
        owner = {"X-Owner-Token": x["owner_token"]}
        assert client.delete(f"/api/v1/depth/{x['depth_id']}", headers=owner).status_code == 204


def test_an_image_answer_carries_the_owner_token_too(client, samples) -> None:
    r = post_depth(client, samples["rocket"], view="heatmap", headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.mimetype == "image/png"
    token = r.headers["X-Owner-Token"]
    deleted = client.delete(f"/api/v1/depth/{r.headers['X-Depth-Id']}", headers={"X-Owner-Token": token})
    assert deleted.status_code == 204
