"""The line's places, on each backend: one process (SQLite in memory), a host (a SQLite file in the data
folder, two connections standing for two workers) and every host (a real Redis). Numbers only grow, places
enter in order, abandoned places expire, the line is bounded, and planted or damaged data is dropped
rather than failing a request."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis

from app.serving.line import Line, RedisLine, SqliteLine, new_ticket


KEYS = [RedisLine.PREFIX + k for k in ("seq", "places", "expires", "inside", "workers")]


@pytest.fixture()
def redis_line(redis_server) -> Iterator[RedisLine]:
    """A line of its own in the session's Redis, emptied before and after (other tests' servers use it)."""
    client = redis.Redis.from_url(redis_server.url)
    client.delete(*KEYS)
    yield RedisLine(client)
    client.delete(*KEYS)


@pytest.fixture(params=["memory", "files", "redis"])
def line(request, tmp_path: Path) -> Line:
    if request.param == "memory":
        return SqliteLine()
    if request.param == "files":
        return SqliteLine(tmp_path / "line.sqlite3")
    return request.getfixturevalue("redis_line")


@pytest.fixture(params=["files", "redis"])
def two_workers(request, tmp_path: Path):
    """Two views of one shared line, as two worker processes (or hosts) have."""
    if request.param == "files":
        return SqliteLine(tmp_path / "line.sqlite3"), SqliteLine(tmp_path / "line.sqlite3")
    first = request.getfixturevalue("redis_line")
    return first, RedisLine(redis.Redis.from_url(request.getfixturevalue("redis_server").url))


def test_places_are_numbered_in_order_and_count_down(line: Line) -> None:
    a, b, c = (line.join(10, 100) for _ in range(3))
    assert a.number < b.number < c.number
    assert [p.ahead for p in (a, b, c)] == [0, 1, 2]
    assert len({a.ticket, b.ticket, c.ticket}) == 3 and all(len(p.ticket) == 32 for p in (a, b, c))
    line.leave(a.ticket)
    assert line.find(c.ticket).ahead == 1 and line.find(b.ticket).ahead == 0
    d = line.join(10, 100)
    assert d.number > c.number and d.ahead == 2  # a new place is at the back, never in a freed one
    assert line.stats()["places"] == 3


def test_a_place_enters_only_once_every_place_ahead_has(line: Line) -> None:
    a, b = line.join(10, 100), line.join(10, 100)
    refused = line.enter(b.ticket, 10)
    assert not refused.inside and refused.outside_ahead == 1
    assert line.enter(a.ticket, 10).inside
    entered = line.enter(b.ticket, 10)
    assert entered.inside and entered.ahead == 1 and entered.outside_ahead == 0 and entered.waiting == 2
    c = line.join(10, 100)
    assert line.find(c.ticket).outside_ahead == 0  # both ahead are inside: c may enter next
    assert line.stats() == {"backend": line.kind, "places": 3, "inside": 2}


def test_the_line_holds_at_most_its_limit(line: Line) -> None:
    places = [line.join(10, 3) for _ in range(3)]
    assert all(places) and line.join(10, 3) is None
    line.leave(places[0].ticket)
    assert line.join(10, 3) is not None


def test_an_abandoned_place_expires_and_the_line_moves_on(line: Line) -> None:
    gone, waiting = line.join(0.3, 100), line.join(10, 100)
    assert not line.enter(waiting.ticket, 10).inside
    time.sleep(0.6)
    assert line.find(gone.ticket) is None
    assert line.enter(waiting.ticket, 10).inside and line.find(waiting.ticket).ahead == 0


def test_hold_keeps_a_place_and_can_leave_its_flag_alone(line: Line) -> None:
    a = line.join(0.3, 100)
    assert line.hold(a.ticket, 10, None)
    time.sleep(0.5)
    assert not line.find(a.ticket).inside  # kept, still outside
    line.enter(a.ticket, 10)
    assert line.hold(a.ticket, 10, None) and line.find(a.ticket).inside
    assert line.hold(a.ticket, 10, False) and not line.find(a.ticket).inside


def test_unknown_and_used_tickets_find_nothing(line: Line) -> None:
    assert line.find(new_ticket()) is None
    a = line.join(10, 100)
    line.leave(a.ticket)
    assert line.find(a.ticket) is None and line.enter(a.ticket, 10) is None
    assert not line.hold(a.ticket, 10, False) and line.find(a.ticket) is None


def test_workers_see_one_line(two_workers) -> None:
    first, second = two_workers
    a = first.join(10, 100)
    b = second.join(10, 100)
    assert b.ahead == 1 and b.number > a.number
    assert not second.enter(b.ticket, 10).inside  # a, taken on the other worker, is ahead
    assert first.enter(a.ticket, 10).inside
    assert second.enter(b.ticket, 10).inside


def test_the_workers_sharing_a_line_are_counted_while_they_check_in(two_workers) -> None:
    first, second = two_workers
    assert first.checkin("a", 10) == 1
    assert second.checkin("b", 0.3) == 2 and first.checkin("a", 10) == 2
    time.sleep(0.5)
    assert first.checkin("a", 10) == 1  # b stopped checking in


# what is read back is not trusted ------------------------------------------------------------------------

def test_a_damaged_line_file_starts_again(tmp_path: Path) -> None:
    path = tmp_path / "line.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    assert SqliteLine(path).join(10, 100).ahead == 0


def test_a_line_file_replaced_under_a_worker_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "line.sqlite3"
    first, second = SqliteLine(path), SqliteLine(path)
    first.join(10, 100)
    second.join(10, 100)
    path.write_bytes(b"damaged" * 1000)  # both workers hold the old file open
    assert first.join(10, 100).ahead == 0  # the damaged file is replaced by an empty line...
    assert second.join(10, 100).ahead == 1  # ...which the other worker then uses too


def test_a_planted_table_of_another_shape_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "line.sqlite3"
    with sqlite3.connect(path) as db:  # no types enforced: a number could be any text
        db.execute("CREATE TABLE places (number, ticket, expires, inside)")
        db.execute("INSERT INTO places VALUES ('x', ?, 'never', 'yes')", ("0" * 32,))
    line = SqliteLine(path)
    place = line.join(10, 100)
    assert place.ahead == 0 and line.find("0" * 32) is None


def test_planted_redis_keys_never_fail_a_request(redis_line: RedisLine) -> None:
    line, client = redis_line, redis_line.client
    places, expires = RedisLine.PREFIX + "places", RedisLine.PREFIX + "expires"
    client.set(places, "not a sorted set")
    assert line.join(10, 100).ahead == 0  # the line starts again
    client.set(RedisLine.PREFIX + "seq", "not a number")
    assert line.join(10, 100).ahead == 0
    # a place planted without an expiry, and one that claims to be held for a year, are dropped
    client.zadd(places, {"a" * 32: 0, "b" * 32: 1})
    client.zadd(expires, {"b" * 32: (time.time() + 365 * 86400) * 1000})
    assert line.join(10, 100).ahead == 1  # only the real one before it
    assert line.find("a" * 32) is None and line.find("b" * 32) is None
    # a line planted far beyond its limit is dropped
    client.zadd(places, {f"{i:032x}": i for i in range(500)})
    client.zadd(expires, {f"{i:032x}": (time.time() + 60) * 1000 for i in range(500)})
    assert line.join(10, 100).ahead == 0
    assert line.stats()["places"] == 1
