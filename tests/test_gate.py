"""Admission control: a bounded number of depth maps at once, a bounded queue, 503 + Retry-After beyond."""

from __future__ import annotations

import os
import threading
import time

import pytest

from app.gate import Busy, Gate
from helpers import form_data


def hold(gate: Gate, release: threading.Event, entered: threading.Event) -> threading.Thread:
    def run() -> None:
        with gate.slot():
            entered.set()
            release.wait(10)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert entered.wait(5)
    return t


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
    deadline = time.monotonic() + 5
    while gate.stats()["waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.stats() == {"slots": 1, "queue": 1, "busy": 1, "waiting": 1, "refused": 0}
    t0 = time.monotonic()
    with pytest.raises(Busy) as exc:
        with gate.slot():
            pass
    assert time.monotonic() - t0 < 0.5 and exc.value.retry_after >= 1
    release.set()
    holder.join(5), waiter.join(5)
    assert waiter_done.is_set()  # the queued one ran once the slot was free
    assert gate.stats() == {"slots": 1, "queue": 1, "busy": 0, "waiting": 0, "refused": 1}


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


@pytest.mark.parametrize("slots, queue, timeout", [(0, 1, 1), (1, -1, 1), (1, 1, 0)])
def test_nonsense_settings_are_refused(slots, queue, timeout) -> None:
    with pytest.raises(ValueError):
        Gate(slots, queue, timeout)


@pytest.fixture()
def full_gate(app, monkeypatch):
    """The app's gate replaced by one with no queue, its one slot held by another request."""
    gate = Gate(slots=1, queue=0, timeout=5)
    monkeypatch.setattr(app.extensions["depth_service"], "gate", gate)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    yield gate
    release.set()
    holder.join(5)


def fresh(data: bytes) -> bytes:
    """The same image under a new cache key (trailing bytes), so it needs a slot."""
    return data + os.urandom(16)


def test_api_answers_503_with_retry_after_when_full(client, full_gate, samples) -> None:
    r = client.post("/api/v1/depth", **form_data({"image": (fresh(samples["rocket"]), "r.jpg")}))
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert r.get_json()["error"] == "busy" and "try again" in r.get_json()["message"]
    assert client.get("/healthz").get_json()["gate"]["refused"] == 1


def test_page_shows_busy_next_to_the_form(client, full_gate, samples) -> None:
    r = client.post("/", **form_data({"image": (fresh(samples["rocket"]), "r.jpg")}))
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert b"busy" in r.data and b"<form" in r.data


def test_cached_results_are_served_even_when_full(client, app, samples, monkeypatch) -> None:
    first = client.post("/api/v1/depth", **form_data({"image": (samples["chelsea"], "c.png")}))
    assert first.status_code == 200
    gate = Gate(slots=1, queue=0, timeout=5)
    monkeypatch.setattr(app.extensions["depth_service"], "gate", gate)
    release, entered = threading.Event(), threading.Event()
    holder = hold(gate, release, entered)
    try:
        again = client.post("/api/v1/depth", headers={"X-Owner-Token": first.get_json()["owner_token"]},
                            **form_data({"image": (samples["chelsea"], "c.png")}))
        view = client.get(f"/api/v1/depth/{first.get_json()['depth_id']}/heatmap.png?colormap=jet")
        assert again.status_code == 200 and view.status_code == 200
    finally:
        release.set()
        holder.join(5)
