"""Slow and idle clients against a running studio: while an attacker holds idle connections, connections
that trickle a request head and connections that trickle a multipart body (each reopened at once when
the server closes it), how fast do ``/healthz`` and a photo request still answer?

    .venv/bin/python benchmarks/bench_slow_clients.py URL [--seconds 60] [--idle 64] [--heads 64]
        [--bodies 16] [--photo PATH]

Prints the health check's and the photo request's times, quiet and under attack, and how often the
server closed an attacking connection. Only loopback and private addresses are accepted: this is a
load generator. The tests run it for a shorter time against each way of starting the studio
(tests/integration/test_slow_clients.py; the Docker ones in scripts/docker-smoke).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import selectors
import socket
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

log = logging.getLogger("bench_slow_clients")

HEALTH_S = 1.0  # the promise: /healthz within 1 s, a photo within 2 s more than with no attack
PHOTO_EXTRA_S = 2.0
TRICKLE_EVERY_S = 1.0  # one more byte per connection this often: slower than any server's patience
BOUNDARY = "slowslowslow"
PHOTO = Path(__file__).parents[1] / "tests" / "fixtures" / "samples" / "rocket.jpg"


@dataclass
class Tally:
    """What the attacker saw: connections opened, and closed by the server, per kind."""

    opened: Dict[str, int] = field(default_factory=dict)
    closed_by_server: Dict[str, int] = field(default_factory=dict)

    def count(self, table: Dict[str, int], kind: str) -> None:
        table[kind] = table.get(kind, 0) + 1


def address(url: str) -> Tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if not ipaddress.ip_address(socket.gethostbyname(host)).is_private:
        raise SystemExit(f"{url}: only loopback or private addresses")
    return host, parts.port or 80


def opening(kind: str, host: str) -> bytes:
    """What a connection of ``kind`` sends at once: nothing, half a head, or a head and half a body."""
    if kind == "idle":
        return b""
    if kind == "head":
        return f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nUser-Agent: slow".encode()
    body_head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
                 "Content-Type: image/jpeg\r\n\r\n")
    return (f"POST /api/v1/depth HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {1 << 20}\r\n\r\n{body_head}").encode()


class Attacker:
    """Holds ``counts`` connections of each kind open in one thread, reopening any the server closes,
    and sends each one more byte every ``TRICKLE_EVERY_S`` (idle ones never send)."""

    def __init__(self, url: str, counts: Dict[str, int]) -> None:
        self.host, self.port = address(url)
        self.counts = counts
        self.tally = Tally()
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="slow-clients", daemon=True)

    def connect(self, kind: str) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.sendall(opening(kind, self.host))
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, kind)
        self.tally.count(self.tally.opened, kind)

    def run(self) -> None:
        for kind, n in self.counts.items():
            for _ in range(n):
                self.connect(kind)
        next_trickle = time.monotonic() + TRICKLE_EVERY_S
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.2):
                self.readable(key.fileobj, key.data)  # type: ignore[arg-type]
            if time.monotonic() >= next_trickle:
                next_trickle += TRICKLE_EVERY_S
                self.trickle()
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def readable(self, sock: socket.socket, kind: str) -> None:
        """The server answered or closed: either way this connection is done; a new one replaces it."""
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            return  # an answer, and the connection still open: keep reading it until the close
        except OSError:
            pass
        self.sel.unregister(sock)
        sock.close()
        self.tally.count(self.tally.closed_by_server, kind)
        try:
            self.connect(kind)
        except OSError as exc:
            log.warning("could not reopen a %s connection: %s", kind, exc)

    def trickle(self) -> None:
        for key in list(self.sel.get_map().values()):
            if key.data != "idle":
                try:
                    key.fileobj.send(b"a" if key.data == "head" else b"\0")  # type: ignore[union-attr]
                except OSError:
                    pass  # closed: readable() replaces it

    def __enter__(self) -> "Attacker":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@contextmanager
def attack(url: str, idle: int, heads: int, bodies: int) -> Iterator[Attacker]:
    with Attacker(url, {"idle": idle, "head": heads, "body": bodies}) as attacker:
        yield attacker


def call(url: str, data: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
         timeout: float = 10) -> int:
    """The status of a GET (or, with ``data``, a POST); 0 when no answer came in ``timeout`` s."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except OSError:
        return 0


def health(url: str, timeout: float = 10) -> int:
    return call(url + "/healthz", timeout=timeout)


def photo(url: str, data: bytes, timeout: float = 60) -> int:
    """A new depth map: trailing bytes (which a JPEG decoder ignores) make every upload a new one."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="views"\r\n\r\nheatmap\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + os.urandom(16) + \
        f"\r\n--{boundary}--\r\n".encode()
    return call(url + "/api/v1/depth", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                timeout)


def timed(fn, *args: object) -> Tuple[float, int]:
    t0 = time.perf_counter()
    status = fn(*args)
    return time.perf_counter() - t0, status


@dataclass
class Probes:
    """Times (s) and statuses of the health checks and photo requests made while attacking."""

    health: List[Tuple[float, int]] = field(default_factory=list)
    photo: List[Tuple[float, int]] = field(default_factory=list)


def probe(url: str, seconds: float, data: bytes, photo_every: float = 5.0) -> Probes:
    """A health check every second and a photo every ``photo_every`` s, for ``seconds``."""
    out = Probes()
    end = time.monotonic() + seconds
    next_photo = time.monotonic() + 1.0
    while time.monotonic() < end:
        out.health.append(timed(health, url))
        if time.monotonic() >= next_photo:
            next_photo += photo_every
            out.photo.append(timed(photo, url, data))
        time.sleep(max(0.0, 1.0 - out.health[-1][0]))
    return out


def quiet_photo_s(url: str, data: bytes, rounds: int = 3) -> float:
    """The photo request's median time with no attack."""
    return statistics.median(timed(photo, url, data)[0] for _ in range(rounds))


def summary(label: str, samples: List[Tuple[float, int]]) -> str:
    times = sorted(t for t, _ in samples)
    bad = sum(1 for _, s in samples if s != 200)
    if not times:
        return f"{label}: none"
    return (f"{label}: {len(times)} requests, median {statistics.median(times) * 1000:.0f} ms, "
            f"max {times[-1] * 1000:.0f} ms, not 200: {bad}")


def problems(found: Probes, quiet_s: float) -> List[str]:
    """What broke the promise: a request not answered 200, ``/healthz`` over ``HEALTH_S``, a photo over
    ``PHOTO_EXTRA_S`` plus its quiet time."""
    kinds = (("/healthz", found.health), ("photo", found.photo))
    out = [f"{kind} answered {status}" for kind, samples in kinds for _, status in samples if status != 200]
    slow_health = [t for t, _ in found.health if t > HEALTH_S]
    slow_photo = [t for t, _ in found.photo if t > quiet_s + PHOTO_EXTRA_S]
    if slow_health:
        out.append(f"/healthz over {HEALTH_S:g} s {len(slow_health)} time(s), up to {max(slow_health):.2f} s")
    if slow_photo:
        out.append(f"photo over {quiet_s + PHOTO_EXTRA_S:.2f} s {len(slow_photo)} time(s), up to "
                   f"{max(slow_photo):.2f} s")
    if not found.health or not found.photo:
        out.append("no probe made")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--idle", type=int, default=64)
    ap.add_argument("--heads", type=int, default=64)
    ap.add_argument("--bodies", type=int, default=16)
    ap.add_argument("--photo", type=Path, default=PHOTO)
    ap.add_argument("--check", action="store_true", help="exit 1 if a bound was broken")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    url, data = args.url.rstrip("/"), args.photo.read_bytes()
    if health(url) != 200:
        raise SystemExit(f"{url}/healthz does not answer 200")
    quiet = quiet_photo_s(url, data)
    with attack(url, args.idle, args.heads, args.bodies) as attacker:
        time.sleep(2)  # every connection open
        found = probe(url, args.seconds, data)
    log.info("%s: %d idle, %d trickled heads, %d trickled bodies for %g s", url, args.idle, args.heads,
             args.bodies, args.seconds)
    log.info("quiet photo request: %.0f ms", quiet * 1000)
    log.info("%s", summary("under attack, /healthz", found.health))
    log.info("%s", summary("under attack, photo", found.photo))
    log.info("attacking connections opened: %s; closed by the server: %s", attacker.tally.opened,
             attacker.tally.closed_by_server or "none")
    broken = problems(found, quiet)
    for problem in broken:
        log.error("%s", problem)
    if args.check and broken:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
