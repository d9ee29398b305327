"""The real gunicorn server under hostile input, overload and faults: it answers 4xx/503, keeps its worker,
replaces a killed one, and refuses to start on bad weights."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from load_test import drive
from support.hostile import CORPUS
from support.servers import DEPTHMAP, running_server, this_checkout, worker_pid


@pytest.fixture(scope="module")
def server(weights_path: Path, tmp_path_factory):
    log = tmp_path_factory.mktemp("resilience") / "server.log"
    with running_server(weights_path, log, "--workers", "1", "--threads", "4") as (url, proc):
        yield url, proc, log


def test_hostile_corpus_over_the_wire_keeps_the_worker(server) -> None:
    url, _, log = server
    pid = worker_pid(url)
    marker = b"SECRET-IMAGE-BYTES-7f3a9c"
    for name, (make, status, expected) in CORPUS.items():
        body = make()
        body += marker if body else b""  # trailing bytes change no answer, except that of an empty file
        r = requests.post(f"{url}/api/v1/depth", files={"image": ("x.jpg", body)}, data={"views": "none"},
                          timeout=120)
        assert r.status_code == status, (name, r.text[:300])
        if status != 200:
            assert r.json()["error"] == expected
    assert worker_pid(url) == pid  # the same worker answered everything: none died or was replaced
    text = log.read_bytes()
    assert marker not in text and b"Traceback" not in text  # logs never carry image bytes


def test_overload_gives_503_with_retry_after_never_5xx(weights_path, tmp_path) -> None:
    # no queue at all: with 6 clients most requests find the one slot taken
    with running_server(weights_path, tmp_path / "load.log", "--workers", "1", "--threads", "4",
                        env={"DEPTHMAP_INFERENCE_QUEUE": "0"}) as (url, _):
        tally, _ = drive(url, clients=6, seconds=6)
    assert set(tally.statuses) == {"200", "503"}, tally.statuses
    assert tally.statuses["200"] >= 3 and not tally.errors, (tally.statuses, tally.errors)


def twelve_megapixels() -> bytes:
    im = Image.effect_noise((4000, 3000), 60).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def noise_photo(side: int) -> bytes:
    """A PNG of colour noise (its views and exports are as large as a photo's can be)."""
    buf = io.BytesIO()
    Image.effect_noise((side, side), 80).convert("RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def replaced(url: str, pid: int) -> int:
    """The pid of the worker gunicorn started in place of ``pid``, once it answers."""
    deadline = time.monotonic() + 90
    while True:
        try:
            new = worker_pid(url)
            if new != pid:
                return new
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "no new worker answered in 90 s"
        time.sleep(0.2)


def test_a_worker_killed_mid_request_is_replaced(weights_path, tmp_path) -> None:
    with running_server(weights_path, tmp_path / "kill.log", "--workers", "1", "--threads", "4") as (url, _):
        pid = worker_pid(url)
        kept = requests.post(f"{url}/api/v1/depth", files={"image": ("noise.png", noise_photo(1600))},
                             data={"views": "none"}, timeout=120).json()["depth_id"]
        before = requests.get(f"{url}/api/v1/depth/{kept}.npy", timeout=60).content
        outcome = {}

        def slow_request() -> None:
            try:
                outcome["status"] = requests.post(f"{url}/api/v1/depth", timeout=60, files={
                    "image": ("big.jpg", twelve_megapixels())}, data={"size": "512"}).status_code
            except requests.RequestException as exc:
                outcome["error"] = type(exc).__name__

        t = threading.Thread(target=slow_request)
        t.start()
        deadline = time.monotonic() + 30
        while requests.get(url + "/healthz", timeout=10).json()["gate"]["busy"] == 0:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        # a request sent while the worker is being replaced waits for the new one, and is not lost
        waiting = requests.get(f"{url}/api/v1/depth/{kept}.npy", timeout=120)
        t.join(60)
        assert "error" in outcome or outcome.get("status", 0) >= 500  # that one request is lost...
        pid = replaced(url, pid)  # ...gunicorn boots a new worker, which answers once its model is loaded
        assert waiting.status_code == 200 and waiting.content == before  # and nothing stored is
        # a download cut by a killed worker is visibly broken (an unfinished chunked answer), never a
        # shorter zip that looks whole
        with requests.get(f"{url}/api/v1/depth/{kept}.zip?grid=2048", stream=True, timeout=60) as r:
            assert r.status_code == 200 and r.headers.get("Transfer-Encoding") == "chunked"
            parts = r.iter_content(1 << 16)
            next(parts)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                for _ in parts:
                    pass
        pid = replaced(url, pid)
        assert requests.get(url + "/healthz", timeout=10).json()["gate"]["busy"] == 0  # no slot held over
        assert requests.get(f"{url}/api/v1/depth/{kept}.npy", timeout=60).content == before
        for name in ("chelsea.png", "rocket.jpg"):
            data = (Path(__file__).parents[1] / "fixtures/samples" / name).read_bytes()
            r = requests.post(f"{url}/api/v1/depth", files={"image": (name, data)}, timeout=60)
            assert r.status_code == 200 and len(r.json()["views"]) == 3


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint at all", "Cannot read weights file"),
    (None, "does not fit MiDaS v2.1 small"),
])
def test_bad_weights_stop_serve_with_one_clear_line(tmp_path, content, message) -> None:
    path = tmp_path / "bad.pt"
    if content is None:  # a real checkpoint of the wrong network
        import torch

        torch.save({"layer.weight": torch.zeros(3, 3)}, path)
    else:
        path.write_bytes(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPTHMAP_", "MIDAS_"))}
    proc = subprocess.run([str(DEPTHMAP), "serve", "--weights", str(path)], capture_output=True, text=True,
                          timeout=120, env=this_checkout(env))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
