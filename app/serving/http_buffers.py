"""What ``depthmap serve``'s worker (app/serving/gunicorn_worker.py) holds for clients slower than itself: a
request being received (``Incoming``: the head, its body's framing, the body) and an answer being sent
(``Answer``). Plain sockets and bytes; the worker decides when to read, write, hand on and close.
"""

from __future__ import annotations

import io
import os
import socket
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

HEAD_TIMEOUT_S = 15.0  # a request head must be complete this long after the connection's first chance
SEND_TIMEOUT_S = 30.0  # an answer is abandoned after this long without the client taking a byte
ANSWER_KEEP = 64 << 20  # one write of an answer kept for the event loop up to this size
STREAM_KEEP = 8 << 20  # an answer's kept bytes beyond its largest write: a stream then runs at the
# client's pace instead of piling up in memory
SEND_PIECE = 1 << 20


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


class Abandoned(TimeoutError):
    """The client took no byte of its answer for ``SEND_TIMEOUT_S`` (or may not hold another thread)."""


@dataclass
class Part:
    """A piece of an answer still to send: bytes kept in memory, or a slice of an open file."""

    data: Optional[memoryview] = None
    fd: int = -1
    offset: int = 0
    count: int = 0


class Budget:
    """Bytes a worker may hold for slow clients (bodies being received, answers being sent), shared by
    its event loop and its request threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self.lock:
            if self.held + n > self.limit:
                return False
            self.held += n
            return True

    def release(self, n: int) -> None:
        with self.lock:
            self.held -= n


class ThreadShare:
    """How many request threads each client address holds writing an answer at its own pace: at most
    ``limit`` (one fewer than the threads, so that one client never holds them all)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: Dict[str, int] = {}
        self.lock = threading.Lock()

    def take(self, client: str) -> bool:
        with self.lock:
            if self.held.get(client, 0) >= self.limit:
                return False
            self.held[client] = self.held.get(client, 0) + 1
            return True

    def give_back(self, client: str) -> None:
        with self.lock:
            n = self.held.get(client, 0) - 1
            if n > 0:
                self.held[client] = n
            else:
                self.held.pop(client, None)


class Answer:
    """Where a request thread writes its answer (gunicorn's response writes to it as to the socket): what
    the client takes at once is sent at once, the rest is kept for the event loop to send at the client's
    pace, so the thread is free whatever that pace. Bytes are kept in memory while the worker's
    ``budget`` grants them: writes of up to ``ANSWER_KEEP`` bytes, while what waits stays within the
    largest write plus ``STREAM_KEEP`` (a one-piece answer is kept whole, a stream runs at the client's
    pace); a file (a video) is kept as a duplicate of its descriptor. Past that, the thread writes the
    rest itself, giving up after ``SEND_TIMEOUT_S`` without progress, and only while ``share`` lets
    this client hold one more thread so."""

    def __init__(self, sock: socket.socket, budget: Budget, share: ThreadShare, client: str) -> None:
        self.sock = sock
        self.parts: Deque[Part] = deque()
        self.kept = 0  # bytes kept in memory and not yet sent: what this answer holds of the budget
        self.largest = 0  # its largest write
        self.budget, self.share, self.client = budget, share, client
        self.blocking = False

    def __getattr__(self, name: str) -> Any:  # fileno, getpeername, setsockopt...: the socket's own
        return getattr(self.sock, name)

    @property
    def pending(self) -> bool:
        return bool(self.parts)

    def send(self, data: Any, flags: int = 0) -> int:
        self.sendall(data)
        return len(data)

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        if not self.blocking and not self.parts:
            view = view[self._try(lambda: self.sock.send(view)):]
        if not view:
            return
        self.largest = max(self.largest, len(view))
        fits = len(view) <= ANSWER_KEEP and self.kept + len(view) <= self.largest + STREAM_KEEP
        if not self.blocking and fits and self.budget.reserve(len(view)):
            # bytes cannot change under the view: kept as they are; anything else is copied
            self.parts.append(Part(data=view if isinstance(data, bytes) else memoryview(bytes(view))))
            self.kept += len(view)
            return
        self._block()
        self._write(view)

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        fd = file.fileno()
        count = os.fstat(fd).st_size - offset if count is None else count
        if not self.blocking and not self.parts:
            sent = self._try(lambda: os.sendfile(self.sock.fileno(), fd, offset, count))
            offset, count = offset + sent, count - sent
        if count and not self.blocking:
            self.parts.append(Part(fd=os.dup(fd), offset=offset, count=count))
        elif count:
            self._send_file(fd, offset, count)
        return count

    def _try(self, send: Callable[[], int]) -> int:
        try:
            return send()
        except (BlockingIOError, InterruptedError):
            return 0

    def _block(self) -> None:
        """From now on the thread writes: what was kept first, then the rest, at the client's pace."""
        if self.blocking:
            return
        if not self.share.take(self.client):
            raise Abandoned("this client already holds its share of the request threads")
        self.blocking = True
        self.sock.settimeout(SEND_TIMEOUT_S)
        while self.parts:
            part = self.parts.popleft()
            if part.data is not None:
                self._write(part.data)
                self.kept -= len(part.data)
                self.budget.release(len(part.data))
            else:
                self._send_file(part.fd, part.offset, part.count)
                os.close(part.fd)

    def _write(self, view: memoryview) -> None:
        while view:
            view = view[self.sock.send(view[:SEND_PIECE]):]  # the socket's timeout: per send, not in all

    def _send_file(self, fd: int, offset: int, count: int) -> None:
        with os.fdopen(os.dup(fd), "rb") as file:
            self.sock.sendfile(file, offset, count)

    def finish(self) -> None:
        """The thread is done writing: its share back, the socket back to the event loop's mode."""
        if self.blocking:
            self.share.give_back(self.client)
        try:
            self.sock.setblocking(False)
        except OSError:  # closed after a failure mid-answer
            pass

    def send_some(self) -> int:
        """Sends what the client takes now, from the event loop; how many bytes it sent."""
        sent = freed = 0
        while self.parts:
            part = self.parts[0]
            try:
                if part.data is not None:
                    n = self.sock.send(part.data[:SEND_PIECE])
                    part.data = part.data[n:]
                    freed += n
                    done = not part.data
                else:
                    n = os.sendfile(self.sock.fileno(), part.fd, part.offset, min(part.count, SEND_PIECE))
                    part.offset, part.count = part.offset + n, part.count - n
                    done = not part.count or not n
            except (BlockingIOError, InterruptedError):
                break
            sent += n
            if not done:
                break
            self.parts.popleft()
            if part.fd >= 0:
                os.close(part.fd)
        self.kept -= freed
        self.budget.release(freed)
        return sent

    def discard(self) -> None:
        """Drops what is still to send (the client is gone or too slow)."""
        for part in self.parts:
            if part.fd >= 0:
                os.close(part.fd)
        self.parts.clear()
        self.budget.release(self.kept)
        self.kept = 0
