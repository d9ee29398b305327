"""``depthmap serve``: the real gunicorn server on a free loopback port, spoken to with ``requests``."""

from __future__ import annotations

import base64
import io
import signal
from pathlib import Path

import pytest
import requests
from PIL import Image

from app.cli import on_loopback
from support.servers import run_cli, running_server


@pytest.fixture(scope="module")
def server(weights_path: Path, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(weights_path, log, "--workers", "1", "--threads", "4",
                        env={"DEPTHMAP_MAX_CONTENT_LENGTH": str(2 * 1024 * 1024)}) as (url, proc):
        yield url, proc, log


def test_sample_photo_gives_three_views_at_its_size(server, samples) -> None:
    url = server[0]
    for name in ("chelsea", "rocket"):
        r = requests.post(f"{url}/api/v1/depth", files={"image": (f"{name}.img", samples[name])},
                          data={"colormap": "viridis"}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        size = Image.open(io.BytesIO(samples[name])).size
        assert set(body["views"]) == {"heatmap", "overlay", "gray"}
        for view, uri in body["views"].items():
            img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
            assert img.format == "PNG" and img.size == size, view
            assert img.mode == ("L" if view == "gray" else "RGB")


def test_page_and_health_are_served(server) -> None:
    url = server[0]
    page = requests.get(url + "/", timeout=10)
    assert page.status_code == 200 and 'id="studio-form"' in page.text
    assert requests.get(url + "/static/studio.js", timeout=10).status_code == 200
    health = requests.get(url + "/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["torch_threads"] == 2


def test_errors_over_the_wire(server) -> None:
    url = server[0]
    r = requests.post(f"{url}/api/v1/depth", files={"image": ("x.jpg", b"GIF89a broken")}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "corrupt"
    # a body over DEPTHMAP_MAX_CONTENT_LENGTH (2 MB here): a clean 413, not a reset connection
    r = requests.post(f"{url}/api/v1/depth", files={"image": ("big.png", b"\0" * (3 * 1024 * 1024))},
                      timeout=30)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert requests.get(url + "/healthz", timeout=10).status_code == 200  # still serving


def test_render_and_raw_depth_over_the_wire(server, samples) -> None:
    url = server[0]
    first = requests.post(f"{url}/api/v1/depth", files={"image": ("c.png", samples["coffee"])},
                          data={"views": "none"}, timeout=60).json()
    r = requests.post(f"{url}/api/v1/render", json={"depth_id": first["depth_id"], "view": "gray"},
                      headers={"Accept": "image/png"}, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (first["width"], first["height"])
    npy = requests.get(f"{url}/api/v1/depth/{first['depth_id']}.npy", timeout=30)
    assert npy.status_code == 200 and npy.content.startswith(b"\x93NUMPY")


def test_sigterm_shuts_down_cleanly(server) -> None:
    url, proc, log = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    text = log.read_text()
    assert "Listening at: " + url in text and "Shutting down" in text
    assert "Traceback" not in text
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/healthz", timeout=5)


def test_missing_weights_stop_serve_with_one_clear_line(tmp_path) -> None:
    import os
    import subprocess

    from support.servers import DEPTHMAP, this_checkout

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPTHMAP_", "MIDAS_"))}
    proc = subprocess.run([str(DEPTHMAP), "serve", "--weights", str(tmp_path / "absent.pt")],
                          capture_output=True, text=True, timeout=60, env=this_checkout(env))
    assert proc.returncode == 2
    assert "Weights file not found" in proc.stderr and "Traceback" not in proc.stderr
    assert "gunicorn" not in proc.stderr.lower()  # stopped before any server started


def test_workers_split_the_cores_for_torch(weights_path, tmp_path) -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    with running_server(weights_path, tmp_path / "two.log", "--workers", "2",
                        env={"DEPTHMAP_TORCH_THREADS": None}) as (url, _):
        health = requests.get(url + "/healthz", timeout=10).json()
    assert health["torch_threads"] == max(1, cores // 2)
    assert (tmp_path / "two.log").read_text().count("Booting worker") == 2


def test_engine_setting_reaches_the_workers(weights_path, tmp_path, samples) -> None:
    from app.depth.engines import engine_problem

    if engine_problem("onnxruntime"):
        pytest.skip(engine_problem("onnxruntime"))
    log = tmp_path / "ort.log"
    with running_server(weights_path, log, env={"DEPTHMAP_ENGINE": "onnxruntime"}) as (url, _):
        r = requests.post(url + "/api/v1/depth", files={"image": ("c.png", samples["coffee"])},
                          data={"views": "gray"}, timeout=120)
        assert r.status_code == 200 and r.json()["width"] == 600
    assert "engine onnxruntime (fp32)" in log.read_text()


def test_only_a_server_reachable_from_elsewhere_warns_it_has_no_accounts(server) -> None:
    assert b"no accounts and no TLS" not in server[2].read_bytes()  # this one listens on 127.0.0.1
    binds = ["127.0.0.1:8000", "[::1]:8000", "localhost:8000", "unix:/run/depthmap.sock", "0.0.0.0:8000",
             "[::]:8000", "192.168.1.5:8000", "studio.lan:8000"]
    assert [on_loopback(b) for b in binds] == [True] * 4 + [False] * 4


def test_a_bad_trusted_host_name_stops_serve_with_one_line() -> None:
    proc = run_cli(["serve", "--bind", "127.0.0.1:1"], env={"DEPTHMAP_TRUSTED_HOSTS": "studio.example, a b"},
                   timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "DEPTHMAP_TRUSTED_HOSTS: 'a b' is not a host name" in proc.stderr
    assert "Traceback" not in proc.stderr
