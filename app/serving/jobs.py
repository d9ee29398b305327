"""Video jobs through a task queue (Huey): the web process that receives a clip stores it in the job's
folder and queues the job's id; a consumer (``depthmap worker``, or the one ``depthmap serve`` embeds)
runs it. Every process that shares the queue's storage sees the same jobs.

Storage: ``SqliteHuey`` in the data dir (one host, every worker process), or ``RedisHuey`` with
``DEPTHMAP_REDIS_URL`` (every host). Job state lives in the queue's key-value storage as JSON, and the
queue's messages are JSON too (``JsonSerializer``): nothing in the storage is ever unpickled. What is
read back is still untrusted (others may be able to write to that Redis): every record is checked
before use and no path is made from it unchecked (``app.serving.jobdata``).

Keys, per job: ``job:ID`` the record (written by whoever changes the job's state), ``cancel:ID`` the
cancel flag (written by the web side only, read by the running task at each frame), ``beat:ID`` the
running task's heartbeat (written by the consumer every ``beat_s``). A running job whose heartbeat is
older than ``lost_s`` lost its consumer (killed, crashed, the host gone): it is queued again once, then
fails with ``worker_lost``.

Files: ``ROOT/ID/`` holds the upload, the clip pass's spool and the results; the upload and spool go
when the job ends, the results ``ttl_s`` after it ended (or at once with ``remove``). ``ROOT`` must be
one folder for every process that runs or serves jobs (a shared volume past one host). All of them
together stay within a byte budget (``app.serving.jobdata.Room``): checked before an upload is written and at
every frame of a running job.
"""

from __future__ import annotations

import datetime
import fcntl
import functools
import json
import logging
import math
import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import redis.exceptions
from huey import RedisHuey, SqliteHuey, crontab
from huey.api import Huey
from huey.consumer import Consumer, ConsumerStopped, Worker
from huey.constants import EmptyData
from huey.registry import Message
from huey.serializer import Serializer

from .jobdata import (MAX_RECORD_BYTES, BadRecord, NoRoom, Room, check_record, is_full, is_job_id, job_file,
                      remove_job_folder)
from ..options import OptionError, Options, VideoOptions
from ..imaging.pipeline import Model
from .store import data_dir, private_dir
from ..imaging.video import Limits, VideoError, process_video

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = (DONE, FAILED, CANCELLED)
# until a second pass has run, assume it costs this fraction of the first per frame (the clip pass:
# pass 1 runs the network, pass 2 only decodes, renders and encodes; measured on an idle 2-core machine
# at 640x360: about 15% without the depth zip, 35% with it, less when inference is slower)
LATER_PASS_COST = 0.3
QUEUE_NAME = "depthmap-video"
MAX_ATTEMPTS = 2  # a job whose consumer was lost runs once more; a clip that kills workers does not loop
UPLOAD = "upload"  # the upload's file name in the job's folder
ORPHAN_MIN_AGE_S = 600.0  # a job folder without a record is deleted no sooner (its upload may be arriving)
WRITE_EVERY_S = 0.25  # a running job writes its progress (and reads its cancel flag) at most this often


class QueueFull(Exception):
    """The queue holds as many waiting jobs as allowed; try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"job queue full; retry after {retry_after} s")
        self.retry_after = retry_after


class QueueUnavailable(Exception):
    """The queue's storage (the SQLite file, or Redis) cannot be reached or written; try again after
    ``retry_after`` seconds (nothing needs restarting: the next call connects again)."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


STORAGE_ERRORS = (sqlite3.Error, redis.exceptions.RedisError)


def _storage_guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` with the storage's own errors turned into ``QueueUnavailable``."""
    @functools.wraps(method)
    def guarded(self: "VideoJobs", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except STORAGE_ERRORS as exc:
            log.error("video job queue unavailable: %s", exc)
            raise QueueUnavailable("The video job queue cannot be reached just now (its storage is down "
                                   "or busy); try again in a few seconds.") from exc
    return guarded


class Cancelled(Exception):
    """Raised inside a running job (from its progress callback) once it has been cancelled."""


class TimedOut(Exception):
    """Raised inside a running job (from its progress callback) once it has run longer than allowed."""


class Stopping(Exception):
    """Raised inside a running job when its consumer shuts down: the job goes back to the queue."""


class JobError(Exception):
    """A failure the user can act on: ``code`` and ``message`` are shown as they are."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class JsonSerializer(Serializer):
    """Huey's messages and values as JSON instead of pickle: a queue entry is data, never code, even
    if someone else can write to the Redis. Only what this module queues is supported (a task name and
    plain arguments; no pipelines, chords or callbacks)."""

    _times = ("eta", "expires_resolved")

    def _serialize(self, data: Any) -> bytes:
        if isinstance(data, Message):
            body = data._asdict()
            if body["on_complete"] or body["on_error"] or body["chord_config"]:
                raise TypeError("pipelines, callbacks and chords are not supported")
            for key in self._times:
                if isinstance(body[key], datetime.datetime):
                    body[key] = body[key].isoformat()
            if isinstance(body["expires"], (datetime.datetime, datetime.timedelta)):
                raise TypeError("give expires as seconds")
            return json.dumps({"message": body}).encode()
        return json.dumps({"value": data}).encode()

    def _deserialize(self, data: bytes) -> Any:
        obj = json.loads(bytes(data))
        if "message" not in obj:
            return obj["value"]
        body = obj["message"]
        for key in self._times:
            if body.get(key):
                body[key] = datetime.datetime.fromisoformat(body[key])
        body["args"] = tuple(body.get("args") or ())
        return Message(**{k: body.get(k) for k in Message._fields})


def make_huey(data: Path, redis_url: Optional[str] = None) -> Huey:
    """The queue: Redis when a URL is given (``rediss://`` for TLS, the password in the URL), else an
    SQLite file in ``data``. Task return values are not stored (jobs keep their own records)."""
    common: Dict[str, Any] = {"results": False, "serializer": JsonSerializer(), "utc": True}
    if redis_url:
        return RedisHuey(QUEUE_NAME, url=redis_url, **common)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    # a busy timeout well above one request's: several processes write the same file
    return SqliteHuey(QUEUE_NAME, filename=str(data / "queue.sqlite3"), timeout=30, **common)


@dataclass
class Job:
    """One job's record, stored as JSON under ``job:ID``. Times are wall-clock seconds (``time.time()``):
    several processes, possibly on several hosts, read and write them."""

    id: str
    name: str = "video"
    info: Dict[str, Any] = field(default_factory=dict)  # shown with the job: input, options
    spec: Dict[str, Any] = field(default_factory=dict)  # what the task needs: options, video options
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    queued_at: float = field(default_factory=time.time)  # when it last entered the queue
    started: Optional[float] = None
    finished: Optional[float] = None
    attempts: int = 0
    pass_no: int = 0
    passes: int = 1
    done: int = 0
    total: int = 0
    pass_started: Optional[float] = None
    first_pass_rate: Optional[float] = None  # seconds per frame of pass 1
    error: Optional[Dict[str, str]] = None
    files: Dict[str, str] = field(default_factory=dict)  # kind -> file name in the job's folder
    result: Dict[str, Any] = field(default_factory=dict)
    worker: Optional[str] = None  # host:pid of the consumer that runs or ran it
    cancel_requested: bool = False  # from the cancel flag, filled in when read

    def to_json(self) -> bytes:
        body = asdict(self)
        body.pop("cancel_requested")
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, data: bytes, job_id: str) -> "Job":
        """The record stored under ``job:job_id``; ``BadRecord`` unless a job could have written it (the
        storage is not trusted: see ``app.serving.jobdata``)."""
        raw = bytes(data)
        if len(raw) > MAX_RECORD_BYTES:
            raise BadRecord(f"{len(raw)} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise BadRecord(f"not JSON ({exc.__class__.__name__})") from None
        body = check_record(body, job_id, STATES)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in known})

    def note_progress(self, pass_no: int, passes: int, done: int, total: int, now: float) -> None:
        if pass_no != self.pass_no:
            if self.pass_no == 1 and self.pass_started is not None and self.done:
                self.first_pass_rate = (now - self.pass_started) / self.done
            self.pass_no, self.pass_started = pass_no, now
        self.passes, self.done, self.total = passes, done, total

    def eta_s(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds left: this pass's frames at this pass's rate, plus any later pass (at its estimated
        cost). None until a frame has been done."""
        if self.state != RUNNING or not self.done or self.pass_started is None:
            return None
        rate = max(0.0, (now or time.time()) - self.pass_started) / self.done
        left = (self.total - self.done) * rate
        if self.pass_no < self.passes:
            left += (self.passes - self.pass_no) * self.total * rate * LATER_PASS_COST
        return max(0.0, left)

    def fraction(self) -> float:
        """How much of the whole job is done, 0..1 (later passes weighted by their estimated cost)."""
        if self.state == DONE:
            return 1.0
        if not self.total or not self.pass_no:
            return 0.0
        weights = [1.0] + [LATER_PASS_COST] * (self.passes - 1)
        done = sum(weights[: self.pass_no - 1]) + weights[self.pass_no - 1] * self.done / self.total
        return min(1.0, done / sum(weights))

    def as_dict(self, now: Optional[float] = None) -> Dict[str, Any]:
        """What the API shows."""
        now = now or time.time()
        elapsed = None
        if self.started is not None:
            elapsed = round(max(0.0, (self.finished or now) - self.started), 2)
        eta = self.eta_s(now)
        return {
            **self.info,  # first: what the job shows of its input never stands for its own fields
            "id": self.id, "state": self.state, "cancel_requested": self.cancel_requested,
            "created": round(self.created, 3),
            "progress": {"pass": self.pass_no, "passes": self.passes, "frames_done": self.done,
                         "frames_total": self.total, "fraction": round(self.fraction(), 4),
                         "elapsed_s": elapsed, "eta_s": None if eta is None else round(eta, 1)},
            "error": self.error, "result": self.result or None,
        }


ModelProvider = Callable[[], Mapping[str, Model]]  # the loaded models by name


class VideoJobs:
    """The video job queue as every process sees it: ``submit``, ``get``, ``cancel``, ``remove`` from the
    web side; ``run`` (the Huey task) and ``sweep`` (a periodic task, and on access) on the consumer side.

    At most ``queue_size`` jobs wait; a job that has ended is kept (with its files) for ``ttl_s`` seconds;
    ``timeout_s`` bounds one job's running time; ``limits`` hold for every frame a job decodes, and every
    job's files together stay within ``max_bytes`` (0: no budget). ``model`` gives the loaded models by
    name, one of which a task runs with (called when a job starts, so a test or a reload may swap them)."""

    def __init__(self, huey: Huey, root: Path, model: ModelProvider, workers: int = 1, queue_size: int = 4,
                 ttl_s: float = 3600.0, timeout_s: Optional[float] = None, lost_s: float = 30.0,
                 lock_path: Optional[Path] = None, limits: Optional[Limits] = None,
                 max_bytes: int = 0) -> None:
        if workers < 1 or queue_size < 0 or ttl_s < 0 or lost_s <= 0 or max_bytes < 0:
            raise ValueError("workers >= 1, queue_size >= 0, ttl_s >= 0, lost_s > 0 and max_bytes >= 0 "
                             "are needed")
        self.huey, self.root, self.model = huey, Path(root), model
        self.limits, self.room = limits or Limits(), Room(self.root, max_bytes)
        self.workers, self.queue_size, self.ttl_s, self.timeout_s = workers, queue_size, ttl_s, timeout_s
        self.lost_s = lost_s
        self.grace_s = 5.0  # a waiting job's message may be missing this long (being taken or written)
        self.beat_s = min(5.0, max(0.1, lost_s / 6))  # several beats fit in the time that counts as lost
        self.lock_path = lock_path
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = threading.Event()
        self._running: Dict[str, float] = {}  # jobs this process runs -> when its beat was last written
        self._running_lock = threading.Lock()
        self._consumer: Optional[Consumer] = None
        self._lock_file: Optional[IO[bytes]] = None
        self._start_lock = threading.Lock()
        self._last_sweep = 0.0
        self.task = huey.task(name="video_job")(self.run)
        huey.periodic_task(crontab(), name="sweep")(self.sweep)  # every minute, in every consumer

    # keys -------------------------------------------------------------------------------------------------

    def _read(self, job_id: str) -> Optional[Job]:
        """The record of ``job_id``; None if there is none, or none a job could have written."""
        if not is_job_id(job_id):
            return None
        raw = self.huey.storage.peek_data(f"job:{job_id}")
        if raw is EmptyData:
            return None
        try:
            job = Job.from_json(raw, job_id)
        except BadRecord as exc:
            log.warning("job record %s ignored: %s", job_id, exc)
            return None
        job.cancel_requested = self.huey.storage.peek_data(f"cancel:{job_id}") is not EmptyData
        return job

    def _write(self, job: Job) -> None:
        self.huey.storage.put_data(f"job:{job.id}", job.to_json())

    def _beat(self, job_id: str) -> Optional[float]:
        raw = self.huey.storage.peek_data(f"beat:{job_id}")
        try:
            beat = None if raw is EmptyData else float(bytes(raw)[:32])
        except ValueError:
            return None
        return beat if beat is not None and math.isfinite(beat) else None

    def _forget(self, job_id: str) -> None:
        claims = [f"lost:{job_id}:{n}" for n in range(MAX_ATTEMPTS + 1)]
        for key in (f"job:{job_id}", f"cancel:{job_id}", f"beat:{job_id}", *claims):
            self.huey.storage.delete_data(key)

    def _records(self) -> Iterator[Job]:
        """Every job record; one that no job could have written is deleted from the storage (its folder,
        if it names a real one, goes as an orphan's)."""
        for key, raw in self.huey.storage.result_items().items():
            key = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            if not key.startswith("job:"):
                continue
            try:
                yield Job.from_json(raw, key[4:])
            except BadRecord as exc:
                log.warning("job record %r deleted: %s", key[:80], exc)
                self.huey.storage.delete_data(key)

    def workdir(self, job_id: str) -> Path:
        """Job ``job_id``'s folder; ``ValueError`` for anything but a job id."""
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id[:40]!r}")
        return self.root / job_id

    def path(self, job: Job, kind: str) -> Optional[Path]:
        """A result file of a finished job, resolved and checked to lie in its folder; None if the job
        made none of that kind (or it is not a plain file there)."""
        name = job.files.get(kind)
        return job_file(self.root, job.id, name) if name else None

    # the web side -----------------------------------------------------------------------------------------

    @_storage_guarded
    def admit(self, nbytes: int) -> None:
        """Whether an upload of ``nbytes`` may be stored now, asked before anything is written:
        ``QueueFull`` when ``queue_size`` jobs wait, ``NoRoom`` when the byte budget or the disk has no
        room for it (with the seconds until room is likely)."""
        records = self.sweep()
        if sum(1 for j in records if j.state == QUEUED) >= self.queue_size:
            raise QueueFull(self._retry_after(records))
        try:
            self.room.check(nbytes)
        except NoRoom as exc:
            exc.retry_after = self._room_after(records)
            raise

    @_storage_guarded
    def new_workdir(self, reserve: int = 0) -> Tuple[str, Path]:
        """A new job id and its private folder with ``reserve`` bytes of the budget held for the upload
        (until ``release``), before the job exists (see ``discard``); ``NoRoom`` if they do not fit."""
        job_id = secrets.token_hex(16)
        workdir = self.workdir(job_id)
        try:
            self.room.claim(workdir, reserve)
        except NoRoom as exc:
            exc.retry_after = self._room_after(list(self._records()))
            raise
        return job_id, workdir

    def release(self, workdir: Path) -> None:
        """The upload in ``workdir`` is written: it counts for itself now, not its reservation."""
        self.room.release(workdir)

    def discard(self, workdir: Path) -> None:
        """Deletes a folder from ``new_workdir`` that never became a job (a refused upload)."""
        remove_job_folder(self.root, workdir.name)

    @_storage_guarded
    def submit(self, job_id: str, name: str, spec: Dict[str, Any], info: Dict[str, Any]) -> Job:
        """Queues the job whose upload is in ``workdir(job_id)/upload``; raises ``QueueFull`` when
        ``queue_size`` jobs already wait."""
        records = self.sweep()
        waiting = sum(1 for j in records if j.state == QUEUED)
        if waiting >= self.queue_size:
            raise QueueFull(self._retry_after(records))
        job = Job(job_id, name=name, info=dict(info), spec=dict(spec))
        self._write(job)
        self.huey.enqueue(self.task.s(job_id))
        log.info("job %s queued (%d waiting before it)", job_id, waiting)
        return job

    @_storage_guarded
    def get(self, job_id: str) -> Optional[Job]:
        """The job (None if unknown or expired); a running job whose consumer was lost is requeued or
        failed here too, so a status never stays "running" for a dead worker."""
        job = self._read(job_id)
        if job is None:
            return None
        job = self._check(job, time.time())
        if job is not None and self._last_sweep < time.monotonic() - 1.0:
            self.sweep()  # others' expired jobs too, at most once a second per process
        return job

    @_storage_guarded
    def cancel(self, job_id: str) -> Optional[Job]:
        """Cancels a queued job at once, a running one at its next frame; None if unknown."""
        job = self.get(job_id)
        if job is None or job.state in FINISHED:
            return job
        self.huey.storage.put_data(f"cancel:{job_id}", b"1")
        job.cancel_requested = True
        if job.state == QUEUED:
            self._end(job, CANCELLED)
        log.info("job %s cancel requested", job_id)
        return job

    @_storage_guarded
    def remove(self, job_id: str) -> bool:
        """Deletes an ended job and its files now; False if unknown or not ended."""
        job = self._read(job_id)
        if job is None or job.state not in FINISHED:
            return False
        self._forget(job_id)
        remove_job_folder(self.root, job_id)
        return True

    @_storage_guarded
    def counts(self) -> Dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for job in self.sweep():
            out[job.state] += 1
        return out

    def expires_in(self, job: Job, now: Optional[float] = None) -> Optional[float]:
        if job.state not in FINISHED or job.finished is None:
            return None
        return max(0.0, self.ttl_s - ((now or time.time()) - job.finished))

    def sweep(self) -> List[Job]:
        """Deletes ended jobs older than ``ttl_s`` with their folders, requeues or fails running jobs
        whose consumer is lost; returns the jobs that remain. Any process may run it."""
        self._last_sweep = time.monotonic()
        now, kept = time.time(), []
        for job in list(self._records()):
            checked = self._check(job, now)
            if checked is not None:
                kept.append(checked)
        self._requeue_lost_messages(kept, now)
        self._delete_orphans({j.id for j in kept}, now)
        return kept

    def _requeue_lost_messages(self, records: List[Job], now: float) -> None:
        """Queues again a waiting job whose message is not in the queue: a consumer died between taking
        it and marking the job running, or the queue lost it (a Redis restarted without persistence).
        A duplicate message is harmless: a task runs only a job still queued."""
        waiting = [j for j in records if j.state == QUEUED and now - j.queued_at > self.grace_s]
        if not waiting:
            return
        messages = set()
        for data in self.huey.storage.enqueued_items():
            try:
                args = self.huey.serializer.deserialize(data).args
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not a message this module queued: Huey's consumer drops it too
            messages.update(a for a in args if isinstance(a, str))
        for job in waiting:
            if job.id not in messages:
                log.warning("job %s was waiting without a message in the queue; queued again", job.id)
                job.queued_at = now
                self._write(job)
                self.huey.enqueue(self.task.s(job.id))

    def _delete_orphans(self, known: set, now: float) -> None:
        """Deletes job folders without a record (the record store lost it) once they are older than the
        TTL, and at least 10 minutes (an upload in progress has no record yet). Only folders named by a
        job id: nothing else in the folder is a job's."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if not is_job_id(folder.name) or folder.name in known:
                continue
            try:
                old = now - folder.lstat().st_mtime > max(self.ttl_s, ORPHAN_MIN_AGE_S)
            except OSError:
                continue
            if old:
                remove_job_folder(self.root, folder.name)
                log.info("job folder %s had no job record; deleted", folder.name)

    def _check(self, job: Job, now: float) -> Optional[Job]:
        if job.state in FINISHED and job.finished is not None and now - job.finished >= self.ttl_s:
            self._forget(job.id)
            remove_job_folder(self.root, job.id)
            log.info("job %s expired; its files are deleted", job.id)
            return None
        if job.state == RUNNING:
            # no beat at all: the consumer died before its first, or its last write failed
            beat = self._beat(job.id) or job.started or job.created
            if now - beat > self.lost_s:
                return self._lost(job, now - beat)
        return job

    def _lost(self, job: Job, silent_s: float) -> Job:
        """The consumer running ``job`` stopped beating: run it once more, or fail it."""
        # one process acts on one loss: the first to claim this attempt's key
        if not self.huey.storage.put_if_empty(f"lost:{job.id}:{job.attempts}", b"1"):
            return self._read(job.id) or job
        log.warning("job %s: its worker %s sent no heartbeat for %.0f s", job.id, job.worker, silent_s)
        self.huey.storage.delete_data(f"beat:{job.id}")
        upload = self.workdir(job.id) / UPLOAD
        if job.attempts < MAX_ATTEMPTS and upload.is_file():
            job.state, job.started, job.pass_no, job.done, job.total = QUEUED, None, 0, 0, 0
            job.pass_started = job.first_pass_rate = None
            job.queued_at = time.time()
            self._write(job)
            self.huey.enqueue(self.task.s(job.id))
            log.info("job %s queued again (attempt %d of %d)", job.id, job.attempts + 1, MAX_ATTEMPTS)
            return job
        job.error = {"error": "worker_lost", "message": "The worker processing this video stopped "
                     f"(killed or crashed) {job.attempts} time(s); the job was given up. Try a shorter "
                     "or smaller clip, or ask the server's operator."}
        self._end(job, FAILED)
        return job

    def _retry_after(self, records: List[Job]) -> int:
        """Seconds until a place is likely to free up: the soonest running job's time left."""
        now = time.time()
        known = [e for e in (j.eta_s(now) for j in records if j.state == RUNNING) if e is not None]
        return int(min(max(5.0, min(known)), 600.0)) if known else 30

    def _room_after(self, records: List[Job]) -> int:
        """Seconds until bytes are likely to free up: the soonest ended job's expiry or running job's end
        (a failed or cancelled one keeps nothing)."""
        now = time.time()
        ends = [e for e in (self.expires_in(j, now) for j in records if j.state == DONE) if e is not None]
        ends += [e for e in (j.eta_s(now) for j in records if j.state == RUNNING) if e is not None]
        return int(min(max(5.0, min(ends)), 3600.0)) if ends else 60

    # the consumer's side ---------------------------------------------------------------------------------

    def run(self, job_id: str) -> None:
        """The Huey task: runs one queued job to its end, writing its progress as it goes."""
        job = self._read(job_id)
        if job is None or job.state != QUEUED or job.cancel_requested:
            return  # cancelled, deleted or expired while it waited
        now = time.time()
        self.huey.storage.put_data(f"beat:{job_id}", repr(now).encode())
        job.state, job.started, job.worker, job.attempts = RUNNING, now, self.me, job.attempts + 1
        self._write(job)
        with self._running_lock:
            self._running[job_id] = now
        log.info("job %s running (attempt %d)", job_id, job.attempts)
        try:
            state = self._attempt(job)
            if state is not None:
                self._end(job, state)
                log.info("job %s %s", job_id, state)
        finally:
            # only now: until the final state is written, the heartbeat says this job is alive (a
            # missing beat on a running job reads as a lost consumer)
            with self._running_lock:
                self._running.pop(job_id, None)
            try:
                self.huey.storage.delete_data(f"beat:{job_id}")
            except STORAGE_ERRORS:
                log.warning("job %s: heartbeat not deleted", job_id)

    def _attempt(self, job: Job) -> Optional[str]:
        """Runs ``job``'s work once; its end state, or None when it went back to the queue."""
        state = FAILED
        try:
            job.result = self._work(job)
            state = DONE
        except Cancelled:
            state = CANCELLED
        except Stopping:
            job.state, job.started, job.pass_no, job.done, job.total = QUEUED, None, 0, 0, 0
            job.attempts -= 1  # not the clip's fault
            job.queued_at = time.time()
            self._write(job)
            self.huey.enqueue(self.task.s(job.id))
            log.info("job %s back in the queue: this consumer stops", job.id)
            return None
        except TimedOut:
            job.error = {"error": "timeout", "message": f"The job ran longer than this server's limit of "
                         f"{self.timeout_s:g} s and was stopped."}
        except JobError as exc:
            job.error = {"error": exc.code, "message": exc.message}
        except Exception:  # noqa: BLE001 - one job's bug must not kill the worker
            log.exception("job %s failed", job.id)
            job.error = {"error": "internal_error",
                         "message": "Something went wrong on the server; the error was logged."}
        if state == FAILED and self.huey.storage.peek_data(f"cancel:{job.id}") is not EmptyData:
            state, job.error = CANCELLED, None  # cancelled as it started: its upload went first
        return state

    def _work(self, job: Job) -> Dict[str, Any]:
        """The clip through ``process_video`` in the job's folder."""
        workdir = self.workdir(job.id)
        src = workdir / UPLOAD
        try:
            opts = Options.from_strings(job.spec["options"])
            vopts = VideoOptions.from_strings(job.spec["video_options"])
        except OptionError as exc:  # the record is stored where others may write
            raise JobError("bad_option", f"Option '{exc.name}': {exc.message}.") from None
        out = workdir / f"{job.name}.depth.mp4"
        zip_path = workdir / f"{job.name}.depth.zip" if vopts.depth_zip else None
        models = self.model()
        if opts.model not in models:  # a `depthmap worker` configured with other models than the server
            raise JobError("bad_option", f"This job's model, {opts.model}, is not loaded by the video "
                                         f"worker, which runs {', '.join(models)} (DEPTHMAP_MODELS sets "
                                         "which).")
        try:
            result = process_video(src, out, models[opts.model], opts, vopts, workdir=workdir,
                                   zip_path=zip_path, limits=self.limits, progress=self._progress(job))
        except VideoError as exc:
            raise JobError(exc.code, exc.message) from None
        except NoRoom as exc:
            raise JobError("storage_full", exc.message) from None
        except OSError as exc:
            if not is_full(exc):
                raise
            raise JobError("storage_full", "The video folder's disk filled up while the job ran: it was "
                           "stopped and its partial files deleted. Try again later.") from None
        job.files["video"] = result.video.name
        if result.depth_zip is not None:
            job.files["depth_zip"] = result.depth_zip.name
        return {"frames": result.frames, "width": result.width, "height": result.height,
                "fps": round(result.fps, 3), "warning": result.warning, "seconds": result.seconds}

    def _progress(self, job: Job) -> Callable[[int, int, int, int], None]:
        """The callback ``job`` runs after every frame: its progress written (at most every
        ``WRITE_EVERY_S``), and its stops: the consumer stopping, the byte budget spent, a cancel, the
        time limit."""
        deadline = job.started + self.timeout_s if self.timeout_s and job.started else None
        last_write = 0.0
        room = self.room.meter(self.workdir(job.id))

        def progress(pass_no: int, passes: int, done: int, total: int) -> None:
            nonlocal last_write
            now = time.time()
            first = pass_no != job.pass_no
            job.note_progress(pass_no, passes, done, total, now)
            if self._stopping.is_set():
                raise Stopping()
            room()
            if first or done == total or now - last_write >= WRITE_EVERY_S:
                last_write = now
                self._write(job)
                if self.huey.storage.peek_data(f"cancel:{job.id}") is not EmptyData:
                    raise Cancelled()
            if deadline is not None and now > deadline:
                raise TimedOut()
        return progress

    def _end(self, job: Job, state: str) -> None:
        """Marks ``job`` ended and deletes what it does not keep: everything but its result files when
        done, everything otherwise."""
        job.state, job.finished = state, time.time()
        if state != DONE:
            job.files = {}
        keep = set(job.files.values())
        workdir = self.workdir(job.id)
        for path in workdir.iterdir() if workdir.is_dir() else ():
            if path.name in keep:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self._write(job)

    def _heartbeat(self) -> None:
        """Writes the heartbeat of every job this process runs, until the consumer stops."""
        while not self._stopping.wait(self.beat_s):
            with self._running_lock:
                ids = list(self._running)
            for job_id in ids:
                try:
                    self.huey.storage.put_data(f"beat:{job_id}", repr(time.time()).encode())
                except Exception:  # noqa: BLE001 - a store that is down for a moment must not stop beats
                    log.warning("job %s: heartbeat not written", job_id, exc_info=True)

    # consumers ----------------------------------------------------------------------------------------------

    def consumer(self, signals: bool = False) -> Consumer:
        """A consumer with ``workers`` threads (and the heartbeat thread, started with it); with
        ``signals``, SIGINT and SIGTERM stop it (running jobs go back to the queue at their next frame)."""
        consumer = _Consumer(self.huey, workers=self.workers, worker_type="thread", periodic=True,
                             initial_delay=0.05, max_delay=1.0, check_worker_health=False,
                             shutdown_timeout=30)
        consumer.stopping, consumer.signals = self._stopping, signals
        threading.Thread(target=self._heartbeat, name="depthmap-job-heartbeat", daemon=True).start()
        return consumer

    def run_consumer(self) -> None:
        """Runs a consumer in this process until SIGINT or SIGTERM (``depthmap worker``)."""
        consumer = self.consumer(signals=True)
        consumer.start()
        try:
            while True:
                try:
                    consumer.loop()
                except ConsumerStopped:
                    break
        finally:
            self._stopping.set()
            consumer.stop(graceful=True)

    def start_embedded(self) -> bool:
        """Starts a consumer inside this (web) process if no other process on this host runs one: a lock
        on ``lock_path`` decides, so ``serve --workers N`` runs one. True if this process runs it."""
        with self._start_lock:
            if self._consumer is not None:
                return True
            if self._stopping.is_set():
                return False
            if self.lock_path is not None:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
                lock = open(self.lock_path, "a+b")  # noqa: SIM115 - held for the consumer's life
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    lock.close()
                    return False
                self._lock_file = lock
            self._consumer = self.consumer()
            self._consumer.start()
            log.info("video job consumer started in this process (%d worker thread(s))", self.workers)
            return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stops this process's consumer: running jobs stop at their next frame and go back to the
        queue."""
        self._stopping.set()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.shutdown_timeout = timeout
            consumer.stop(graceful=True)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


class _Worker(Worker):
    """Huey's worker, with a queue storage that is down logged as one line while it retries (Huey logs
    a traceback per poll), and a message it cannot read (not one this module queued) dropped with one
    line: Huey's own loop is replaced here, and an error out of it would end the worker thread."""

    def loop(self, now: Any = None) -> None:
        try:
            task = self.huey.dequeue()
        except STORAGE_ERRORS as exc:
            log.warning("video job queue unavailable (%s); trying again", exc)
            self.sleep()
            return
        except Exception as exc:  # noqa: BLE001 - a message nobody here queued must not end the thread
            log.warning("a message in the video job queue that no job sent was dropped (%s)", exc)
            return
        if task is None:
            if not self.huey.storage.blocking:
                self.sleep()
            return
        self.delay = self.default_delay
        try:
            self.huey.execute(task, now)
        except Exception:  # noqa: BLE001 - as Huey's own worker: one task's error must not end the thread
            log.exception("video job task %s failed", task.id)


class _StorageDown(logging.Filter):
    """Huey's scheduler logs a traceback at every tick while the queue storage is down (Redis stopped):
    one warning line says it instead, as ``_Worker`` does for the queue."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, STORAGE_ERRORS):
            record.msg, record.args = f"{record.getMessage()} ({exc}); trying again", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("huey.consumer.Scheduler").addFilter(_StorageDown())


class _Consumer(Consumer):
    """Huey's consumer, with signal handlers only where it owns the process (inside a web server the
    server owns the signals), and a signal that first tells running jobs to stop: Huey's graceful stop
    would wait for a job that may run for an hour."""

    worker_class = _Worker
    stopping: threading.Event
    signals: bool = False

    def _set_signal_handlers(self) -> None:
        if self.signals:
            super()._set_signal_handlers()

    def _handle_signal(self, signum: int, frame: Any) -> None:
        self.stopping.set()
        super()._handle_signal(signum, frame)


def from_settings(c: Mapping[str, Any], model: ModelProvider) -> VideoJobs:
    """The job queue that the app's settings ``c`` (``app.config``'s names) describe: the web app and
    ``depthmap worker`` build the same one. The jobs' folder (and the data folder, where the queue or the
    jobs live in it) must be a folder of this user that nobody else may enter: ``StoreUnavailable``
    otherwise, as for the result store."""
    data = data_dir(c["DATA_DIR"], int(c["CACHE_BYTES"]))
    if not c["REDIS_URL"] or not c["VIDEO_DIR"]:
        private_dir(data)
    root = private_dir(Path(c["VIDEO_DIR"]) if c["VIDEO_DIR"] else data / "jobs")
    limits = Limits(max_seconds=c["VIDEO_MAX_SECONDS"] or None, max_frames=c["VIDEO_MAX_FRAMES"] or None,
                    max_pixels=c["VIDEO_MAX_PIXELS"] or None)
    return VideoJobs(make_huey(data, c["REDIS_URL"]), root, model, workers=int(c["VIDEO_WORKERS"]),
                     queue_size=int(c["VIDEO_QUEUE"]), ttl_s=float(c["VIDEO_JOB_TTL"]),
                     timeout_s=float(c["VIDEO_JOB_TIMEOUT"]) if c["VIDEO_JOB_TIMEOUT"] else None,
                     lost_s=float(c["VIDEO_WORKER_LOST"]), lock_path=data / "consumer.lock", limits=limits,
                     max_bytes=int(c["VIDEO_BYTES"]))
