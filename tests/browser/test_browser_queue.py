"""Waiting in line in a real headless Chromium, against a server whose gate admits one depth map and
queues none inside.

Nobody turned away by a short burst: kept busy by API clients, three pages uploading at the same time
each wait in line (static/queue.js: the status says so) and end with their depth map shown and no error;
the API clients see only 200 and 503 + Retry-After. The place counts down: a page that comes behind
other clients in line shows how many are ahead of it, fewer and fewer, and then its depth map."""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections import Counter
from typing import Iterator, List, Tuple

import numpy as np
import pytest
import requests
from PIL import Image

import page_client
from support.browser import make_driver, skip_without_browser, upload, wait_settled
from support.samples import SAMPLES
from support.servers import running_server

skip_without_browser()

from selenium.webdriver.common.by import By  # noqa: E402

# every text the status line shows, kept in the page for the test to read
RECORD_STATUS = """
window.seenStatus = [];
new MutationObserver(() => window.seenStatus.push(document.getElementById('status').textContent))
  .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true});
"""


@pytest.fixture(scope="module")
def tiny_gate_server(weights_path, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("queue") / "server.log"
    with running_server(weights_path, log, env={"DEPTHMAP_INFERENCE_SLOTS": "1",
                                                "DEPTHMAP_INFERENCE_QUEUE": "0"}) as (url, _):
        yield url


def big_photo() -> bytes:
    """A 3000 × 2000 JPEG: its decode and upsampling hold the one slot for a while."""
    y, x = np.mgrid[0:2000, 0:3000]
    rgb = np.stack([(x // 12) % 256, (y // 8) % 256, ((x + y) // 16) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def hammer(url: str, stop: threading.Event, seen: Counter, photo: bytes) -> None:
    """An API client sending unique uploads (a real inference each) as fast as it is let in."""
    while not stop.is_set():
        r = requests.post(url + "/api/v1/depth", files={"image": ("big.jpg", photo + os.urandom(8))},
                          data={"views": "none"}, timeout=120)
        busy = r.status_code == 503 and r.json()["error"] == "busy" and int(r.headers["Retry-After"]) >= 1
        seen[r.status_code if r.status_code == 200 or busy else f"{r.status_code} {r.text[:80]}"] += 1


def tab_states(driver, tabs) -> Tuple[list, list]:
    statuses, errors = [], []
    for handle in tabs:
        driver.switch_to.window(handle)
        statuses.append(driver.execute_script("return window.seenStatus"))
        errors.append(driver.find_element(By.ID, "error").text)
    return statuses, errors


def test_pages_wait_in_line_and_all_end_with_their_depth_map(tiny_gate_server) -> None:
    url = tiny_gate_server
    driver = make_driver()
    stop, seen, photo = threading.Event(), Counter(), big_photo()
    clients = [threading.Thread(target=hammer, args=(url, stop, seen, photo)) for _ in range(2)]
    try:
        tabs = []
        for i in range(3):
            if i:
                driver.switch_to.new_window("tab")
            driver.get(url + "/")
            driver.execute_script(RECORD_STATUS)
            tabs.append(driver.current_window_handle)
        for c in clients:
            c.start()
        time.sleep(1)  # the API clients hold the slot
        for handle, name in zip(tabs, ("chelsea", "rocket", "coffee"), strict=True):
            driver.switch_to.window(handle)
            upload(driver, SAMPLES[name])
        # every page is told it waits in line; then the burst ends and they go on by themselves
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses, _ = tab_states(driver, tabs)
            if all(any(s.startswith("Waiting in line") for s in st) for st in statuses):
                break
            time.sleep(0.5)
        stop.set()
        for c in clients:
            c.join(120)
        for handle in tabs:
            driver.switch_to.window(handle)
            wait_settled(driver, 120)
            assert driver.find_element(By.ID, "results").is_displayed()
            assert driver.execute_script("return document.querySelector('#grid figure img').naturalWidth") > 0
        statuses, errors = tab_states(driver, tabs)
        assert errors == ["", "", ""]
        waited = [any(s.startswith("Waiting in line") for s in st) for st in statuses]
        assert any(waited), statuses  # the line was really waited in, not slipped past
        assert set(seen) <= {200, 503} and seen[200] > 0, seen
        refused = requests.get(url + "/healthz", timeout=10).json()["gate"]["refused"]
        assert refused >= seen[503] + sum(waited)
        csp = [e for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not csp
    finally:
        stop.set()
        driver.quit()


def test_the_page_shows_its_place_counting_down(tiny_gate_server, tmp_path) -> None:
    url, photo = tiny_gate_server, big_photo()
    mine = tmp_path / "mine.jpg"  # a photo the server has not seen: it needs a slot
    mine.write_bytes(SAMPLES["rocket"].read_bytes() + os.urandom(16))
    ahead = 6
    done: List[int] = []

    def page_like(i: int) -> None:  # other visitors, waiting the page's way
        with requests.Session() as session:
            trip = page_client.send(session, url, "/api/v1/depth",
                                    files={"image": ("b.jpg", photo + os.urandom(8))},
                                    data={"views": "none", "size": "512"})
            done.append(trip.response.status_code)

    driver = make_driver()
    others = [threading.Thread(target=page_like, args=(i,), daemon=True) for i in range(ahead + 1)]
    try:
        driver.get(url + "/")
        driver.execute_script(RECORD_STATUS)
        for t in others:
            t.start()
        deadline = time.monotonic() + 60  # one runs, the others hold their places
        while requests.get(url + "/healthz", timeout=10).json()["gate"]["line"]["places"] < ahead:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        upload(driver, mine)
        wait_settled(driver, 180)
        seen = driver.execute_script("return window.seenStatus")
        counts = [int(m.group(1)) for s in seen for m in [re.match(r"Waiting in line: (\d+) ahead", s)] if m]
        assert counts and counts[0] >= ahead - 1, seen
        assert counts == sorted(counts, reverse=True), seen  # it only ever counts down
        assert len(set(counts)) >= 3, seen
        assert driver.find_element(By.ID, "error").text == ""
        assert driver.execute_script("return document.querySelector('#grid figure img').naturalWidth") > 0
    finally:
        for t in others:  # before the server stops: a thread's failure would be reported on its own
            if t.is_alive():
                t.join(120)
        driver.quit()
    assert done == [200] * (ahead + 1)
