"""The line for inference slots, shared by every worker of a host (SQLite in the data folder) or every host
(Redis): numbered places, first come, first served.

A place is a random ticket (the client's proof of it: 128 random bits, never a number the client could
pick) with a number from a counter that only grows, an expiry, and a flag saying whether its request is
*inside*: waiting in a worker's small in-memory queue with its upload. Places whose holders do not come
back before their expiry are dropped, so an abandoned place cannot stall the line. The gate
(``app.serving.gate``) decides who may enter; this module only keeps the places, atomically:

- ``join``: a new place at the back, or None when the line already holds ``limit`` places;
- ``find``: a live place by its ticket, with how many places are ahead of it and how many of those are
  not yet inside;
- ``enter``: marks a place inside, but only if every place ahead of it is inside already (so places
  enter the workers in the order of their numbers);
- ``hold``: keeps a place for ``hold_s`` more seconds, inside or not; ``leave``: drops it.

What is read back is not trusted: tickets are checked against their format before any lookup, the SQLite
table is ``STRICT`` (and a damaged file is replaced), and in Redis a key of the wrong type, a counter
that is not a number, an expiry implausibly far ahead or a line far over its limit is dropped, never an
error of the request.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

from .store import FULL_RETRY_S, StoreUnavailable

log = logging.getLogger(__name__)

TICKET = re.compile(r"[0-9a-f]{32}")
MAX_HOLD_S = 3600.0  # no place is ever held longer: an expiry beyond this is planted, not ours
WARN_EVERY_S = 60.0  # a shared line without room is logged at most this often
T = TypeVar("T")


def disk_full(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed for want of room (SQLITE_FULL), not for a lock or a damaged file."""
    return getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc)


def new_ticket() -> str:
    return secrets.token_hex(16)


def valid_ticket(text: Optional[str]) -> Optional[str]:
    """``text`` if it has a ticket's form (32 lowercase hex digits), else None."""
    return text if text is not None and TICKET.fullmatch(text) else None


@dataclass(frozen=True)
class Place:
    """A place in the line as it stands now."""

    ticket: str
    number: int
    ahead: int  # live places ahead of this one
    outside_ahead: int  # of those, the ones whose requests are not yet inside a worker
    inside: bool  # this place's request waits inside a worker
    waiting: int  # places inside a worker, waiting for a slot, in the whole line


class Line(ABC):
    """The places of every worker (and, with Redis, host); see the module's docstring."""

    kind = "abstract"

    @abstractmethod
    def join(self, hold_s: float, limit: int) -> Optional[Place]:
        """A new place at the back, held ``hold_s`` seconds; None when ``limit`` places are taken."""

    @abstractmethod
    def find(self, ticket: str) -> Optional[Place]:
        """The live place of ``ticket``, or None (unknown, expired, used or forged)."""

    @abstractmethod
    def enter(self, ticket: str, hold_s: float) -> Optional[Place]:
        """Marks the place inside (held ``hold_s`` s) if no place ahead of it is outside; the place as it
        then stands (``inside`` says whether it entered), or None if it is gone."""

    @abstractmethod
    def hold(self, ticket: str, hold_s: float, inside: Optional[bool]) -> bool:
        """Keeps the place ``hold_s`` seconds from now, inside or not (None: as it is); False if it is
        gone."""

    @abstractmethod
    def leave(self, ticket: str) -> None:
        """Drops the place (its request is served, or gave up)."""

    @abstractmethod
    def checkin(self, worker: str, hold_s: float) -> int:
        """Counts ``worker`` among those sharing the line for ``hold_s`` seconds; how many do now."""

    @abstractmethod
    def stats(self) -> Dict[str, Any]:
        """The line's figures for /healthz: places, and how many of them wait inside a worker."""


# SQLite: one host (a file in the data folder), or one process (in memory) --------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS places (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket TEXT NOT NULL UNIQUE,
    expires REAL NOT NULL,
    inside INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX IF NOT EXISTS places_expires ON places (expires);
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, expires REAL NOT NULL) STRICT;
"""
PLACE_SQL = """
SELECT p.number, p.inside,
       (SELECT COUNT(*) FROM places q WHERE q.number < p.number),
       (SELECT COUNT(*) FROM places q WHERE q.number < p.number AND q.inside = 0),
       (SELECT COUNT(*) FROM places q WHERE q.inside = 1)
FROM places p WHERE p.ticket = ?
"""


class SqliteLine(Line):
    """The places (and the workers sharing them) in SQLite: ``path`` (a file in the data folder) for
    every worker of a host, or ``None`` for this process alone (in memory). Every operation is one
    ``BEGIN IMMEDIATE`` transaction that first drops the expired places. The file holds nothing worth a
    disk write, so it is never synced; a damaged one is replaced by an empty line, and every process
    follows the file at ``path`` (a replaced file is opened again)."""

    def __init__(self, path: Optional[Path] = None) -> None:
        self.path = path
        self.kind = "files" if path is not None else "memory"
        self._lock = threading.Lock()
        self._db: Optional[sqlite3.Connection] = None
        self._inode: Optional[int] = None  # of the file the connection has open

    def _file_inode(self) -> Optional[int]:
        try:
            return os.stat(self.path).st_ino if self.path is not None else None
        except FileNotFoundError:
            return None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path) if self.path is not None else ":memory:", timeout=5.0,
                             isolation_level=None, check_same_thread=False)
        self._inode = self._file_inode()
        try:
            db.execute("PRAGMA synchronous = OFF")
            db.executescript(SCHEMA)
            # a table of the same name made by someone else could hold values of any type
            strict = db.execute("SELECT COUNT(*) FROM pragma_table_list WHERE name IN ('places', 'workers') "
                                "AND strict = 1").fetchone()
            if strict != (2,):
                raise sqlite3.DatabaseError("the line's tables are not its own")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _run(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        """``fn(db, now)`` in one write transaction, expired places dropped first."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._db is not None and self._file_inode() != self._inode:
                        self._drop_connection()  # another process replaced the file (or it was removed)
                    if self._db is None:
                        self._db = self._connect()
                    db = self._db
                    now = time.time()
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        db.execute("DELETE FROM places WHERE expires < ? OR expires > ?",
                                   (now, now + MAX_HOLD_S))
                        out = fn(db, now)
                        db.execute("COMMIT")
                        return out
                    except BaseException:
                        if db.in_transaction:
                            db.execute("ROLLBACK")
                        raise
                except sqlite3.OperationalError as exc:  # locked past the timeout, a full or gone folder
                    self._drop_connection()
                    if disk_full(exc):  # the same answer as the result store gives for a full disk
                        raise StoreUnavailable("The data folder's disk is full: the line for inference slots "
                                               "cannot keep a place. Please try again later.", FULL_RETRY_S,
                                               full=True) from None
                    if attempt == 2 or self.path is None:
                        raise StoreUnavailable(f"The line for inference slots cannot be used ({exc}). "
                                               "Please try again in a moment.") from None
                except sqlite3.DatabaseError as exc:  # not a database, malformed: the line starts again
                    log.warning("the line's file %s is damaged (%s): it starts again, empty", self.path, exc)
                    damaged = self._inode
                    self._drop_connection()
                    if self.path is not None and damaged is not None and self._file_inode() == damaged:
                        self.path.unlink(missing_ok=True)  # only the file found damaged, not a new one
        raise StoreUnavailable("The line for inference slots cannot be used; please try again in a moment.")

    def _drop_connection(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @staticmethod
    def _place(db: sqlite3.Connection, ticket: str) -> Optional[Place]:
        row = db.execute(PLACE_SQL, (ticket,)).fetchone()
        if row is None:
            return None
        number, inside, ahead, outside_ahead, waiting = row
        return Place(ticket, number, ahead, outside_ahead, bool(inside), waiting)

    def join(self, hold_s: float, limit: int) -> Optional[Place]:
        def join(db: sqlite3.Connection, now: float) -> Optional[Place]:
            if db.execute("SELECT COUNT(*) FROM places").fetchone()[0] >= limit:
                return None
            ticket = new_ticket()
            db.execute("INSERT INTO places (ticket, expires) VALUES (?, ?)", (ticket, now + hold_s))
            return self._place(db, ticket)
        return self._run(join)

    def find(self, ticket: str) -> Optional[Place]:
        return self._run(lambda db, now: self._place(db, ticket))

    def enter(self, ticket: str, hold_s: float) -> Optional[Place]:
        def enter(db: sqlite3.Connection, now: float) -> Optional[Place]:
            place = self._place(db, ticket)
            if place is None or place.outside_ahead:
                return place
            db.execute("UPDATE places SET inside = 1, expires = ? WHERE ticket = ?", (now + hold_s, ticket))
            return self._place(db, ticket)
        return self._run(enter)

    def hold(self, ticket: str, hold_s: float, inside: Optional[bool]) -> bool:
        return self._run(lambda db, now: db.execute(
            "UPDATE places SET inside = COALESCE(?, inside), expires = ? WHERE ticket = ?",
            (None if inside is None else int(inside), now + hold_s, ticket)).rowcount > 0)

    def leave(self, ticket: str) -> None:
        self._run(lambda db, now: db.execute("DELETE FROM places WHERE ticket = ?", (ticket,)))

    def checkin(self, worker: str, hold_s: float) -> int:
        def checkin(db: sqlite3.Connection, now: float) -> int:
            db.execute("DELETE FROM workers WHERE expires < ?", (now,))
            db.execute("INSERT OR REPLACE INTO workers (id, expires) VALUES (?, ?)", (worker, now + hold_s))
            return db.execute("SELECT COUNT(*) FROM workers").fetchone()[0]
        return self._run(checkin)

    def stats(self) -> Dict[str, Any]:
        places, inside = self._run(lambda db, now: db.execute(
            "SELECT COUNT(*), COALESCE(SUM(inside), 0) FROM places").fetchone())
        return {"backend": self.kind, "places": places, "inside": inside}


# Redis: every host -----------------------------------------------------------------------------------------

# KEYS: the counter, places (ticket -> number), expires (ticket -> ms), inside (ticket -> number), workers
# (id -> ms)
# ARGV: operation, ticket, hold in ms, limit, inside flag. Times are the Redis server's, so hosts whose
# clocks differ still agree on who expired.
REDIS_SCRIPT = """
local seq, places, expires, inside, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, ticket, hold, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZCARD', expires) > 4 * limit or redis.call('ZCARD', places) > 4 * limit then
  redis.call('DEL', places, expires, inside)
  return {'reset'}
end
if op == 'checkin' then
  redis.call('ZREMRANGEBYSCORE', workers, '-inf', '(' .. now)
  redis.call('ZADD', workers, now + hold, ticket)
  if redis.call('ZCARD', workers) > 10000 then redis.call('DEL', workers) return {'reset'} end
  return redis.call('ZCARD', workers)
end
local gone = redis.call('ZRANGEBYSCORE', expires, '-inf', '(' .. now)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', expires, '(' .. (now + tonumber(ARGV[6])), '+inf')) do
  table.insert(gone, m)
end
for _, m in ipairs(gone) do
  redis.call('ZREM', places, m)
  redis.call('ZREM', expires, m)
  redis.call('ZREM', inside, m)
end
local count = redis.call('ZCARD', places)
if count ~= redis.call('ZCARD', expires) or redis.call('ZCARD', inside) > count then
  redis.call('ZINTERSTORE', places, 2, places, expires, 'WEIGHTS', 1, 0)
  redis.call('ZINTERSTORE', expires, 2, expires, places, 'WEIGHTS', 1, 0)
  redis.call('ZINTERSTORE', inside, 2, inside, places, 'WEIGHTS', 0, 1)
end
local function place(m)
  local n = redis.call('ZSCORE', places, m)
  if not n then return false end
  local ahead = redis.call('ZCOUNT', places, '-inf', '(' .. n)
  local inside_ahead = redis.call('ZCOUNT', inside, '-inf', '(' .. n)
  local is_inside = redis.call('ZSCORE', inside, m) and 1 or 0
  return {'place', m, tonumber(n), ahead, ahead - inside_ahead, is_inside, redis.call('ZCARD', inside)}
end
if op == 'join' then
  if redis.call('ZCARD', places) >= limit then return {'full'} end
  local n = redis.call('INCR', seq)
  redis.call('ZADD', places, n, ticket)
  redis.call('ZADD', expires, now + hold, ticket)
  return place(ticket)
elseif op == 'find' then
  return place(ticket)
elseif op == 'enter' then
  local p = place(ticket)
  if p and p[5] == 0 then
    redis.call('ZADD', inside, p[3], ticket)
    redis.call('ZADD', expires, now + hold, ticket)
    return place(ticket)
  end
  return p
elseif op == 'hold' then
  local n = redis.call('ZSCORE', places, ticket)
  if not n then return 0 end
  redis.call('ZADD', expires, now + hold, ticket)
  if ARGV[5] == '1' then redis.call('ZADD', inside, n, ticket)
  elseif ARGV[5] == '0' then redis.call('ZREM', inside, ticket) end
  return 1
elseif op == 'leave' then
  redis.call('ZREM', places, ticket)
  redis.call('ZREM', expires, ticket)
  redis.call('ZREM', inside, ticket)
  return 1
end
return {'stats', redis.call('ZCARD', places), redis.call('ZCARD', inside)}
"""


class RedisLine(Line):
    """The places in three sorted sets and a counter under ``depthmap:line:``, changed only by one Lua
    script (atomic on the Redis server). Its keys have no TTL: they are a few kilobytes at most (the
    line's limit), and ``volatile-lru`` must never push the line out."""

    kind = "redis"
    PREFIX = "depthmap:line:"

    def __init__(self, client: Any) -> None:
        import redis  # only where Redis is configured

        self.client = client
        self._errors = (redis.RedisError, OSError)
        self._response_error = redis.exceptions.ResponseError
        self._script = client.register_script(REDIS_SCRIPT)
        self._keys = [self.PREFIX + k for k in ("seq", "places", "expires", "inside", "workers")]

    def _call(self, op: str, ticket: str = "", hold_s: float = 0.0, limit: int = 1 << 20,
              inside: Optional[bool] = None) -> Any:
        flag = "" if inside is None else "1" if inside else "0"
        args = [op, ticket, int(hold_s * 1000), max(1, limit), flag, int(MAX_HOLD_S * 1000)]
        for attempt in (1, 2):
            try:
                out = self._script(keys=self._keys, args=args)
            except self._response_error as exc:  # a key of the wrong type, a counter that is not a number
                if "OOM" in str(exc):  # Redis at its maxmemory: full, as the result store says
                    raise StoreUnavailable("Redis is full: the line for inference slots cannot keep a place. "
                                           "Please try again later.", FULL_RETRY_S, full=True) from None
                if attempt == 2:
                    raise StoreUnavailable("The line for inference slots (Redis) cannot be used; please "
                                           "try again in a moment.") from None
                log.warning("the line's keys in Redis are damaged (%s): the line starts again, empty", exc)
                self._reset()
                continue
            except self._errors as exc:
                log.warning("redis: %s", exc)
                raise StoreUnavailable("The line for inference slots (Redis) cannot be reached; please try "
                                       "again in a moment.") from None
            if isinstance(out, list) and out and out[0] == b"reset":
                log.warning("the line in Redis held far more places than its limit: it starts again, empty")
                continue
            return out
        raise StoreUnavailable("The line for inference slots (Redis) cannot be used; please try again "
                               "in a moment.")

    def _reset(self) -> None:
        try:
            self.client.delete(*self._keys)
        except self._errors as exc:
            log.warning("redis: %s", exc)

    @staticmethod
    def _place(out: Any) -> Optional[Place]:
        if not isinstance(out, list) or len(out) != 7 or out[0] != b"place":
            return None
        _, ticket, number, ahead, outside_ahead, inside, waiting = out
        return Place(ticket.decode(), int(number), int(ahead), int(outside_ahead), bool(inside), int(waiting))

    def join(self, hold_s: float, limit: int) -> Optional[Place]:
        return self._place(self._call("join", new_ticket(), hold_s, limit))

    def find(self, ticket: str) -> Optional[Place]:
        return self._place(self._call("find", ticket))

    def enter(self, ticket: str, hold_s: float) -> Optional[Place]:
        return self._place(self._call("enter", ticket, hold_s))

    def hold(self, ticket: str, hold_s: float, inside: Optional[bool]) -> bool:
        return self._call("hold", ticket, hold_s, inside=inside) == 1

    def leave(self, ticket: str) -> None:
        self._call("leave", ticket)

    def checkin(self, worker: str, hold_s: float) -> int:
        return int(self._call("checkin", worker, hold_s))

    def stats(self) -> Dict[str, Any]:
        out: List[Any] = self._call("stats")
        return {"backend": self.kind, "places": int(out[1]), "inside": int(out[2])}


class SpareLine(Line):
    """The shared line, with this process's own (in memory) for when the shared one has no room (its
    data folder's disk full, Redis at ``maxmemory``): a full disk must not stop the requests that keep
    nothing, such as the files of results already kept. Until there is room, the order holds within
    each process only. Any other failure of the shared line is the request's ``StoreUnavailable``."""

    def __init__(self, shared: Line) -> None:
        self.shared, self.own = shared, SqliteLine()
        self.kind = shared.kind
        self._warned = -math.inf

    def _either(self, op: str, *args: Any) -> Any:
        try:
            return getattr(self.shared, op)(*args)
        except StoreUnavailable as exc:
            if not exc.full:
                raise
            if time.monotonic() - self._warned >= WARN_EVERY_S:
                self._warned = time.monotonic()
                log.warning("%s This process keeps a line of its own until there is room.", exc.message)
            return getattr(self.own, op)(*args)

    def join(self, hold_s: float, limit: int) -> Optional[Place]:
        return self._either("join", hold_s, limit)

    def _of(self, op: str, ticket: str, *args: Any) -> Any:
        """``op`` on the line that gave ``ticket`` its place: this process's own, else the shared one."""
        if self.own.find(ticket) is not None:
            return getattr(self.own, op)(ticket, *args)
        return self._either(op, ticket, *args)

    def find(self, ticket: str) -> Optional[Place]:
        return self._of("find", ticket)

    def enter(self, ticket: str, hold_s: float) -> Optional[Place]:
        return self._of("enter", ticket, hold_s)

    def hold(self, ticket: str, hold_s: float, inside: Optional[bool]) -> bool:
        return self._of("hold", ticket, hold_s, inside)

    def leave(self, ticket: str) -> None:
        self._of("leave", ticket)

    def checkin(self, worker: str, hold_s: float) -> int:
        return self._either("checkin", worker, hold_s)

    def stats(self) -> Dict[str, Any]:
        return self.shared.stats()


def open_line(store: Any) -> Line:
    """The line beside ``store``: in its Redis, or in the data folder of its files (with a spare of this
    process's own for when that has no room)."""
    if getattr(store, "kind", None) == "redis":
        return SpareLine(RedisLine(store.client))
    root = getattr(store, "root", None)
    return SpareLine(SqliteLine(root.parent / "line.sqlite3" if root is not None else None))
