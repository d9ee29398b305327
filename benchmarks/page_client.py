"""How the studio page sends a request that may meet a busy server, for the load test, the line benchmark
and the tests; each protocol mirrors a version of ``static/queue.js``:

- ``line`` (today's page): the request asks for a place (``X-Line-Ticket: new``); a 503 with ``line``
  holds its place; the client asks ``GET /api/v1/line/<ticket>`` (no upload) every ``retry_in`` seconds
  until it is ``called``, then sends the request again with its ticket. A 503 without a place (the line
  is full, the store is down) is waited out as ``jitter`` does.
- ``jitter`` (the page before the line): on 503 it waits Retry-After plus up to 25 % random jitter and
  sends the request again; whoever comes back first wins.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import requests

HEADER = "X-Line-Ticket"
JITTER, MAX_WAIT_S, MIN_PAUSE_S = 0.25, 600, 0.25  # as in static/queue.js
PROTOCOLS = ("line", "jitter")


@dataclass
class Trip:
    """One request sent the page's way: the last answer, and what the page showed on the way."""

    response: Optional[requests.Response] = None
    # (what, status, seconds) of every answer on the way: what is "send" or "poll"
    answers: List[Tuple[str, int, float]] = field(default_factory=list)
    aheads: List[int] = field(default_factory=list)  # "N ahead of you", each time the page was told


def jitter_wait(retry_after: str, rng: random.Random) -> Optional[float]:
    """What the page waits before sending a refused request again when it has no place: the
    Retry-After seconds (at least 1) plus up to 25 % jitter, rounded up; None when the answer is no
    "come back later"."""
    if not retry_after.isdigit():
        return None
    return float(math.ceil(max(1, int(retry_after)) * (1 + JITTER * rng.random())))


def _json(response: requests.Response) -> Dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _wait_turn(session: requests.Session, base: str, line: Dict[str, Any], trip: Trip,
               sleep: Callable[[float], None], until: float) -> Optional[str]:
    """Waits for the place ``line`` to be called, asking where it stands as often as the server says;
    its ticket then, or None when the place is gone (a new one is asked for)."""
    ticket = line["ticket"]
    sleep(max(MIN_PAUSE_S, float(line["retry_in"])))
    while not line["called"] and time.monotonic() < until:
        t0 = time.perf_counter()
        r = session.get(f"{base}/api/v1/line/{ticket}", timeout=60)
        trip.answers.append(("poll", r.status_code, time.perf_counter() - t0))
        if r.status_code == 404:
            return None
        if r.status_code != 200:  # the store is down for a moment: the place is kept a while
            sleep(float(r.headers.get("Retry-After", "1") or 1))
            continue
        line = r.json()
        trip.aheads.append(line["ahead"])
        if not line["called"]:
            sleep(max(MIN_PAUSE_S, float(line["retry_in"])))
    return ticket


def send(session: requests.Session, base: str, path: str, protocol: str = "line",
         rng: Optional[random.Random] = None, sleep: Callable[[float], None] = time.sleep,
         **kwargs: Any) -> Trip:
    """POSTs ``kwargs`` (``files``, ``data``, ``headers``...) to ``base + path`` the way the page does
    (``protocol``), until an answer other than 503 comes or the page would give up; the trip."""
    rng = rng or random.Random()
    trip, ticket = Trip(), None
    until = time.monotonic() + MAX_WAIT_S
    headers = dict(kwargs.pop("headers", None) or {})
    while True:
        if protocol == "line":
            headers[HEADER] = ticket or "new"
        t0 = time.perf_counter()
        r = session.post(base + path, headers=headers, timeout=120, **kwargs)
        trip.response = r
        trip.answers.append(("send", r.status_code, time.perf_counter() - t0))
        if r.status_code != 503 or time.monotonic() >= until:
            return trip
        line = _json(r).get("line") if protocol == "line" else None
        if not line:
            wait = jitter_wait(r.headers.get("Retry-After", ""), rng)
            if wait is None:
                return trip
            ticket = None
            sleep(wait)
            continue
        trip.aheads.append(line["ahead"])
        ticket = _wait_turn(session, base, line, trip, sleep, until)
