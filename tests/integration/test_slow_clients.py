"""Slow, idle and odd HTTP clients against the real server (`depthmap serve`, app/serving/gunicorn_worker.py):
they cost the server a socket, never a request thread, so health checks and photos are still answered; and
what the worker does with the bytes it receives (100-continue, chunked bodies, pipelining, an oversized
body, a header flood) is what a client expects. The same attack against the Docker deployments runs in
scripts/docker-smoke."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import requests
from PIL import Image

from bench_slow_clients import attack, health, probe, problems, quiet_photo_s
from support.images import pil_bytes
from support.samples import SAMPLES
from support.servers import running_server

ATTACK_S = 60  # how long the slow clients are held open, as the deployment's promise says


@pytest.fixture(scope="module")
def server(weights_path: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("slow") / "server.log"
    with running_server(weights_path, log, "--workers", "1", "--threads", "4") as (url, proc):
        yield url, log


def host_port(url: str) -> Tuple[str, int]:
    host, port = url.rsplit("/", 1)[-1].split(":")
    return host, int(port)


def exchange(url: str, data: bytes, until: bytes = b"", timeout: float = 15) -> bytes:
    """Sends ``data`` on a new connection and reads until ``until`` appears or the server closes."""
    with socket.create_connection(host_port(url), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while not (until and until in out):
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
    return out


def multipart(photo: bytes, boundary: str = "b0undary") -> Tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_slow_and_idle_clients_leave_health_and_photos_answering(server) -> None:
    url, _ = server
    photo = SAMPLES["rocket"].read_bytes()
    quiet = quiet_photo_s(url, photo)
    with attack(url, idle=64, heads=64, bodies=16) as attacker:
        time.sleep(2)  # every attacking connection is open
        found = probe(url, ATTACK_S, photo)
    assert not problems(found, quiet), (problems(found, quiet), quiet, found)
    # the stalled heads and the idle connections were closed (and reopened by the attacker): each costs
    # the server a socket for at most the head timeout
    closed = attacker.tally.closed_by_server
    assert closed.get("idle", 0) >= 64 and closed.get("head", 0) >= 64, closed


def test_expect_100_continue_is_answered_once(server) -> None:
    url, _ = server
    body, ctype = multipart(SAMPLES["rocket"].read_bytes())
    head = (f"POST /api/v1/depth HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(host_port(url), timeout=30) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body byte was sent
        sock.sendall(body)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    assert answer.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in answer


def test_a_chunked_upload_is_received_whole(server) -> None:
    url, _ = server
    photo = SAMPLES["chelsea"].read_bytes()
    r = requests.post(url + "/api/v1/depth", files={"image": ("c.jpg", photo)}, data={"views": "gray"},
                      timeout=60)
    assert r.status_code == 200, r.text[:300]
    body, ctype = multipart(photo)
    chunked = requests.post(url + "/api/v1/depth", data=iter([body[:1000], body[1000:]]), timeout=60,
                            headers={"Content-Type": ctype, "X-Owner-Token": r.json()["owner_token"]})
    assert chunked.status_code == 200, chunked.text[:300]
    assert chunked.json()["depth_id"] == r.json()["depth_id"]  # the same bytes arrived: the owner's result


def test_pipelined_requests_are_each_answered(server) -> None:
    url, _ = server
    two = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
           b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert exchange(url, two).count(b"HTTP/1.1 200 OK") == 2


def test_an_oversized_body_is_refused_from_its_head(server) -> None:
    url, _ = server
    head = (b"POST /api/v1/depth HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 900000000\r\n\r\n")
    t0 = time.monotonic()
    answer = exchange(url, head, until=b"}")
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer
    assert b'"error":"too_large"' in answer.replace(b" ", b"")
    assert time.monotonic() - t0 < 5  # not after waiting for 900 MB that never came


def test_a_header_flood_gets_431(server) -> None:
    url, _ = server
    answer = exchange(url, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 100_000)
    assert answer.startswith(b"HTTP/1.1 431 ") and b'"headers_too_large"' in answer
    assert health(url) == 200


def test_a_full_worker_closes_its_oldest_slow_connection_for_a_new_one(weights_path: Path,
                                                                        tmp_path: Path) -> None:
    # a worker of 40 connections: 60 idle ones would have locked everyone else out
    env = {"GUNICORN_CMD_ARGS": "--worker-connections 40"}
    with running_server(weights_path, tmp_path / "server.log", "--workers", "1", env=env) as (url, _):
        idle = [socket.create_connection(host_port(url), timeout=5) for _ in range(60)]
        try:
            times = []
            for _ in range(5):
                t0 = time.monotonic()
                assert health(url, timeout=5) == 200
                times.append(time.monotonic() - t0)
            closed = sum(1 for s in idle if _closed(s))
        finally:
            for s in idle:
                s.close()
    assert max(times) < 1.0, times
    assert closed >= 20, closed  # the oldest idle connections made room


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def big_result(url: str) -> Tuple[str, bytes]:
    """A 12 MP photo's raw depth URL, and its bytes as a client that reads at once gets them (48 MB)."""
    y, x = np.mgrid[0:3000, 0:4000]
    photo = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    image = pil_bytes(Image.fromarray(photo), "PNG")
    r = requests.post(url + "/api/v1/depth", files={"image": ("big.png", image)}, data={"views": "none"},
                      timeout=300)
    assert r.status_code == 200, r.text[:300]
    path = f"/api/v1/depth/{r.json()['depth_id']}.npy"
    whole = requests.get(url + path, timeout=120).content
    assert len(whole) > 40_000_000
    return path, whole


def test_clients_that_read_slowly_or_not_at_all_hold_no_thread(server) -> None:
    url, _ = server
    path, whole = big_result(url)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    stalled = []
    for _ in range(6):  # more than the threads: each asks for 48 MB and never reads a byte
        sock = socket.create_connection(host_port(url), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request)
        stalled.append(sock)
    try:
        time.sleep(3)
        for _ in range(5):
            t0 = time.monotonic()
            assert health(url, timeout=5) == 200
            assert time.monotonic() - t0 < 1.0
        # a client that reads at a trickle gets every byte, as a fast one does
        with socket.create_connection(host_port(url), timeout=30) as sock:
            sock.sendall(request)
            got = bytearray()
            while b"\r\n\r\n" not in got or len(got) - got.index(b"\r\n\r\n") - 4 < len(whole):
                piece = sock.recv(1 << 20)
                assert piece, "the server closed a slow but steady reader"
                got += piece
                time.sleep(0.01)
        assert bytes(got[got.index(b"\r\n\r\n") + 4:]) == whole
    finally:
        for sock in stalled:
            sock.close()
