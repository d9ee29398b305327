"""Admission control: a bounded number of depth maps at once, a bounded queue inside the process, and the
line that decides who gets in, first come, first served, across the workers of a host (two gates on one
SQLite file) and across hosts (a real Redis). Places are client input: forged, expired, replayed or
borrowed tickets get a new place at the back, never a jump ahead and never a 500."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Union

import pytest
import redis

from app.serving.gate import Busy, Gate
from app.serving.line import RedisLine, SqliteLine, new_ticket
from support.forms import form_data
from support.holds import hold

KEYS = [RedisLine.PREFIX + k for k in ("seq", "places", "expires", "inside", "workers")]


def request(gate: Gate, header: Optional[str] = None, body=None) -> Union[str, Busy]:
    """``gate.slot()`` as a request with that ticket header (None: without it): "ran", or the ``Busy``."""
    token = gate.begin_visit(header)
    try:
        with gate.slot():
            if body:
                body()
        return "ran"
    except Busy as exc:
        return exc
    finally:
        gate.end_visit(token)


def wait_for(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_beyond_slots_and_queue_is_refused_at_once() -> None:
    gate = Gate(slots=1, queue=1, timeout=10)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    waiter_done = threading.Event()

    def wait_in_queue() -> None:
        with gate.slot():
            waiter_done.set()
    waiter = threading.Thread(target=wait_in_queue, daemon=True)
    waiter.start()
    wait_for(lambda: gate.stats()["waiting"] == 1)
    assert gate.stats() == {"slots": 1, "queue": 1, "busy": 1, "waiting": 1, "refused": 0,
                            "line": {"backend": "memory", "places": 1, "inside": 1}}
    t0 = time.monotonic()
    with pytest.raises(Busy) as exc:
        with gate.slot():
            pass
    assert time.monotonic() - t0 < 0.5 and exc.value.retry_after >= 1 and exc.value.line is None
    release.set()
    holder.join(5), waiter.join(5)
    assert waiter_done.is_set()  # the queued one ran once the slot was free
    assert gate.stats() == {"slots": 1, "queue": 1, "busy": 0, "waiting": 0, "refused": 1,
                            "line": {"backend": "memory", "places": 0, "inside": 0}}


def test_a_wait_longer_than_the_timeout_is_refused() -> None:
    gate = Gate(slots=1, queue=4, timeout=0.2)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    t0 = time.monotonic()
    with pytest.raises(Busy, match="within 0.2 s"):
        with gate.slot():
            pass
    assert 0.15 < time.monotonic() - t0 < 2
    release.set()
    holder.join(5)
    with gate.slot():  # free again
        pass


def test_an_error_in_the_job_frees_its_slot() -> None:
    gate = Gate(slots=1, queue=0)
    with pytest.raises(ValueError):
        with gate.slot():
            raise ValueError("boom")
    with gate.slot():
        pass
    assert gate.stats()["line"]["places"] == 0


@pytest.mark.parametrize("slots, queue, timeout", [(0, 1, 1), (1, -1, 1), (1, 1, 0)])
def test_nonsense_settings_are_refused(slots, queue, timeout) -> None:
    with pytest.raises(ValueError):
        Gate(slots, queue, timeout)


def test_waiting_requests_start_in_the_order_they_came() -> None:
    gate = Gate(slots=1, queue=8, timeout=30)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    started: List[int] = []
    threads = []
    for i in range(6):
        t = threading.Thread(target=request, args=(gate, None, lambda i=i: started.append(i)), daemon=True)
        t.start()
        threads.append(t)
        wait_for(lambda i=i: gate.stats()["waiting"] == i + 1)
    release.set()
    for t in threads + [holder]:
        t.join(10)
    assert started == list(range(6))


# two workers of a host (one SQLite file), or two hosts (one Redis) --------------------------------------

@pytest.fixture(params=["files", "redis"])
def shared_lines(request, tmp_path: Path) -> Iterator[tuple]:
    """Two views of one line, as two workers (or hosts) have."""
    if request.param == "files":
        yield SqliteLine(tmp_path / "line.sqlite3"), SqliteLine(tmp_path / "line.sqlite3")
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_server").url)
    client.delete(*KEYS)
    yield RedisLine(client), RedisLine(client)
    client.delete(*KEYS)


def test_no_request_jumps_a_place_kept_on_another_worker(shared_lines) -> None:
    one = Gate(slots=1, queue=0, timeout=5, line=shared_lines[0])
    two = Gate(slots=1, queue=0, timeout=5, line=shared_lines[1])
    release, entered = threading.Event(), threading.Event()
    holder = hold(one, release, entered)
    kept = request(one, "new")  # a page, refused: its place is kept
    assert isinstance(kept, Busy) and kept.line["place"] == 1 and kept.line["called"]
    # worker two is free, but the page is ahead: a client without a place may not jump it, and one
    # that asks for a place gets the one behind it
    plain = request(two)
    assert isinstance(plain, Busy) and plain.line is None and plain.retry_after >= 1
    behind = request(two, "new")
    assert isinstance(behind, Busy) and behind.line["place"] == 2 and not behind.line["called"]
    assert two.status(behind.line["ticket"])["ahead"] == 1
    # the page comes back with its ticket, to the other worker: it runs, and the one behind moves up
    assert request(two, kept.line["ticket"]) == "ran"
    moved = two.status(behind.line["ticket"])
    assert moved["ahead"] == 0 and moved["place"] == 1 and moved["called"]
    assert request(two, behind.line["ticket"]) == "ran"
    release.set()
    holder.join(5)
    assert one.stats()["line"]["places"] == 0


def test_places_count_down_as_those_ahead_are_served() -> None:
    gate = Gate(slots=1, queue=0, timeout=5)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    tickets = [request(gate, "new").line["ticket"] for _ in range(4)]
    assert [gate.status(t)["ahead"] for t in tickets] == [0, 1, 2, 3]
    release.set()
    holder.join(5)
    seen = []
    for ticket in tickets:
        seen.append(gate.status(tickets[-1])["ahead"])
        assert request(gate, ticket) == "ran"
    assert seen == [3, 2, 1, 0]
    assert gate.status(tickets[-1]) is None  # used: gone


def test_a_place_nobody_comes_back_for_holds_the_line_up_only_briefly() -> None:
    gate = Gate(slots=1, queue=0, timeout=5, grace=0.3)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    abandoned = request(gate, "new")
    assert isinstance(abandoned, Busy) and abandoned.line["retry_in"] <= 2
    release.set()
    holder.join(5)
    assert isinstance(request(gate), Busy)  # the page's place is still ahead
    t0 = time.monotonic()
    while request(gate) != "ran":
        assert time.monotonic() - t0 < abandoned.line["retry_in"] + 0.3 + 2
        time.sleep(0.05)
    assert gate.status(abandoned.line["ticket"]) is None


@pytest.mark.parametrize("shown", ["forged", "used", "borrowed", "not hex", "x" * 200, "", "NEW", "../1"])
def test_a_ticket_that_is_not_a_live_place_gets_a_new_place_at_the_back(shown: str) -> None:
    gate = Gate(slots=1, queue=1, timeout=5)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    inside = threading.Thread(target=request, args=(gate,), daemon=True)  # fills the queue
    inside.start()
    wait_for(lambda: gate.stats()["waiting"] == 1)
    ahead = [request(gate, "new") for _ in range(2)]
    assert [b.line["place"] for b in ahead] == [2, 3]  # behind the one inside
    used = request(gate, "new").line["ticket"]
    gate.line.leave(used)  # as if served
    borrowed = gate.line.join(10, 100)  # a place whose request is inside already
    gate.line.hold(borrowed.ticket, 10, inside=True)
    ticket = {"forged": new_ticket(), "used": used, "borrowed": borrowed.ticket}.get(shown, shown)
    answer = request(gate, ticket)
    assert isinstance(answer, Busy) and answer.line["ticket"] != ticket
    assert answer.line["place"] == gate.stats()["line"]["places"]  # the back
    release.set()
    holder.join(5), inside.join(5)


def test_a_full_line_refuses_without_a_place() -> None:
    gate = Gate(slots=1, queue=0, timeout=5, length=2)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    assert all(isinstance(request(gate, "new"), Busy) for _ in range(2))
    full = request(gate, "new")
    assert isinstance(full, Busy) and full.line is None and "2 requests" in full.message
    release.set()
    holder.join(5)


# over HTTP (the app, through Flask's test client) ---------------------------------------------------------

@dataclass
class Full:
    """The app's gate, its one slot held by another request until ``release`` is set."""

    gate: Gate
    release: threading.Event


@pytest.fixture()
def full_gate(app, monkeypatch) -> Iterator[Full]:
    with gate_held(app, monkeypatch) as full:
        yield full


@contextlib.contextmanager
def gate_held(app, monkeypatch) -> Iterator[Full]:
    """The app's gate replaced by one with no queue, its one slot held by another request."""
    gate = Gate(slots=1, queue=0, timeout=5)
    monkeypatch.setattr(app.extensions["depth_service"], "gate", gate)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    try:
        yield Full(gate, release)
    finally:
        release.set()
        holder.join(5)


def fresh(data: bytes) -> bytes:
    """The same image under a new cache key (trailing bytes), so it needs a slot."""
    return data + os.urandom(16)


def test_api_answers_503_with_retry_after_when_full(client, full_gate, samples) -> None:
    r = client.post("/api/v1/depth", **form_data({"image": (fresh(samples["rocket"]), "r.jpg")}))
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert r.get_json()["error"] == "busy" and "try again" in r.get_json()["message"]
    assert "line" not in r.get_json()  # no place for a client that did not ask for one
    assert client.get("/healthz").get_json()["gate"]["refused"] == 1


def test_a_client_that_asks_waits_in_line_by_its_ticket(client, full_gate, samples) -> None:
    photo = fresh(samples["rocket"])
    r = client.post("/api/v1/depth", headers={"X-Line-Ticket": "new"},
                    **form_data({"image": (photo, "r.jpg")}))
    body = r.get_json()
    assert r.status_code == 503 and body["error"] == "busy" and int(r.headers["Retry-After"]) >= 1
    line = body["line"]
    assert set(line) == {"ticket", "place", "ahead", "called", "retry_in"} and line["place"] == 1
    polled = client.get(f"/api/v1/line/{line['ticket']}")
    assert polled.status_code == 200 and polled.headers["Cache-Control"] == "no-store"
    assert polled.get_json()["ahead"] == 0 and polled.get_json()["ticket"] == line["ticket"]
    # an API client without a place is turned away while the page's place is first
    full_gate.release.set()
    wait_for(lambda: full_gate.gate.stats()["busy"] == 0)
    assert client.post("/api/v1/depth", **form_data({"image": (fresh(photo), "r.jpg")})).status_code == 503
    served = client.post("/api/v1/depth", headers={"X-Line-Ticket": line["ticket"]},
                         **form_data({"image": (photo, "r.jpg"), "views": "none"}))
    assert served.status_code == 200
    gone = client.get(f"/api/v1/line/{line['ticket']}")  # used: a replay gets nothing
    assert gone.status_code == 404 and gone.get_json()["error"] == "not_in_line"


@pytest.mark.parametrize("ticket", ["0" * 32, "zz", "x" * 300, "%00", "..%2F..%2Fetc"])
def test_asking_about_a_place_that_does_not_exist_is_a_404(client, ticket: str) -> None:
    r = client.get(f"/api/v1/line/{ticket}")
    # a path of more than one segment is no place's address at all
    expected = "not_found" if "%2F" in ticket else "not_in_line"
    assert r.status_code == 404 and r.get_json()["error"] == expected


def test_a_cached_answer_gives_its_place_up(client, app, samples, monkeypatch) -> None:
    first = client.post("/api/v1/depth", **form_data({"image": (samples["coffee"], "c.jpg")}))
    assert first.status_code == 200
    with gate_held(app, monkeypatch) as full:
        refused = client.post("/api/v1/depth", headers={"X-Line-Ticket": "new"},
                              **form_data({"image": (fresh(samples["coffee"]), "c.jpg")}))
        ticket = refused.get_json()["line"]["ticket"]
        # the request with the ticket is answered from the store: at once, and its place is given up
        stored = client.post("/api/v1/render", headers={"X-Line-Ticket": ticket},
                             json={"depth_id": first.get_json()["depth_id"], "views": "none"})
        assert stored.status_code == 200 and stored.get_json()["cached"]
        assert client.get(f"/api/v1/line/{ticket}").status_code == 404
        assert full.gate.stats()["line"]["places"] == 0


@pytest.mark.parametrize("header", ["new", "x" * 4000, "\u00e9\u00e8", "0" * 32, " new ", "null"])
def test_any_ticket_header_is_a_place_or_a_new_one_never_an_error(client, full_gate, samples, header) -> None:
    r = client.post("/api/v1/depth", headers={"X-Line-Ticket": header},
                    **form_data({"image": (fresh(samples["rocket"]), "r.jpg")}))
    assert r.status_code == 503 and r.get_json()["line"]["place"] >= 1


def test_page_shows_busy_next_to_the_form(client, full_gate, samples) -> None:
    r = client.post("/", **form_data({"image": (fresh(samples["rocket"]), "r.jpg")}))
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert b"busy" in r.data and b"<form" in r.data


def test_cached_results_are_served_even_when_full(client, app, samples, monkeypatch) -> None:
    first = client.post("/api/v1/depth", **form_data({"image": (samples["chelsea"], "c.png")}))
    assert first.status_code == 200
    with gate_held(app, monkeypatch):
        again = client.post("/api/v1/depth", headers={"X-Owner-Token": first.get_json()["owner_token"]},
                            **form_data({"image": (samples["chelsea"], "c.png")}))
        view = client.get(f"/api/v1/depth/{first.get_json()['depth_id']}/heatmap.png?colormap=jet")
        assert again.status_code == 200 and view.status_code == 200
