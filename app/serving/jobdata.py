"""What video jobs read back, treated as untrusted: a record from the queue's storage (SQLite, or a Redis
that others may be able to write to) is checked field by field before it is used, and nothing in it
becomes a path until the job id and the file name have passed their checks and the resolved path lies
inside the jobs' folder. Also the folder's byte budget (``DEPTHMAP_VIDEO_BYTES``): every job's upload,
spool and results together, checked before an upload is written and at every frame of a running job.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
import shutil
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

JOB_ID = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16)
FILE_NAME = re.compile(r"\w[\w.-]{0,127}")  # one plain name: no separator, no leading dot
FILE_KINDS = ("video", "depth_zip")
RESERVED = ".reserved"  # a sparse file the size of an upload on its way: counted before it is written
MAX_RECORD_BYTES = 64 * 1024  # a record is about 2 KB; anything far larger was not written by a job
SCAN_EVERY_S = 1.0  # a running job counts the other jobs' bytes at most this often
FULL = (errno.ENOSPC, errno.EDQUOT)

MB = 1024 * 1024


class BadRecord(ValueError):
    """A job record that a job did not write: wrong types, a foreign id, a path for a file name."""


def is_job_id(value: Any) -> bool:
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def is_file_name(value: Any) -> bool:
    return isinstance(value, str) and FILE_NAME.fullmatch(value) is not None


def is_full(exc: OSError) -> bool:
    """Whether ``exc`` says the file system (or the user's quota) has no room left."""
    return exc.errno in FULL


# records ------------------------------------------------------------------------------------------------

def _number(value: Any, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _scalars(value: Any) -> bool:
    """A JSON object of plain values (the options a job was asked with)."""
    plain = (str, bool, int, float)
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, plain)) for k, v in value.items())


CHECKS: Mapping[str, Callable[[Any], bool]] = {
    "name": is_file_name,
    "info": lambda v: isinstance(v, dict),
    "spec": lambda v: isinstance(v, dict) and all(_scalars(v.get(k)) for k in ("options", "video_options")),
    "created": _number, "queued_at": _number,
    "started": lambda v: _number(v, True), "finished": lambda v: _number(v, True),
    "pass_started": lambda v: _number(v, True), "first_pass_rate": lambda v: _number(v, True),
    "attempts": _count, "pass_no": _count, "passes": _count, "done": _count, "total": _count,
    "error": lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("error"), str)
                                     and isinstance(v.get("message"), str)),
    "files": lambda v: isinstance(v, dict) and all(k in FILE_KINDS and is_file_name(n) for k, n in v.items()),
    "result": lambda v: isinstance(v, dict),
    "worker": lambda v: v is None or isinstance(v, str),
}


def check_record(body: Any, job_id: str, states: tuple) -> Dict[str, Any]:
    """``body`` (a parsed record stored under ``job:job_id``) if every field has the type a job writes and
    its id is the one of its key; else ``BadRecord``. Unknown fields are left for the caller to drop."""
    if not isinstance(body, dict):
        raise BadRecord("not a JSON object")
    if body.get("id") != job_id or not is_job_id(job_id):
        raise BadRecord(f"id {str(body.get('id'))[:40]!r} under the key of {job_id[:40]!r}")
    if body.get("state") not in states:
        raise BadRecord(f"unknown state {str(body.get('state'))[:20]!r}")
    for name, ok in CHECKS.items():
        if name not in body or not ok(body[name]):
            raise BadRecord(f"field {name!r} is missing or not what a job writes")
    if not 1 <= body["passes"] <= 2 or body["pass_no"] > body["passes"]:
        raise BadRecord("passes out of range")
    return body


# paths ----------------------------------------------------------------------------------------------------

def inside(root: Path, path: Path) -> Optional[Path]:
    """``path`` with every link followed, if that still lies inside ``root`` (itself resolved); else None."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return Path(real) if os.path.commonpath([real_root, real]) == real_root and real != real_root else None


def job_file(root: Path, job_id: str, name: str) -> Optional[Path]:
    """The regular file ``name`` in job ``job_id``'s folder, resolved; None for a bad id or name, a path
    that leads out of that folder, or no such file."""
    if not (is_job_id(job_id) and is_file_name(name)):
        return None
    folder = inside(root, root / job_id)
    path = inside(root, root / job_id / name)
    if folder is None or path is None or path.parent != folder:
        return None
    try:
        return path if stat.S_ISREG(os.stat(path).st_mode) else None
    except OSError:
        return None


def remove_job_folder(root: Path, job_id: str) -> None:
    """Deletes job ``job_id``'s folder: only a real folder (not a link) named by a valid id, in ``root``."""
    if not is_job_id(job_id):
        return
    folder = root / job_id
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return
    except OSError:
        return
    shutil.rmtree(folder, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files in one job folder (their sizes: a reservation counts in full)."""
    total = 0
    try:
        with os.scandir(folder) as items:
            for item in items:
                try:
                    info = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
    except OSError:
        pass
    return total


# the byte budget ------------------------------------------------------------------------------------------

class NoRoom(Exception):
    """The jobs' folder cannot take more bytes: its budget is spent or its file system is full.
    ``ever`` is False when even an empty folder could not (more than the whole budget)."""

    def __init__(self, message: str, ever: bool = True, retry_after: int = 60) -> None:
        super().__init__(message)
        self.message, self.ever, self.retry_after = message, ever, retry_after


class Room:
    """The jobs' folder's byte budget (``max_bytes``, 0: none) and its file system's free space, as every
    process sees them: counted from the files themselves, so nothing needs to be told what others wrote."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes

    def used(self) -> int:
        """Bytes in every job folder (uploads arriving, spools, results)."""
        total = 0
        try:
            with os.scandir(self.root) as items:
                folders = [Path(i.path) for i in items
                           if is_job_id(i.name) and i.is_dir(follow_symlinks=False)]
        except OSError:
            return 0
        for folder in folders:
            total += folder_bytes(folder)
        return total

    def free(self) -> int:
        """Bytes the file system still gives this user."""
        info = os.statvfs(self.root)
        return info.f_bavail * info.f_frsize

    def check(self, nbytes: int) -> None:
        """``NoRoom`` unless ``nbytes`` more fit in the budget and on the file system now."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # made again if a cleaner took it
        if self.max_bytes and nbytes > self.max_bytes:
            raise NoRoom(f"This upload ({nbytes / MB:.1f} MB) is larger than all the room this server keeps "
                         f"for videos ({self.max_bytes / MB:.0f} MB, DEPTHMAP_VIDEO_BYTES).", ever=False)
        if self.max_bytes:
            left = self.max_bytes - self.used()
            if nbytes > left:
                raise NoRoom(f"The room this server keeps for videos ({self.max_bytes / MB:.0f} MB for every "
                             "job's upload and results, DEPTHMAP_VIDEO_BYTES) has "
                             f"{max(0, left) / MB:.1f} MB left and this upload needs {nbytes / MB:.1f} MB; "
                             "earlier jobs' results make room as they expire or are deleted.")
        free = self.free()
        if nbytes > free:
            raise NoRoom(f"The video folder's disk is full ({free / MB:.1f} MB free, this upload needs "
                         f"{nbytes / MB:.1f} MB).")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time between counting the bytes and reserving them (every process of the
        host, and of every host where the shared volume supports ``flock``)."""
        with open(self.root / ".room.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def claim(self, workdir: Path, nbytes: int) -> None:
        """Makes ``workdir`` with ``nbytes`` reserved in it, or raises ``NoRoom`` (``OSError`` when the file
        system refuses even the folder)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked():
            self.check(nbytes)
            workdir.mkdir(mode=0o700)
            if nbytes:
                with open(workdir / RESERVED, "wb") as f:
                    f.truncate(nbytes)  # sparse: counted by its size, no block written

    @staticmethod
    def release(workdir: Path) -> None:
        """Ends ``workdir``'s reservation: its upload is written and counts for itself."""
        (workdir / RESERVED).unlink(missing_ok=True)

    def meter(self, workdir: Path) -> Callable[[], None]:
        """A check for a running job in ``workdir``, called at every frame: ``NoRoom`` once every job's
        files together pass the budget. Its own folder is counted each time, the others' at most every
        ``SCAN_EVERY_S``."""
        state = {"others": 0, "at": -math.inf}

        def check() -> None:
            if not self.max_bytes:
                return
            mine = folder_bytes(workdir)
            now = time.monotonic()
            if now - state["at"] >= SCAN_EVERY_S:
                state["others"], state["at"] = max(0, self.used() - mine), now
            if mine + state["others"] > self.max_bytes:
                raise NoRoom(f"The job's files grew past the room this server keeps for videos "
                             f"({self.max_bytes / MB:.0f} MB for every job's upload and results, "
                             "DEPTHMAP_VIDEO_BYTES): it was stopped and its partial files deleted. A shorter "
                             "clip, a larger stride, a smaller out_side or no depth zip needs less.")
        return check
