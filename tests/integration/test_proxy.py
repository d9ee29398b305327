"""The scaled deployment's proxy (docker/nginx.conf, as the image runs it) in front of a real
`depthmap serve`, with Debian's nginx: a worker killed with SIGKILL in the middle of a request answers
the client with the studio's JSON 503 (`unavailable`, Retry-After), not a cut connection or nginx's page,
and the next requests are served by its replacement. (The whole compose.scale.yaml runs in
scripts/docker-smoke.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np
import pytest
import requests
from PIL import Image

from app.web.errors import ERRORS
from support.images import pil_bytes
from support.servers import REPO, free_port, running_server, stop

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture()
def proxied(weights_path: Path, tmp_path: Path) -> Iterator[Tuple[str, str]]:
    """One `depthmap serve` (one worker) behind nginx with the deployment's configuration; the proxy's URL
    and the server's."""
    with running_server(weights_path, tmp_path / "server.log", "--workers", "1") as (url, _):
        port = free_port()
        conf = (REPO / "docker" / "nginx.conf").read_text()
        conf = re.sub(r"server web1:8000[^;]*;", f"server {url.split('//')[1]};", conf)
        conf = re.sub(r"\s*server web2:8000[^;]*;", "", conf)
        conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};").replace("/tmp/", f"{tmp_path}/")
        (tmp_path / "nginx.conf").write_text(conf)
        with open(tmp_path / "nginx.log", "wb") as log:
            proc = subprocess.Popen([NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path),
                                     "-g", f"daemon off; user {user()};"], stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if requests.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    time.sleep(0.1)
            yield base, url
        finally:
            stop(proc)


def user() -> str:
    """This user, for nginx's workers: started by root they would otherwise be `nobody`, who may not
    write the test's folders (in the image nginx runs as www-data from the start)."""
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def slow_photo(seed: int) -> bytes:
    """A 12 MP photo, a different one for each ``seed``."""
    y, x = np.mgrid[0:3000, 0:4000]
    rgb = np.stack([x % 256, y % 256, (x * y + seed) % 256], -1).astype(np.uint8)
    return pil_bytes(Image.fromarray(rgb), "PNG")


def test_a_worker_killed_mid_request_answers_503_through_the_proxy(proxied: Tuple[str, str]) -> None:
    proxied, direct = proxied
    pid = requests.get(proxied + "/healthz", timeout=10).json()["pid"]
    answer = {}

    def upload() -> None:  # several seconds of work before the first byte of the answer
        photos = [("image", (f"{i}.png", slow_photo(i))) for i in range(5)]
        answer["r"] = requests.post(proxied + "/api/v1/batch", files=photos, data={"size": "512"},
                                    timeout=120)

    client = threading.Thread(target=upload)
    client.start()
    deadline = time.monotonic() + 60
    while requests.get(direct + "/healthz", timeout=10).json()["gate"]["busy"] == 0:  # not computing yet
        assert time.monotonic() < deadline and client.is_alive(), answer
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    client.join(120)
    r = answer["r"]
    assert r.status_code == 503, r.text[:300]
    assert r.json()["error"] == "unavailable" and "unavailable" in ERRORS
    assert int(r.headers["Retry-After"]) > 0
    deadline = time.monotonic() + 90  # gunicorn starts a new worker, which loads its model
    while True:
        try:
            health = requests.get(proxied + "/healthz", timeout=10)
            if health.status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "no new worker answered"
        time.sleep(0.5)
    assert health.json()["pid"] != pid
    again = requests.post(proxied + "/api/v1/depth", files={"image": ("c.png", pil_bytes(
        Image.fromarray(np.zeros((60, 80, 3), np.uint8)), "PNG"))}, timeout=60)
    assert again.status_code == 200, again.text[:300]
