"""The admission gate of one process: how many heavy jobs (decode + inference) run at once, and how many
may wait for them. Beyond that a request is refused at once with ``Busy`` (HTTP 503 + Retry-After)
instead of queueing without bound: every waiting request holds its upload in memory, and a long
queue only ends in gunicorn's worker timeout killing the worker and every request in it."""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator


class Busy(Exception):
    """The server is at capacity; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class Gate:
    """At most ``slots`` jobs run at once and at most ``queue`` more wait, each at most ``timeout`` s."""

    def __init__(self, slots: int = 1, queue: int = 2, timeout: float = 30.0) -> None:
        if slots < 1 or queue < 0 or timeout <= 0:
            raise ValueError("slots >= 1, queue >= 0 and timeout > 0 are required")
        self.slots, self.queue, self.timeout = slots, queue, timeout
        self._running = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._inside = 0  # running + waiting
        self._job_s = 0.5  # moving average of a job's duration, for Retry-After
        self.refused = 0

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the jobs ahead times a typical job's duration."""
        return max(1, math.ceil(self._job_s * max(1, self._inside) / self.slots))

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Run the body in a slot; raises ``Busy`` when the queue is full or the wait is too long."""
        with self._lock:
            if self._inside >= self.slots + self.queue:
                self.refused += 1
                raise Busy("The server is busy with other depth maps; please try again in a moment.",
                           self.retry_after())
            self._inside += 1
        try:
            if not self._running.acquire(timeout=self.timeout):
                with self._lock:
                    self.refused += 1
                raise Busy(f"The server is busy: no depth map slot freed up within {self.timeout:g} s; "
                           "please try again later.", self.retry_after())
            t0 = time.monotonic()
            try:
                yield
            finally:
                self._running.release()
                with self._lock:
                    self._job_s = 0.8 * self._job_s + 0.2 * (time.monotonic() - t0)
        finally:
            with self._lock:
                self._inside -= 1

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {"slots": self.slots, "queue": self.queue,
                    "busy": min(self._inside, self.slots), "waiting": max(0, self._inside - self.slots),
                    "refused": self.refused}
