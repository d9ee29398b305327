"""Nobody turned away under a minute of load: a real ``depthmap serve --workers 2`` with the default gate
(one depth map at a time per worker, two waiting), 20 page-like clients (static/queue.js: a 503 with
Retry-After is a line to wait in, then the page goes on by itself) and a few API-like clients (no
retry) uploading sample photos for 60 s. Every page ends every photo with its depth map, no error; the
API clients see only 200 and 503 + Retry-After. The photos are small: this is about the queue, not the
CPU."""

from __future__ import annotations

from pathlib import Path

import requests

from helpers import running_server
from load_test import drive_mixed

PAGES, APIS, SECONDS = 20, 3, 60


def test_twenty_pages_and_api_clients_for_a_minute_on_two_workers(weights_path: Path, tmp_path: Path) -> None:
    with running_server(weights_path, tmp_path / "server.log", "--workers", "2", "--threads", "4",
                        env={"DEPTHMAP_TORCH_THREADS": "1"}) as (url, _):
        api, pages, wall = drive_mixed([url], APIS, PAGES, SECONDS, max_side=320)
        health = requests.get(url + "/healthz", timeout=10).json()
        log = (tmp_path / "server.log").read_text()

    # the pages: each of the 20 showed depth maps, every visit ended with its depth map, none an error
    assert not pages.errors, pages.errors
    assert sorted(pages.shown) == list(range(PAGES)), pages.shown
    assert pages.statuses["page visit"] == sum(pages.shown.values())
    # they did wait in line: the queue was full and the server said so (this is not a light load)
    assert pages.statuses["503"] > 0, pages.statuses
    assert set(pages.statuses) == {"200", "503", "page visit"}, pages.statuses

    # the API clients: only 200 (three views checked) and 503 with Retry-After, nothing else
    assert set(api.statuses) <= {"200", "503"} and api.statuses["200"] > 0, api.statuses
    assert not api.errors, api.errors

    assert wall < SECONDS + 120  # a page's last photo is finished, not abandoned, and it does not hang
    assert health["store"]["backend"] == "files"
    assert "Traceback" not in log
