"""The admission gate: how many heavy jobs (decode + inference) one process runs at once, how many wait
inside it with their uploads, and the line, shared by every worker and host (``app.serving.line``), that
decides in which order requests get in.

A request takes a place at the back of the line, or shows the ticket of the place it was given before.
It may enter this process's small in-memory queue only when every place ahead of it has entered a worker
(so places enter the workers first come, first served) and the queue has room; inside, a process starts
its waiting requests in the order of their places. A request that may not enter is refused at once with
``Busy`` (HTTP 503 + Retry-After): it holds no upload while it waits in line. A client that asked for a
place (the page does) keeps it: the answer says how many are ahead and when to ask again, and when its turn
comes (*called*) it sends the request again with its ticket. A client that did not ask loses the place it
was given, so clients that ignore the line never hold it up.
"""

from __future__ import annotations

import bisect
import logging
import math
import secrets
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, NoReturn, Optional

from .line import Line, Place, SqliteLine, valid_ticket
from .store import StoreUnavailable

log = logging.getLogger(__name__)

CHECKIN_S = 5.0  # a process counts itself among the line's workers this often (for three times as long)
HEARTBEAT_S = 2.0  # a request waiting inside keeps its place this often...
INSIDE_HOLD_S = 10.0  # ...for this long: a killed worker's places are gone after that
POLL_S = (0.25, 2.0)  # the shortest and longest wait a place-holder is told before asking again
# a request whose place has at most IN_FLIGHT places outside ahead of it lets them enter first, pausing
# this long between its tries (requests that took their places a moment before it)
IN_FLIGHT, ENTER_PAUSES_S = 2, (0.02, 0.05, 0.1, None)
BUSY = "The server is busy with other depth maps; please try again in a moment."


class Busy(Exception):
    """The server is at capacity; try again after ``retry_after`` seconds. ``line`` is the place kept for
    the client (``Gate.line_info``), if it asked for one."""

    def __init__(self, message: str, retry_after: int, line: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.line = line


@dataclass
class Visit:
    """One request's dealings with the line: whether its client asked for a place (the ticket header),
    the ticket it showed (None: a new place, please), and what the gate did with them."""

    ticket: Optional[str]
    handled: bool = False  # the gate used or dropped the shown ticket, or kept a place


VISIT: ContextVar[Optional[Visit]] = ContextVar("depthmap_line_visit", default=None)


class Gate:
    """At most ``slots`` jobs run at once in this process and at most ``queue`` more wait in it, each at
    most ``timeout`` s; who gets in is decided by ``line`` (this process alone when not given), which holds
    at most ``length`` places; a place kept for a client lasts ``grace`` s past the time it was told to
    come back."""

    def __init__(self, slots: int = 1, queue: int = 2, timeout: float = 30.0, line: Optional[Line] = None,
                 length: int = 100, grace: float = 5.0) -> None:
        if slots < 1 or queue < 0 or timeout <= 0 or length < 1 or grace <= 0:
            raise ValueError("slots >= 1, queue >= 0, timeout > 0, length >= 1 and grace > 0 are required")
        self.slots, self.queue, self.timeout = slots, queue, timeout
        self.length, self.grace = length, grace
        self.line = line or SqliteLine()
        self._cond = threading.Condition()
        self._taken = 0  # running + waiting inside this process
        self._running = 0
        self._order: List[int] = []  # the place numbers of the requests waiting inside, lowest first
        self._job_s = 0.5  # moving average of a job's duration, for the waits announced
        self.refused = 0
        self._id = secrets.token_hex(8)
        self._workers, self._checked_in = 1, -math.inf  # the processes sharing the line, when last asked

    # the requests' side ---------------------------------------------------------------------------------

    def begin_visit(self, header: Optional[str]) -> Optional[Token]:
        """Called for each request with the value of its ticket header (None: absent). A request that
        sends the header asked for a place; its value is the ticket of that place, or anything else for
        a new one."""
        if header is None:
            return None
        return VISIT.set(Visit(valid_ticket(header.strip().lower())))

    def end_visit(self, token: Optional[Token]) -> None:
        """At the end of the request: a shown ticket that the gate never saw (a result from the store, an
        error before any inference) is given up, so it does not hold the line."""
        if token is None:
            return
        visit = VISIT.get()
        VISIT.reset(token)
        if visit is not None and visit.ticket and not visit.handled:
            self._leave_quietly(visit.ticket)

    def status(self, ticket: str) -> Optional[Dict[str, Any]]:
        """Where ``ticket``'s place stands (``line_info``), kept until the next question is due; None if
        it has no live place (unknown, expired, used or forged)."""
        ticket = valid_ticket(ticket) or ""
        place = self.line.find(ticket) if ticket else None
        if place is None:
            return None
        if place.inside:  # its request is inside a worker already
            return self.line_info(place, POLL_S[1], called=True)
        # a worker with a slot free and nobody waiting calls the first place out too: the client's next
        # request most likely comes on the same connection, to this worker
        called = self._called(place) or (place.outside_ahead == 0 and self._idle())
        retry_in = 0.0 if called else self._poll_s(place)
        if not self.line.hold(ticket, retry_in + self.grace, inside=None):  # its request may enter meanwhile
            return None
        return self.line_info(place, retry_in, called)

    @staticmethod
    def line_info(place: Place, retry_in: float, called: bool) -> Dict[str, Any]:
        """What a client is told of its place: its ticket, its place (1: first), how many are ahead,
        whether its turn has come (send the request again now, with the ticket) and, if not, in how many
        seconds to ask again."""
        return {"ticket": place.ticket, "place": place.ahead + 1, "ahead": place.ahead, "called": called,
                "retry_in": round(retry_in, 2)}

    # the slot -------------------------------------------------------------------------------------------

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Run the body in a slot, in the line's order; raises ``Busy`` when the request may not wait here
        (others ahead in line, this process's queue full, or no slot within ``timeout``)."""
        visit = VISIT.get()
        place = self._take_place(visit)
        with self._cond:
            room = self._taken < self.slots + self.queue
            if room:
                self._taken += 1
        if not room:
            self._refuse(place, visit, called=self._called(place))
        try:
            self._wait_turn(self._enter(place, visit), visit)
        except BaseException:
            with self._cond:
                self._taken -= 1
                self._cond.notify_all()
            raise
        t0 = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._taken -= 1
                self._job_s = 0.8 * self._job_s + 0.2 * (time.monotonic() - t0)
                self._cond.notify_all()

    def _enter(self, place: Place, visit: Optional[Visit]) -> Place:
        """``place`` entered into this process's queue, or ``Busy``."""
        for pause in ENTER_PAUSES_S:
            entered = self.line.enter(place.ticket, INSIDE_HOLD_S)
            if entered is None:
                self._refuse(place, visit, called=False, gone=True)
            if entered.inside:
                return entered
            if entered.outside_ahead > IN_FLIGHT or pause is None:
                break
            time.sleep(pause)
        self._refuse(entered, visit, called=False)

    def _take_place(self, visit: Optional[Visit]) -> Place:
        """The place a visit showed (if it is live and not in use by another request), else a new one."""
        if visit is not None and visit.ticket and not visit.handled:
            visit.handled = True
            place = self.line.find(visit.ticket)
            if place is not None and not place.inside:
                return place
        place = self.line.join(INSIDE_HOLD_S, self.length)
        if place is None:
            with self._cond:
                self.refused += 1
            raise Busy(f"The server is busy: {self.length} requests are already waiting in line; please "
                       "try again later.", self._wait_s(self.length))
        if visit is not None:
            visit.handled = True
        return place

    def _wait_turn(self, place: Place, visit: Optional[Visit]) -> None:
        """Waits inside until ``place`` is this process's lowest waiting place and a slot is free (then
        it runs, and leaves the line), keeping the place alive; ``Busy`` after ``timeout``."""
        with self._cond:
            bisect.insort(self._order, place.number)
        deadline = time.monotonic() + self.timeout
        try:
            while not self._start(place.number, min(deadline, time.monotonic() + HEARTBEAT_S)):
                if time.monotonic() >= deadline:
                    self._refuse(place, visit, called=True,
                                 message=f"The server is busy: no depth map slot freed up within "
                                         f"{self.timeout:g} s; please try again later.")
                self._hold_quietly(place.ticket, INSIDE_HOLD_S, inside=True)
        except BaseException:
            with self._cond:
                self._order.remove(place.number)
                self._cond.notify_all()  # the next one may be free to start now
            raise
        self._leave_quietly(place.ticket)

    def _start(self, number: int, until: float) -> bool:
        """True once ``number`` is the lowest waiting here and a slot is free (it then counts as running);
        False when ``until`` passes first."""
        with self._cond:
            while not (self._running < self.slots and self._order[0] == number):
                left = until - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self._order.pop(0)
            self._running += 1
            return True

    def _refuse(self, place: Place, visit: Optional[Visit], called: bool, gone: bool = False,
                message: str = BUSY) -> NoReturn:
        """``Busy``: the place kept for a client that asked for one, else given up."""
        with self._cond:
            self.refused += 1
        if visit is None or gone:
            if not gone:
                self._leave_quietly(place.ticket)
            raise Busy(message, self._wait_s(place.ahead))
        retry_in = self._job_poll_s() if called else self._poll_s(place)
        self.line.hold(place.ticket, retry_in + self.grace, inside=False)
        raise Busy(message, max(1, math.ceil(retry_in)), self.line_info(place, retry_in, called))

    # estimates --------------------------------------------------------------------------------------------

    def _called(self, place: Place) -> bool:
        """Its turn: every place ahead is inside a worker, and fewer wait inside than the workers sharing
        the line have room for (a request that lands on a full one is told to come again at once)."""
        return place.outside_ahead == 0 and place.waiting < max(1, self.queue) * self._sharing()

    def _sharing(self) -> int:
        """How many processes share the line (this one counted in every ``CHECKIN_S``)."""
        if time.monotonic() - self._checked_in >= CHECKIN_S:
            self._checked_in = time.monotonic()
            try:
                self._workers = max(1, self.line.checkin(self._id, 3 * CHECKIN_S))
            except StoreUnavailable as exc:
                log.warning("could not count the workers sharing the line: %s", exc.message)
        return self._workers

    def _idle(self) -> bool:
        with self._cond:
            return self._running < self.slots and not self._order

    def _poll_s(self, place: Place) -> float:
        """When a place that is not called should ask again: half the time those ahead of it outside
        will likely take to get in, within ``POLL_S``."""
        expected = (place.outside_ahead + 1) * self._job_s / self.slots
        return min(POLL_S[1], max(POLL_S[0], expected / 2))

    def _job_poll_s(self) -> float:
        """When a called place that found no room should come back: about when a running job ends."""
        return min(POLL_S[1], max(POLL_S[0], self._job_s / 2))

    def _wait_s(self, ahead: int) -> int:
        """Retry-After for a client without a place: the jobs ahead times a typical job's duration."""
        return max(1, math.ceil(self._job_s * (ahead + 1) / self.slots))

    # the line's failures never fail a request that already has its slot or its answer --------------------

    def _leave_quietly(self, ticket: str) -> None:
        try:
            self.line.leave(ticket)
        except StoreUnavailable as exc:  # the place expires by itself
            log.warning("could not give up a place in line: %s", exc.message)

    def _hold_quietly(self, ticket: str, hold_s: float, inside: Optional[bool]) -> None:
        try:
            self.line.hold(ticket, hold_s, inside)
        except StoreUnavailable as exc:  # inside places hold up nobody: waiting goes on
            log.warning("could not keep a place in line: %s", exc.message)

    def stats(self) -> Dict[str, Any]:
        with self._cond:
            out: Dict[str, Any] = {"slots": self.slots, "queue": self.queue, "busy": self._running,
                                   "waiting": len(self._order), "refused": self.refused}
        try:
            out["line"] = self.line.stats()
        except StoreUnavailable as exc:
            out["line"] = {"backend": self.line.kind, "error": exc.message}
        return out
