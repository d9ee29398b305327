"""The line under load, against real servers.

A fair line: 20 page clients (the page's protocol, ``page_client.py``) arrive over 2 s at workers of one
inference slot each: one worker, two workers of a host (the line in the data folder), and two servers on
one Redis (the line in Redis, as two hosts have it). Every client gets its depth map, in arrival order:
nobody waits longer than the requests ahead of it × one request's time + 2 s, and p95 of the waits stays
within 2 × p50 (plus one request's time: the machine these tests run on is shared, and a run's later
requests can be slower than its first). With one worker nobody is overtaken by more than one request's
time; across workers, a request already waiting inside one worker can be passed by a later one that found
another worker's slot free (see docs/self-hosting.md, "Overload").

Nobody turned away under a minute of load: ``depthmap serve --workers 2`` with the default gate, 20
page-like clients and a few API-like clients (no retry, no place) uploading sample photos for 60 s. Every
page ends every photo with its depth map, no error; the API clients see only 200 and 503 + Retry-After.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import redis
import requests

from app.serving.line import RedisLine
from bench_line import Arrival, burst, summary, workload
from load_test import drive_mixed
from support.servers import running_server

PAGES, APIS, SECONDS = 20, 3, 60
CLIENTS, OVER_S = 20, 2.0
MIN_REQUEST_S = 0.25  # a request holds its slot this long at least, so that a line forms


@contextlib.contextmanager
def servers(weights: Path, folder: Path, setup: str, redis_url: str) -> Iterator[List[str]]:
    """The servers of a set-up, one inference slot per worker; their URLs."""
    env: Dict[str, str] = {"DEPTHMAP_INFERENCE_SLOTS": "1", "DEPTHMAP_TORCH_THREADS": "1"}
    with contextlib.ExitStack() as stack:
        if setup == "one worker":
            env["DEPTHMAP_TORCH_THREADS"] = "2"
            urls = [stack.enter_context(running_server(weights, folder / "server.log", env=env))[0]]
        elif setup == "two workers":
            urls = [stack.enter_context(running_server(weights, folder / "server.log", "--workers", "2",
                                                       env=env))[0]]
        else:
            client = redis.Redis.from_url(redis_url)
            keys = [RedisLine.PREFIX + k for k in ("seq", "places", "expires", "inside", "workers")]
            client.delete(*keys)
            stack.callback(client.delete, *keys)  # other tests' servers share this Redis
            urls = []
            for n in range(2):
                (folder / f"s{n}").mkdir()
                log = folder / f"s{n}" / "server.log"
                urls.append(stack.enter_context(running_server(
                    weights, log, env={**env, "DEPTHMAP_REDIS_URL": redis_url}))[0])
        yield urls


@pytest.mark.parametrize("setup", ["one worker", "two workers", "two servers on one Redis"])
def test_twenty_pages_arriving_at_once_are_served_in_order(weights_path: Path, tmp_path: Path, redis_server,
                                                           setup: str) -> None:
    with servers(weights_path, tmp_path, setup, redis_server.url) as urls:
        _, size, photo = workload(urls, MIN_REQUEST_S)
        arrivals = burst(urls, CLIENTS, OVER_S, photo, "line", {"size": size})
        healths = [requests.get(url + "/healthz", timeout=10).json() for url in urls]
    figures = summary(arrivals)
    told = f"{figures}\n{table(arrivals)}"
    assert figures["ok"] == CLIENTS, told
    assert max(max(a.aheads, default=0) for a in arrivals) >= 5, told  # a real line formed
    if setup == "one worker":  # across workers, one that found a slot free may pass one waiting inside
        assert figures["overtaken"] == 0, told
    assert figures["margin"] <= 0, told
    assert figures["p95"] <= 2 * figures["p50"] + figures["t"], told
    for health in healths:  # every place was used or given up
        assert health["gate"]["line"]["places"] == 0 and health["gate"]["busy"] == 0
    assert all("Traceback" not in p.read_text() for p in tmp_path.rglob("server.log"))


def table(arrivals: List[Arrival]) -> str:
    return "\n".join(f"{a.client:>3} sent {a.sent:5.2f} done {a.done:6.2f} server {a.service_s:5.2f} s, "
                     f"told {a.aheads}" for a in sorted(arrivals, key=lambda a: a.sent))


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
    # they did wait in line: the server kept places for them (this is not a light load)
    assert pages.statuses["503"] > 0 and pages.statuses["poll 200"] > 0, pages.statuses
    assert set(pages.statuses) <= {"200", "503", "page visit", "poll 200", "poll 404"}, pages.statuses

    # the API clients: only 200 (three views checked) and 503 with Retry-After, nothing else; they hold
    # no place, so while pages wait in line they are mostly turned away (docs/self-hosting.md, "Overload")
    assert set(api.statuses) <= {"200", "503"} and sum(api.statuses.values()) > 0, api.statuses
    assert not api.errors, api.errors

    assert wall < SECONDS + 120  # a page's last photo is finished, not abandoned, and it does not hang
    assert health["store"]["backend"] == "files" and health["gate"]["line"]["backend"] == "files"
    assert "Traceback" not in log
