"""The gunicorn worker of ``depthmap serve``: gunicorn's threaded worker (``gthread``), except that each
request is received whole, head and body, by the worker's event loop before a request thread runs it.

Why: ``gthread`` hands a connection to one of its few request threads as soon as it is readable, and
that thread then blocks on the socket until the request has arrived. Four clients that send a partial
request (or a body one byte at a time) held all four threads, and the server answered nothing else, not
even ``/healthz``, for as long as they liked. Here a slow client costs a socket and a small buffer in
the event loop, never a thread, and is closed when it stalls:

- a request head must be complete within ``HEAD_TIMEOUT_S`` of the connection (or of a kept-alive
  connection's next byte), and at most ``HEAD_LIMIT`` bytes long;
- a body may pause at most ``BODY_IDLE_S`` between two pieces; it is held in memory (an upload is never
  written to disk, as with Werkzeug before), and every body being received or waiting for a thread
  counts against ``DEPTHMAP_RECEIVE_BYTES`` (a request that would pass it gets 503 ``busy``);
- a body declared larger than the app's limit is not received: the app answers 413 from the head;
- when the worker's connections are nearly all taken, the oldest connection still sending its
  request is closed to let a new one in, so a flood of slow clients cannot lock others out;
- an answer the client does not read is abandoned after ``SEND_TIMEOUT_S`` per write.

Closing (after ``Connection: close``, or a refusal) half-closes the socket and drains what the client
still sends in the event loop, instead of gunicorn's blocking two-second linger.

A buffering reverse proxy (nginx with request buffering) does the same in front of a server; this
worker makes ``depthmap serve`` safe on its own, with no proxy (docs/self-hosting.md, "Slow clients").
It relies on gunicorn 27's ``gthread`` internals (``TConn``, the poller, ``finish_request``), which is
why ``pyproject.toml`` pins gunicorn to that major version.
"""

from __future__ import annotations

import errno
import io
import json
import resource
import selectors
import socket
import time
from collections import Counter
from functools import partial
from typing import Any, Dict, Iterator, List, Optional, Tuple

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

from . import config

HEAD_LIMIT = 64 * 1024  # gunicorn's own limits allow less in practice (100 fields of 8190 bytes)
HEAD_TIMEOUT_S = 15.0
BODY_IDLE_S = 15.0
SEND_TIMEOUT_S = 30.0
LINGER_S = 2.0  # how long a closing connection is drained for what the client still sends
READ_SIZE = 256 * 1024
SEND_PIECE = 1 << 20
REPORT_EVERY_S = 60.0  # slow connections closed are logged as one line per this many seconds
OPEN_FILES = 65536  # the soft limit on open files is raised to this (or the hard limit) at start
VIDEO_UPLOAD = b" /api/v1/video"  # the one route with the video limit (app/web/video.py); others: photos
REASONS = {
    400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class Framing:
    """How much of a request body is still to come: a length, or HTTP/1.1 chunked framing read as it
    arrives (sizes, data, the last chunk and its trailers)."""

    LINE_LIMIT = 8 * 1024

    def __init__(self, length: Optional[int]) -> None:
        self.left = length  # None: chunked
        self.state = "size"
        self.chunk_left = 0
        self.line = bytearray()
        self.size = 0  # body bytes so far

    @property
    def done(self) -> bool:
        return self.left == 0 if self.left is not None else self.state == "end"

    def take(self, data: bytes) -> int:
        """How many leading bytes of ``data`` belong to the body; ``ValueError`` on bad chunk framing."""
        if self.left is not None:
            n = min(self.left, len(data))
            self.left -= n
            self.size += n
            return n
        at = 0
        while at < len(data) and self.state != "end":
            at = self._chunked(data, at)
        self.size += at
        return at

    def _chunked(self, data: bytes, at: int) -> int:
        if self.state == "data":
            n = min(self.chunk_left, len(data) - at)
            self.chunk_left -= n
            if not self.chunk_left:
                self.state = "crlf"
            return at + n
        end = data.find(b"\n", at)
        stop = len(data) if end < 0 else end + 1
        self.line += data[at:stop]
        if len(self.line) > self.LINE_LIMIT:
            raise ValueError("chunk line too long")
        if end >= 0:
            self._line(bytes(self.line).rstrip(b"\r\n"))
            self.line.clear()
        return stop

    def _line(self, line: bytes) -> None:
        if self.state == "size":
            self.chunk_left = int(line.split(b";", 1)[0].strip(), 16)  # ValueError when not hex
            if self.chunk_left < 0:
                raise ValueError("negative chunk size")
            self.state = "data" if self.chunk_left else "trailer"
        elif self.state == "crlf":
            if line:
                raise ValueError("chunk not followed by CRLF")
            self.state = "size"
        elif not line:  # the empty line that ends the trailers
            self.state = "end"


def read_head(head: bytes) -> Tuple[bytes, Dict[str, List[str]]]:
    """The request line and the header fields (lower-case names) of a complete head."""
    lines = head.split(b"\r\n")
    while lines and not lines[0]:  # empty lines before a request are allowed
        lines.pop(0)
    fields: Dict[str, List[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            fields.setdefault(name.strip().lower().decode("latin-1"), []).append(
                value.strip().decode("latin-1"))
    return (lines[0] if lines else b""), fields


def body_framing(fields: Dict[str, List[str]], limit: int) -> Optional[Framing]:
    """The framing of the body a head announces, or None when the body is not to be received here: a
    length over ``limit`` (the app answers 413 from the head) or framing the parser will refuse."""
    codings = ",".join(fields.get("transfer-encoding", [])).lower()
    if codings:
        return Framing(None) if codings.rsplit(",", 1)[-1].strip() == "chunked" else None
    lengths = set(fields.get("content-length", ["0"]))
    if len(lengths) != 1:
        return None
    text = lengths.pop()
    if not (text.isascii() and text.isdigit()) or int(text) > limit:
        return None
    return Framing(int(text))


def without_expect(head: bytes) -> bytes:
    """``head`` without its ``Expect`` line: this worker answers it (100 Continue once the body is to be
    received), and a body that is not to be received should not be sent at all."""
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")]
    return b"\r\n".join(lines)


class Incoming:
    """One request being received: its head, then its body, in memory."""

    def __init__(self, now: float, data: bytes = b"") -> None:
        self.head = bytearray(data)
        self.framing: Optional[Framing] = None
        self.body: Optional[io.BytesIO] = None
        self.deadline = now + HEAD_TIMEOUT_S
        self.rest = b""  # bytes after this request: the start of the next one
        self.complete = False
        self.partial = False  # handed on before its body: the connection closes after the answer

    @property
    def size(self) -> int:
        return self.framing.size if self.framing is not None else 0

    def chunks(self) -> Iterator[bytes]:
        """The request as gunicorn's parser reads it: the head, then the body a megabyte at a time."""
        yield bytes(self.head)
        if self.body is not None:
            self.body.seek(0)
            while True:
                piece = self.body.read(1 << 20)
                if not piece:
                    break
                yield piece
            self.body.close()
            self.body = None

    def discard(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None


class PatientSocket(socket.socket):
    """A client socket whose ``sendall`` gives up after ``SEND_TIMEOUT_S`` without progress (the
    socket's timeout, per ``send``), not after that long in all as Python's does: a slow client still
    gets a large answer, one that stopped reading does not hold a request thread for long."""

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[self.send(view[:SEND_PIECE], flags):]


class Conn(TConn):
    """gunicorn's connection, with the request being received and what its body holds of the budget."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.incoming: Optional[Incoming] = None
        self.held = 0  # body bytes of this connection's request counted against the budget
        self.close_after = False
        self.rest = b""


class WholeRequestWorker(ThreadWorker):
    """``gthread`` with whole requests handed to its threads; see the module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receiving: Dict[Conn, Incoming] = {}  # in the order they started
        self.closing: Dict[socket.socket, float] = {}  # half-closed sockets being drained -> deadline
        self.photo_limit = config.get("DEPTHMAP_MAX_CONTENT_LENGTH")
        self.video_limit = max(self.photo_limit, config.get("DEPTHMAP_VIDEO_MAX_CONTENT_LENGTH"))
        self.budget = max(config.get("DEPTHMAP_RECEIVE_BYTES"), self.video_limit)
        self.held = 0
        self.closed: Counter = Counter()
        self.last_report = time.monotonic()

    def init_process(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        super().init_process()

    def limit(self, request_line: bytes) -> int:
        """The largest body the app reads for this request: larger ones it answers 413 from the head."""
        return self.video_limit if VIDEO_UPLOAD in request_line else self.photo_limit

    # receiving ------------------------------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._evict("no_fds")
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        if self.nr_conns >= self.worker_connections - 1:
            self._evict("full")
        sock = PatientSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        conn = Conn(self.cfg, sock, addr, listener.getsockname())
        self._receive(conn, b"")

    def on_client_socket_readable(self, conn: Conn, client: socket.socket) -> None:
        """A kept-alive connection sends its next request."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._receive(conn, b"")

    def _receive(self, conn: Conn, data: bytes) -> None:
        """Starts receiving a request on ``conn`` (``data``: what arrived of it already)."""
        conn.sock.setblocking(False)
        incoming = conn.incoming = Incoming(time.monotonic())
        self.receiving[conn] = incoming
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
        if data:
            self._feed(conn, data)

    def _readable(self, conn: Conn, client: socket.socket) -> None:
        try:
            data = client.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(conn)
            return
        self._feed(conn, data)

    def _feed(self, conn: Conn, data: bytes) -> None:
        incoming = conn.incoming
        assert incoming is not None
        try:
            if incoming.framing is None:
                data = self._feed_head(conn, incoming, data)
            if incoming.framing is not None and not incoming.complete:
                self._feed_body(conn, incoming, data)
        except ValueError:  # chunk framing the parser would refuse: it says so
            incoming.partial = True
            incoming.complete = True
        if incoming.complete:
            self._hand_on(conn, incoming)

    def _feed_head(self, conn: Conn, incoming: Incoming, data: bytes) -> bytes:
        """Adds ``data`` to the head; returns what follows the head (the body's first bytes)."""
        incoming.head += data
        end = incoming.head.find(b"\r\n\r\n")
        if end < 0:
            if len(incoming.head) > HEAD_LIMIT:
                self._refuse(conn, 431, "headers_too_large", "The request's header fields are too large.")
            return b""
        rest = bytes(incoming.head[end + 4:])
        del incoming.head[end + 4:]
        line, fields = read_head(bytes(incoming.head))
        expects = "expect" in fields
        if expects:  # answered here when the body is to be received; gunicorn must not answer it again
            incoming.head[:] = without_expect(bytes(incoming.head))
        framing = body_framing(fields, self.limit(line))
        if framing is None or framing.done:
            incoming.partial = framing is None
            incoming.complete = True
            incoming.rest = rest
            return b""
        incoming.framing = framing
        incoming.deadline = time.monotonic() + BODY_IDLE_S
        if expects and line.endswith(b"/1.1"):
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass
        return rest

    def _feed_body(self, conn: Conn, incoming: Incoming, data: bytes) -> None:
        framing = incoming.framing
        assert framing is not None
        n = framing.take(data)
        if n:
            if self.held + n > self.budget:
                self._refuse(conn, 503, "busy", "The server is receiving as many uploads as it can hold; "
                             "please try again in a moment.")
                return
            if incoming.body is None:
                incoming.body = io.BytesIO()
            incoming.body.write(data[:n])
            self.held += n
            conn.held += n
        if framing.left is None and framing.size > self.video_limit:
            self._refuse(conn, 413, "too_large", "The upload is larger than this server's limit of "
                         f"{self.video_limit / 2**20:g} MB.")
            return
        incoming.deadline = time.monotonic() + BODY_IDLE_S
        if framing.done:
            incoming.complete = True
            incoming.rest = data[n:]

    def _hand_on(self, conn: Conn, incoming: Incoming) -> None:
        """The whole request (or all of it that is to be received) goes to a request thread."""
        self.poller.unregister(conn.sock)
        del self.receiving[conn]
        conn.incoming = None
        conn.rest = incoming.rest
        conn.close_after = incoming.partial
        conn.parser = http.get_parser(self.cfg, incoming.chunks(), conn.client)
        conn.data_ready = True  # gthread would otherwise wait for the socket to be readable
        self.enqueue_req(conn)

    # the answer ---------------------------------------------------------------------------------------

    def handle_request(self, req: Any, conn: Conn) -> bool:
        conn.sock.settimeout(SEND_TIMEOUT_S)  # only writes use the socket: the request came from memory
        if conn.close_after:  # its body is still on the socket, unread: this answer is the last
            req.must_close = True
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.warning("%s stopped reading its answer for %g s; connection closed",
                             conn.client[0] if isinstance(conn.client, tuple) else conn.client,
                             SEND_TIMEOUT_S)
            return False

    def finish_request(self, conn: Conn, fs: Any) -> None:
        """Back from a request thread: the connection waits for its next request, or closes."""
        self.held -= conn.held
        conn.held = 0
        try:
            keep = not fs.cancelled() and fs.exception() is None and bool(fs.result())
        except Exception:  # noqa: BLE001 - a failed future just closes its connection
            keep = False
        if not keep or conn.close_after or not self.alive:
            self._close(conn)
            return
        rest, conn.rest = conn.rest, b""
        if rest:  # the client sent its next request already (pipelining)
            self._receive(conn, rest)
            return
        conn.sock.setblocking(False)
        conn.set_timeout()
        self.keepalived_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))

    # closing ------------------------------------------------------------------------------------------

    def _refuse(self, conn: Conn, status: int, code: str, message: str) -> None:
        """Answers ``status`` with the studio's JSON error at once and closes the connection."""
        body = json.dumps({"error": code, "message": message}).encode()
        head = (f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n")
        if status == 503:
            head += "Retry-After: 5\r\n"
        try:
            conn.sock.send(head.encode() + b"\r\n" + body)
        except OSError:
            pass
        self.closed[code] += 1
        self._drop(conn)

    def _drop(self, conn: Conn) -> None:
        """Stops receiving on ``conn`` and closes it."""
        incoming = self.receiving.pop(conn, None)
        if incoming is not None:
            incoming.discard()
        self.held -= conn.held
        conn.held = 0
        conn.incoming = None
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self._close(conn)

    def _close(self, conn: Conn) -> None:
        """Half-closes ``conn`` and drains it in the event loop until the client closes or LINGER_S
        passes, so that an answer is not cut short by a reset (RFC 9112, section 9.6)."""
        self.nr_conns -= 1
        sock = conn.sock
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self.closing[sock] = time.monotonic() + LINGER_S
        self.poller.register(sock, selectors.EVENT_READ, self._drain)

    def _drain(self, sock: socket.socket) -> None:
        try:
            if sock.recv(READ_SIZE):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        self.closing.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _evict(self, why: str) -> None:
        """Closes the connection that has been sending its request the longest, to let a new one in."""
        if self.receiving:
            self.closed[why] += 1
            self._drop(next(iter(self.receiving)))

    def murder_pending(self) -> None:
        """Each turn of the event loop: closes connections whose request stalled, drained sockets past
        their linger, and every connection still sending a request once the worker stops."""
        super().murder_pending()
        now = time.monotonic()
        for conn, incoming in list(self.receiving.items()):
            if now > incoming.deadline or not self.alive:
                self.closed["idle" if not incoming.head else
                            "slow_head" if incoming.framing is None else "slow_body"] += 1
                self._drop(conn)
        for sock, deadline in list(self.closing.items()):
            if now > deadline or not self.alive:
                self._forget(sock)
        self._report(now)

    def _report(self, now: float) -> None:
        if now - self.last_report < REPORT_EVERY_S:
            return
        self.last_report = now
        if self.closed:
            self.log.info("closed %d connection(s) in the last %g s before their request was complete "
                          "(%s)", sum(self.closed.values()), REPORT_EVERY_S,
                          ", ".join(f"{k}: {v}" for k, v in sorted(self.closed.items())))
            self.closed.clear()
