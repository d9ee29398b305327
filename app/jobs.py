"""Background jobs for work too long for a request (videos): a fixed pool of worker threads, a bounded
queue, progress with a time-left estimate, cancelling, and expiry of finished jobs and their files.

A job owns a private temporary folder. When it ends, everything in it except the files it names as
results is deleted; when it is cancelled, fails, or expires (``ttl_s`` after it ended), the folder
goes. No Flask here: the API in ``app/web/video.py`` is a thin layer over ``JobManager``.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
# until a second pass has run, assume it costs this fraction of the first per frame (the clip pass:
# pass 1 runs the network, pass 2 only decodes, renders and encodes; measured on an idle 2-core machine
# at 640x360: about 15% without the depth zip, 35% with it, less when inference is slower)
LATER_PASS_COST = 0.3


class QueueFull(Exception):
    """Every worker is busy and the queue is full; try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"job queue full; retry after {retry_after} s")
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside a running job (from ``Job.progress``) once it has been cancelled."""


class TimedOut(Exception):
    """Raised inside a running job (from ``Job.progress``) once it has run longer than allowed."""


class JobError(Exception):
    """A failure the user can act on: ``code`` and ``message`` are shown as they are."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Work = Callable[["Job"], Dict[str, Any]]


@dataclass
class Job:
    """One unit of background work. ``work(job)`` runs in a worker thread, calls ``job.progress`` as it
    goes, puts its result files in ``job.files`` and returns what the job's JSON should show."""

    id: str
    workdir: Path
    work: Work
    info: Dict[str, Any] = field(default_factory=dict)  # shown with the job: input, options
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: Optional[float] = None  # time.monotonic()
    finished: Optional[float] = None  # time.monotonic()
    pass_no: int = 0
    passes: int = 1
    done: int = 0
    total: int = 0
    pass_started: Optional[float] = None
    first_pass_rate: Optional[float] = None  # seconds per frame of pass 1
    error: Optional[Dict[str, str]] = None
    files: Dict[str, Path] = field(default_factory=dict)
    result: Dict[str, Any] = field(default_factory=dict)
    deadline: Optional[float] = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def progress(self, pass_no: int, passes: int, done: int, total: int) -> None:
        """Called by the work after each unit; raises ``Cancelled`` or ``TimedOut`` to stop it."""
        now = time.monotonic()
        if pass_no != self.pass_no:
            if self.pass_no == 1 and self.pass_started is not None and self.done:
                self.first_pass_rate = (now - self.pass_started) / self.done
            self.pass_no, self.pass_started = pass_no, now
        self.passes, self.done, self.total = passes, done, total
        if self.cancel_event.is_set():
            raise Cancelled()
        if self.deadline is not None and now > self.deadline:
            raise TimedOut()

    def eta_s(self) -> Optional[float]:
        """Seconds left: this pass's frames at this pass's rate, plus any later pass (at its estimated
        cost). None until a frame has been done."""
        if self.state != RUNNING or not self.done or self.pass_started is None:
            return None
        rate = (time.monotonic() - self.pass_started) / self.done
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

    def as_dict(self) -> Dict[str, Any]:
        now = time.monotonic()
        elapsed = None
        if self.started is not None:
            elapsed = round((self.finished or now) - self.started, 2)
        eta = self.eta_s()
        return {
            "id": self.id, "state": self.state, "cancel_requested": self.cancel_event.is_set(),
            "created": round(self.created, 3),
            "progress": {"pass": self.pass_no, "passes": self.passes, "frames_done": self.done,
                         "frames_total": self.total, "fraction": round(self.fraction(), 4),
                         "elapsed_s": elapsed, "eta_s": None if eta is None else round(eta, 1)},
            **self.info, "error": self.error, "result": self.result or None,
        }


class JobManager:
    """At most ``workers`` jobs run at once; at most ``queue_size`` wait; a job that has ended is kept
    (with its files) for ``ttl_s`` seconds. ``timeout_s`` bounds one job's running time. Threads start
    with the first job, so an app that never runs one costs nothing."""

    def __init__(self, workers: int = 1, queue_size: int = 4, ttl_s: float = 3600.0,
                 timeout_s: Optional[float] = None, root: Optional[Path] = None) -> None:
        if workers < 1 or queue_size < 0 or ttl_s < 0:
            raise ValueError("workers >= 1, queue_size >= 0 and ttl_s >= 0 are needed")
        self.workers, self.queue_size, self.ttl_s, self.timeout_s = workers, queue_size, ttl_s, timeout_s
        self.root = Path(root) if root else Path(tempfile.gettempdir())
        self._jobs: Dict[str, Job] = {}
        self._queue: Deque[Job] = deque()
        self._cond = threading.Condition()
        self._threads: List[threading.Thread] = []
        self._stop = threading.Event()
        # at interpreter exit, or when the manager is collected (then its hook goes with it: managers
        # made and dropped, one per app in the tests, leave none behind). The callback gets the parts
        # it needs, not the manager, which it would otherwise keep alive until exit.
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._cond, self._jobs, self._queue,
                                           self._threads)

    # the API's side ------------------------------------------------------------------------------------

    def new_workdir(self) -> Path:
        """A fresh private folder for a job's upload, before the job exists (see ``discard``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="depthmap-job-", dir=self.root))

    @staticmethod
    def discard(workdir: Path) -> None:
        """Deletes a folder from ``new_workdir`` that never became a job (a refused upload)."""
        shutil.rmtree(workdir, ignore_errors=True)

    def submit(self, work: Work, workdir: Path, info: Optional[Dict[str, Any]] = None) -> Job:
        """Queues ``work``; raises ``QueueFull`` when every worker is busy and the queue is full."""
        with self._cond:
            self._sweep()
            active = sum(1 for j in self._jobs.values() if j.state in (QUEUED, RUNNING))
            if active >= self.workers + self.queue_size:  # every worker busy and every place taken
                raise QueueFull(self._retry_after())
            job = Job(secrets.token_hex(16), workdir, work, dict(info or {}))
            self._jobs[job.id] = job
            self._queue.append(job)
            self._start()
            self._cond.notify()
        log.info("job %s queued (%d waiting)", job.id, len(self._queue))
        return job

    def get(self, job_id: str) -> Optional[Job]:
        with self._cond:
            self._sweep()
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Optional[Job]:
        """Cancels a queued job at once, a running one at its next frame; None if unknown."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINISHED:
                return job
            job.cancel_event.set()
            if job.state == QUEUED:
                self._queue.remove(job)
                self._end(job, CANCELLED)
        log.info("job %s cancel requested", job_id)
        return job

    def remove(self, job_id: str) -> bool:
        """Deletes an ended job and its files now; False if unknown or not ended."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state not in FINISHED:
                return False
            del self._jobs[job_id]
        shutil.rmtree(job.workdir, ignore_errors=True)
        return True

    def counts(self) -> Dict[str, int]:
        with self._cond:
            out = dict.fromkeys((QUEUED, RUNNING, DONE, FAILED, CANCELLED), 0)
            for job in self._jobs.values():
                out[job.state] += 1
            return out

    def shutdown(self) -> None:
        """Stops the workers (running jobs at their next frame) and deletes every job's folder."""
        _shutdown(self._stop, self._cond, self._jobs, self._queue, self._threads)

    # the workers' side -----------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._threads or self._stop.is_set():
            return
        for n in range(self.workers):
            t = threading.Thread(target=self._work_loop, name=f"depthmap-job-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        janitor = threading.Thread(target=self._janitor, name="depthmap-job-janitor", daemon=True)
        janitor.start()
        self._threads.append(janitor)

    def _work_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                job = self._queue.popleft()
                job.state, job.started = RUNNING, time.monotonic()
                if self.timeout_s:
                    job.deadline = job.started + self.timeout_s
            self._run(job)

    def _run(self, job: Job) -> None:
        log.info("job %s running", job.id)
        state = FAILED
        try:
            job.result = job.work(job)
            state = DONE
        except Cancelled:
            state = CANCELLED
        except TimedOut:
            job.error = {"error": "timeout", "message": f"The job ran longer than this server's limit of "
                         f"{self.timeout_s:g} s and was stopped."}
        except JobError as exc:
            job.error = {"error": exc.code, "message": exc.message}
        except Exception:  # noqa: BLE001 - one job's bug must not kill the worker
            log.exception("job %s failed", job.id)
            job.error = {"error": "internal_error",
                         "message": "Something went wrong on the server; the error was logged."}
        with self._cond:
            self._end(job, state)
        log.info("job %s %s", job.id, state)

    def _end(self, job: Job, state: str) -> None:
        """Marks ``job`` ended (lock held) and deletes what it does not keep: everything but its result
        files when done, everything otherwise."""
        job.state, job.finished = state, time.monotonic()
        keep = set(job.files.values()) if state == DONE else set()
        if state != DONE:
            job.files = {}
        for path in job.workdir.iterdir() if job.workdir.is_dir() else ():
            if path in keep:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def _sweep(self) -> None:
        """Drops ended jobs older than ``ttl_s`` with their folders (lock held)."""
        now = time.monotonic()
        expired = [j for j in self._jobs.values()
                   if j.state in FINISHED and j.finished is not None and now - j.finished >= self.ttl_s]
        for job in expired:
            del self._jobs[job.id]
            shutil.rmtree(job.workdir, ignore_errors=True)
            log.info("job %s expired; its files are deleted", job.id)

    def _janitor(self) -> None:
        # wakes often enough that files outlive their time by at most a quarter of it (and a minute)
        interval = max(0.5, min(60.0, self.ttl_s / 4))
        while not self._stop.wait(interval):
            with self._cond:
                self._sweep()

    def _retry_after(self) -> int:
        """Seconds until a place is likely to free up: the soonest running job's time left."""
        etas = [j.eta_s() for j in self._jobs.values() if j.state == RUNNING]
        known = [e for e in etas if e is not None]
        return int(min(max(5.0, min(known)), 600.0)) if known else 30


def _shutdown(stop: threading.Event, cond: threading.Condition, jobs: Dict[str, Job], queue: Deque[Job],
              threads: List[threading.Thread]) -> None:
    """``JobManager.shutdown`` on the manager's parts: also its finalizer, which must not hold the manager."""
    stop.set()
    with cond:
        for job in jobs.values():
            job.cancel_event.set()
        cond.notify_all()
    for thread in threads:
        if thread is not threading.current_thread():  # a worker may drop the manager's last reference
            thread.join(timeout=10)
    with cond:
        ended = list(jobs.values())
        jobs.clear()
        queue.clear()
    for job in ended:
        shutil.rmtree(job.workdir, ignore_errors=True)
