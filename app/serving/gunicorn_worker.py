"""The gunicorn worker of ``depthmap serve``: gunicorn's threaded worker (``gthread``), except that each
request is received whole, head and body, by the worker's event loop before a request thread runs it,
and each answer is taken from the thread as fast as it is made and sent at the client's pace.

Why: ``gthread`` hands a connection to one of its few request threads as soon as it is readable, and
that thread then blocks on the socket until the request has arrived, and again until the client has
taken the answer. Four clients that sent a partial request (or a body one byte at a time) held all four
threads, and the server answered nothing else, not even ``/healthz``, for as long as they liked. Here
a slow client costs a socket and a buffer, never a thread (docs/self-hosting.md, "Slow clients"):

- a request head must be complete within ``HEAD_TIMEOUT_S`` of the connection (or of a kept-alive
  connection's next byte), and at most ``HEAD_LIMIT`` bytes long;
- a body may pause at most ``BODY_IDLE_S`` between two pieces; a body declared larger than the app's
  limit is not received (the app answers 413 from the head);
- bodies being received and answers being sent are held in memory (an upload is never written to
  disk) within ``DEPTHMAP_BUFFER_BYTES`` per worker: a body that would pass it gets 503 ``busy``, an
  answer that would is written by its thread at the client's pace (``http_buffers.Answer``);
- an answer the client stops taking is abandoned after ``SEND_TIMEOUT_S`` without progress;
- when the worker's connections are nearly all taken, the oldest one still sending its request is
  closed to let a new one in, so a flood of slow clients cannot lock others out.

Closing (after ``Connection: close``, or a refusal) half-closes the socket and drains what the client
still sends in the event loop, instead of gunicorn's blocking two-second linger.

A buffering reverse proxy (nginx) does the same in front of a server; this worker makes
``depthmap serve`` safe with no proxy. It builds on gunicorn 27's ``gthread`` internals (``TConn``, the
poller, ``finish_request``), which is why ``pyproject.toml`` pins gunicorn to that major version.
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
from typing import Any, Dict, Optional

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

from .. import config
from .http_buffers import (SEND_TIMEOUT_S, Answer, Budget, Incoming, ThreadShare, body_framing, read_head,
                           without_expect)

HEAD_LIMIT = 64 * 1024  # gunicorn's own limits allow less in practice (100 fields of 8190 bytes)
BODY_IDLE_S = 15.0
LINGER_S = 2.0  # how long a closing connection is drained for what the client still sends
READ_SIZE = 256 * 1024
REPORT_EVERY_S = 60.0  # connections closed for being slow are logged as one line per this many seconds
OPEN_FILES = 65536  # the soft limit on open files is raised to this (or the hard limit) at start
VIDEO_UPLOAD = b" /api/v1/video"  # the one route with the video limit (app/web/video.py); others: photos
REASONS = {413: "Content Too Large", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class Conn(TConn):
    """gunicorn's connection, with the request being received, the answer being sent and what its
    request body holds of the budget."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.incoming: Optional[Incoming] = None
        self.answer: Optional[Answer] = None
        self.held = 0  # body bytes of this connection's request counted against the budget
        self.close_after = False  # its request's body was never received: no next request on it
        self.keep = False  # what the request thread decided: keep the connection once the answer is out
        self.rest = b""  # bytes of the client's next request, read with this one
        self.deadline = 0.0  # while an answer is sent: when it is abandoned without progress

    @property
    def address(self) -> str:
        return str(self.client[0] if isinstance(self.client, tuple) else self.client)


class WholeRequestWorker(ThreadWorker):
    """``gthread`` with whole requests handed to its threads and answers taken from them; see the
    module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receiving: Dict[Conn, Incoming] = {}  # in the order they started
        self.sending: Dict[Conn, Answer] = {}
        self.closing: Dict[socket.socket, float] = {}  # half-closed sockets being drained -> deadline
        self.photo_limit = config.get("DEPTHMAP_MAX_CONTENT_LENGTH")
        self.video_limit = max(self.photo_limit, config.get("DEPTHMAP_VIDEO_MAX_CONTENT_LENGTH"))
        self.budget = Budget(max(config.get("DEPTHMAP_BUFFER_BYTES"), self.video_limit))
        self.share = ThreadShare(max(1, self.cfg.threads - 1))
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
        self._receive(Conn(self.cfg, sock, addr, listener.getsockname()), b"")

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
        if incoming.complete and conn in self.receiving:
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
            if not self.budget.reserve(n):
                self._refuse(conn, 503, "busy", "The server is receiving as many uploads as it can hold; "
                             "please try again in a moment.")
                return
            conn.held += n
            if incoming.body is None:
                incoming.body = io.BytesIO()
            incoming.body.write(data[:n])
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

    # answering ----------------------------------------------------------------------------------------

    def handle_request(self, req: Any, conn: Conn) -> bool:
        """In a request thread: the app's answer goes into an ``Answer`` instead of onto the socket."""
        if conn.close_after:  # its body is still on the socket, unread: this answer is the last
            req.must_close = True
        real = conn.sock
        real.setblocking(False)
        answer = conn.answer = Answer(real, self.budget, self.share, conn.address)
        conn.sock = answer  # type: ignore[assignment]
        try:
            return super().handle_request(req, conn)
        except TimeoutError:  # the client took nothing for SEND_TIMEOUT_S, or holds its share of threads
            self.closed["slow_reader"] += 1
            return False
        finally:
            conn.sock = real
            answer.finish()

    def finish_request(self, conn: Conn, fs: Any) -> None:
        """Back from a request thread: what is left of the answer is sent, then the connection waits for
        its next request, or closes."""
        self.budget.release(conn.held)
        conn.held = 0
        try:
            conn.keep = not fs.cancelled() and fs.exception() is None and bool(fs.result())
        except Exception:  # noqa: BLE001 - a failed future just closes its connection
            conn.keep = False
        answer, conn.answer = conn.answer, None
        if conn.sock.fileno() < 0:  # closed by gunicorn after a failure mid-answer
            if answer is not None:
                answer.discard()
            self.nr_conns -= 1
            return
        if answer is not None and answer.pending:
            self.sending[conn] = answer
            conn.deadline = time.monotonic() + SEND_TIMEOUT_S
            self.poller.register(conn.sock, selectors.EVENT_WRITE, partial(self._writable, conn))
            return
        self._after_answer(conn)

    def _writable(self, conn: Conn, client: socket.socket) -> None:
        answer = self.sending[conn]
        try:
            if answer.send_some():
                conn.deadline = time.monotonic() + SEND_TIMEOUT_S
        except OSError:  # the client went away
            self._drop(conn)
            return
        if not answer.pending:
            del self.sending[conn]
            self.poller.unregister(client)
            self._after_answer(conn)

    def _after_answer(self, conn: Conn) -> None:
        """The answer is out: the connection waits for its next request, or closes."""
        if not conn.keep or conn.close_after or not self.alive:
            self._close(conn)
            return
        rest, conn.rest = conn.rest, b""
        if rest:  # the client sent its next request already (pipelining)
            self._receive(conn, rest)
            return
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
        """Stops receiving or sending on ``conn`` and closes it."""
        incoming = self.receiving.pop(conn, None)
        if incoming is not None:
            incoming.discard()
        answer = self.sending.pop(conn, None)
        if answer is not None:
            answer.discard()
        self.budget.release(conn.held)
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
        """Each turn of the event loop: closes connections whose request or answer stalled, drained
        sockets past their linger, and every connection still sending a request once the worker stops
        (answers already made still go out, within gunicorn's graceful timeout)."""
        super().murder_pending()
        now = time.monotonic()
        for conn, incoming in list(self.receiving.items()):
            if now > incoming.deadline or not self.alive:
                self.closed["idle" if not incoming.head else
                            "slow_head" if incoming.framing is None else "slow_body"] += 1
                self._drop(conn)
        for conn in list(self.sending):
            if now > conn.deadline:
                self.closed["slow_reader"] += 1
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
            self.log.info("closed %d connection(s) in the last %g s for being too slow or too many (%s)",
                          sum(self.closed.values()), REPORT_EVERY_S,
                          ", ".join(f"{k}: {v}" for k, v in sorted(self.closed.items())))
            self.closed.clear()
