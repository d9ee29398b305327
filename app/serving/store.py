"""Recent results (an upload and its raw depth), shared by every worker process and host, so any request
may land on any of them: a re-render, an export or a calibration finds the result an upload made
elsewhere.

Two backends behind one interface (``ResultStore``):

- ``FileStore``, the embedded default: one file per result in a private folder of this host
  (``DEPTHMAP_DATA_DIR``), written to a temporary name and renamed into place (readers see a whole
  entry or none), least recently used out beyond a byte budget, deleted a fixed time after its last use.
- ``RedisStore`` (``DEPTHMAP_REDIS_URL``): one Redis hash per result with a TTL; Redis's own
  ``maxmemory`` policy bounds the bytes.

Entries are never pickled: arrays travel as ``.npy`` bytes (read back without ``allow_pickle``, object
arrays refused), everything else as JSON. A small in-process LRU in front keeps the hot results' arrays,
but every read asks the shared store first whether the entry still exists and is the same version, so a
deleted or replaced result is gone on every worker at once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import io
import json
import logging
import math
import mmap
import os
import re
import secrets
import stat
import struct
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..options import DEPTH_OPTIONS

log = logging.getLogger(__name__)

ARRAYS = ("photo", "depth", "pred")
MAGIC = b"DMRESULT1\n"
SUFFIX = ".result"
SHM = Path("/dev/shm")
SHM_HEADROOM = 2  # /dev/shm is the default only if it has room for twice the budget
LOCAL_ENTRIES = 2  # results whose arrays this process keeps in memory, in front of the shared store
MOUNTS = Path("/proc/self/mounts")
RAM_FILESYSTEMS = ("tmpfs", "ramfs")  # file systems whose files live in memory, never on a disk
REDIS_PERSISTENCE_CHECK_S = 60  # how long the answer of Redis's CONFIG GET is trusted
KEY = re.compile(r"[0-9a-f]{32}")  # what depth_id makes: nothing else is ever looked up or becomes a path
NAME = re.compile(r"\w[\w.-]{0,63}")  # what service.safe_stem makes: no quote, slash or control character
OWNER = re.compile(r"(?:[0-9a-f]{64})?")  # the digest of an owner token, or none


@dataclass(frozen=True)
class Entry:
    """One upload and its raw depth. ``data`` is kept so the input size can change without a re-upload."""

    id: str
    data: bytes  # the uploaded file, as received
    name: str  # safe download stem derived from the upload's filename (never used as a path)
    depth_opts: Mapping[str, Any]  # Options.depth_options() the depth was made with
    photo: np.ndarray  # (H, W, 3) uint8 RGB, as the depth sees it (cropped with square=crop)
    depth: np.ndarray  # (H, W) float32 relative inverse depth
    pred: np.ndarray  # (h, w) float32 network output: a new upsampling needs no new inference
    pad_box: Optional[Tuple[int, int, int]] = None
    owner: str = ""  # SHA-256 of the owner token its uploader was given ("": nobody's, cannot be deleted)

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.photo.nbytes + self.depth.nbytes + self.pred.nbytes


class StoreUnavailable(Exception):
    """The shared store cannot be reached, is full or cannot be written; try again after ``retry_after``
    seconds (the store recovers by itself once it is back). ``full``: it works but has no room for a new
    result (its disk, or Redis's memory); what it holds is still served."""

    def __init__(self, message: str, retry_after: int = 5, full: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.full = full


def depth_id(secret: bytes, data: bytes, depth_opts: Mapping[str, Any], owner: str = "") -> str:
    """The key of one result: a keyed hash (HMAC-SHA256 with the deployment's ``secret``) of the uploaded
    bytes, the options the raw depth depends on and its ``owner``. The same photo of the same owner gives
    the same id on every worker; nobody without the secret can work out the id of a photo they have not
    uploaded here, and someone who uploads the same bytes gets an id, and a result, of their own."""
    h = hmac.new(secret, data, hashlib.sha256)
    for name in sorted(depth_opts):
        h.update(f"|{name}={depth_opts[name]!r}".encode())
    h.update(f"|owner={owner}".encode())
    return h.hexdigest()[:32]


# the entry format: JSON metadata and .npy arrays, never pickle ------------------------------------------

def npy_parts(arr: np.ndarray) -> Tuple[bytes, np.ndarray]:
    """The ``.npy`` header of ``arr`` and the C-ordered array whose raw bytes follow it: written one
    after the other they are the ``.npy`` file, without a copy of the array into a buffer first."""
    arr = np.ascontiguousarray(arr)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(arr))
    return head.getvalue(), arr


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as one ``.npy`` file in memory (one copy)."""
    head, body = npy_parts(arr)
    return b"".join((head, memoryview(body).cast("B")))


def npy_array(buf: memoryview) -> np.ndarray:
    """The array in ``.npy`` bytes, read-only and without a copy; object arrays (pickles) are refused."""
    head = io.BytesIO(buf[:4096].tobytes())
    major, _ = np.lib.format.read_magic(head)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(head)
    if dtype.hasobject:
        raise ValueError("a stored array holds Python objects")
    count = int(np.prod(shape, dtype=np.int64))
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=head.tell())
    return arr.reshape(shape, order="F" if fortran else "C")


def encode_meta(entry: Entry, version: str) -> Dict[str, Any]:
    return {"version": version, "id": entry.id, "name": entry.name, "depth_opts": dict(entry.depth_opts),
            "pad_box": list(entry.pad_box) if entry.pad_box is not None else None, "owner": entry.owner}


def decode_entry(key: str, meta: Mapping[str, Any], data: bytes, arrays: Mapping[str, memoryview]) -> Entry:
    """The entry stored under ``key``; ``ValueError`` unless it is one ``put`` could have stored there
    (the store's files or Redis may hold what someone else wrote): its name goes into download headers,
    its owner decides who may delete it."""
    pad_box, owner = meta["pad_box"], meta["owner"]
    if not (isinstance(owner, str) and OWNER.fullmatch(owner)):
        raise ValueError("a stored owner that is not a digest")
    entry = Entry(meta["id"], data, meta["name"], meta["depth_opts"],
                  *(npy_array(arrays[name]) for name in ARRAYS),
                  tuple(pad_box) if pad_box is not None else None, owner)
    photo, depth, pred, opts = entry.photo, entry.depth, entry.pred, entry.depth_opts
    if entry.id != key or not (isinstance(entry.name, str) and NAME.fullmatch(entry.name)):
        raise ValueError("an entry with a foreign id or a name that is not a plain stem")
    if not (isinstance(opts, dict) and set(opts) == set(DEPTH_OPTIONS)
            and all(isinstance(v, (str, int, float, bool)) for v in opts.values())):
        raise ValueError("depth options that no request made")
    if not (photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3 and depth.dtype == np.float32
            and depth.shape == photo.shape[:2] and pred.dtype == np.float32 and pred.ndim == 2):
        raise ValueError("arrays of the wrong type or shape")
    if entry.pad_box is not None and not (len(entry.pad_box) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in entry.pad_box)):
        raise ValueError("a pad box that is not three counts")
    return entry


# the shared interface, with the in-process front ---------------------------------------------------------

class ResultStore(ABC):
    """The results of every worker: ``get``, ``put`` and ``delete`` by id, each the same on any worker.
    A subclass stores and reads whole entries; this class keeps the last ``LOCAL_ENTRIES`` read or
    written in memory, checked against the store's version of the entry on every read."""

    kind = "abstract"
    local_entries = LOCAL_ENTRIES

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._local: "OrderedDict[str, Tuple[str, Entry]]" = OrderedDict()
        self._lock = threading.Lock()
        self._secret: Optional[bytes] = None

    @abstractmethod
    def _version(self, key: str) -> Optional[str]:
        """The stored entry's version (and a touch: it was used now), None if absent or expired."""

    @abstractmethod
    def _load(self, key: str) -> Optional[Tuple[str, Entry]]:
        """The stored entry and its version, None if absent (or damaged: then it is deleted)."""

    @abstractmethod
    def _store(self, entry: Entry, version: str) -> None:
        """Keeps ``entry`` as ``version``, replacing any entry of the same id."""

    @abstractmethod
    def _delete(self, key: str) -> bool:
        """Deletes the entry; False if there was none."""

    @abstractmethod
    def _shared_secret(self) -> bytes:
        """The deployment's random key, made by the first worker that asks."""

    @abstractmethod
    def stats(self) -> Dict[str, Any]:
        """The store's figures for /healthz."""

    @abstractmethod
    def in_memory(self) -> bool:
        """Whether the entries live in memory only (never written to a disk), as far as can be told:
        what the page's privacy note says. False when unsure."""

    # the interface
    def secret(self) -> bytes:
        """The deployment's key for ``depth_id``: made once, kept in the store, the same on every worker."""
        if self._secret is None:
            self._secret = self._shared_secret()
        return self._secret

    def get(self, key: str) -> Optional[Entry]:
        if not (isinstance(key, str) and KEY.fullmatch(key)):
            return None
        version = self._version(key)
        with self._lock:
            if version is None:
                self._local.pop(key, None)
                return None
            kept = self._local.get(key)
            if kept is not None and kept[0] == version:
                self._local.move_to_end(key)
                return kept[1]
        loaded = self._load(key)
        if loaded is None:  # deleted between the two reads
            return None
        self._keep(key, *loaded)
        return loaded[1]

    def put(self, entry: Entry) -> None:
        """Stores ``entry`` (replacing one with the same id) for every worker; raises ``StoreUnavailable``
        when the store cannot take it."""
        for arr in (entry.photo, entry.depth, entry.pred):
            arr.flags.writeable = False  # shared between requests: nobody may change it in place
        version = secrets.token_hex(8)
        self._store(entry, version)
        self._keep(entry.id, version, entry)

    def delete(self, key: str) -> bool:
        """Deletes the entry at once, for every worker; False if there was none."""
        if not (isinstance(key, str) and KEY.fullmatch(key)):
            return False
        with self._lock:
            self._local.pop(key, None)
        return self._delete(key)

    def _keep(self, key: str, version: str, entry: Entry) -> None:
        with self._lock:
            self._local[key] = (version, entry)
            self._local.move_to_end(key)
            while len(self._local) > self.local_entries:
                self._local.popitem(last=False)


# the embedded store: files in a private folder ----------------------------------------------------------

def in_memory(path: Path, mounts: Path = MOUNTS) -> bool:
    """Whether ``path`` lies on a file system that keeps its files in memory (tmpfs, ramfs), from the
    mount table: the last mount on the longest mount point that holds the path decides. False when the
    table cannot be read (never promise memory without knowing)."""
    real = os.path.realpath(path)
    try:
        table = mounts.read_text()
    except OSError:
        return False
    best, kind = "", ""
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # the kernel writes a space, tab, newline or backslash in a mount point as an octal escape (\040)
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind in RAM_FILESYSTEMS


def default_data_dir(max_bytes: int) -> Path:
    """Where the embedded store lives when ``DEPTHMAP_DATA_DIR`` is unset: a folder of this user in
    /dev/shm (memory: uploads never reach a disk) if it has room for twice the budget, else in the
    system's temporary folder (Docker gives a container a 64 MB /dev/shm unless told otherwise)."""
    name = f"depthmap-{os.geteuid()}"
    if (SHM / name).is_dir():  # chosen before: every worker must use the same folder, however full it is
        return SHM / name
    try:
        room = os.statvfs(SHM)
        if os.access(SHM, os.W_OK) and room.f_bavail * room.f_frsize >= SHM_HEADROOM * max_bytes:
            return SHM / name
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / name


def data_dir(configured: Optional[str], max_bytes: int) -> Path:
    """The one decision of the data folder, for the server, ``depthmap worker`` and the store alike:
    ``DEPTHMAP_DATA_DIR`` if set, else ``default_data_dir``."""
    return Path(configured) if configured else default_data_dir(max_bytes)


def private_dir(path: Path) -> Path:
    """``path`` as a folder only this user may enter, made if missing; raises ``StoreUnavailable`` with
    one clear line when that cannot be done or someone else owns it (a shared /tmp or /dev/shm)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode):
            raise StoreUnavailable(f"The data folder {path} is not a folder (DEPTHMAP_DATA_DIR).")
        if info.st_uid != os.geteuid():
            raise StoreUnavailable(f"The data folder {path} belongs to another user; set DEPTHMAP_DATA_DIR "
                                   "to a folder of this user.")
        if info.st_mode & 0o077:
            os.chmod(path, 0o700)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-")
        probe.close()
    except OSError as exc:
        raise StoreUnavailable(f"Cannot write the data folder {path} ({exc.strerror or exc}); set "
                               "DEPTHMAP_DATA_DIR to a writable folder.") from None
    return path


FULL_RETRY_S = 30  # a full disk frees up when results expire or someone makes room: not in seconds


def os_problem(exc: OSError, what: str) -> StoreUnavailable:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreUnavailable(f"The result store's disk is full; {what} The results it holds are still "
                                "served. Please try again later.", FULL_RETRY_S, full=True)
    return StoreUnavailable(f"The result store cannot be used ({exc.strerror or exc}); {what} Please try "
                            "again in a moment.")


class FileStore(ResultStore):
    """One file per result in ``root``: MAGIC, the JSON metadata's length (8 bytes, little-endian), the
    metadata (with each part's length), then the upload and the ``.npy`` arrays. The file's mtime is its
    last use: the least recently used go beyond ``max_bytes``, any unused for ``ttl_s`` seconds go too.
    Writes go to a temporary name and are renamed into place, so no reader ever sees half an entry; one
    lock file serialises the clean-ups of all processes."""

    kind = "files"
    # no private copies in front of the files: a read maps the file (4 ms for a 12 MP result), while a
    # copy kept in each worker costs 84 MB per 12 MP result for as long as it is kept
    local_entries = 0

    def __init__(self, root: Path, max_bytes: int, ttl_s: float) -> None:
        super().__init__(ttl_s)
        self.root = private_dir(root) / "results"
        self.max_bytes = max_bytes
        try:
            self.root.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise os_problem(exc, "its folder cannot be made.") from None
        self._lock_path = self.root.parent / "results.lock"
        self._in_memory = in_memory(self.root)  # the folder does not move: asked once

    def _path(self, key: str) -> Path:
        return self.root / (key + SUFFIX)

    def _fresh(self, path: Path) -> bool:
        """``path`` exists and was used within the TTL (an expired one is deleted); used now. Only a regular
        file counts: ``put`` never makes anything else, and a link could lead out of the folder."""
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                log.warning("result %s is not a regular file; deleted", path.name)
                path.unlink(missing_ok=True)
                return False
            mtime = info.st_mtime
            if time.time() - mtime > self.ttl_s:
                path.unlink(missing_ok=True)
                return False
            os.utime(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise os_problem(exc, "the result could not be read.") from None

    def _read_meta(self, f: Any) -> Dict[str, Any]:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a result file")
        (size,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(size))

    def _version(self, key: str) -> Optional[str]:
        path = self._path(key)
        if not self._fresh(path):
            return None
        try:
            with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
                return str(self._read_meta(f)["version"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, RecursionError, struct.error) as exc:
            log.warning("unreadable result %s: %s", key, exc)
            return None

    def _load(self, key: str) -> Optional[Tuple[str, Entry]]:
        """The entry, its arrays mapped from the file rather than read: no copy, and on /dev/shm the same
        memory pages as the file. Safe because a result file is never changed in place, only replaced
        or deleted, and a mapping keeps its pages even then."""
        try:
            with open(os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
                buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        except FileNotFoundError:
            return None
        except ValueError:  # an empty file
            buf = memoryview(b"")
        except OSError as exc:
            raise os_problem(exc, "the result could not be read.") from None
        try:  # a damaged entry is absent, never an error of the request
            start = len(MAGIC) + 8
            if buf[:len(MAGIC)] != MAGIC:
                raise ValueError("not a result file")
            (size,) = struct.unpack("<Q", buf[len(MAGIC):start])
            meta = json.loads(buf[start:start + size].tobytes())
            parts: Dict[str, memoryview] = {}
            at = start + size
            for name, length in meta["parts"]:
                parts[name] = buf[at:at + length]
                at += length
            return meta["version"], decode_entry(key, meta, parts["data"].tobytes(), parts)
        except (KeyError, TypeError, ValueError, RecursionError, struct.error) as exc:
            log.warning("unreadable result %s, deleted: %s", key, exc)
            self._path(key).unlink(missing_ok=True)
            return None

    def _store(self, entry: Entry, version: str) -> None:
        if entry.nbytes > self.max_bytes:  # larger than the whole budget: not kept (as an LRU would)
            log.warning("result %s (%d bytes) is larger than DEPTHMAP_CACHE_BYTES: not kept", entry.id,
                        entry.nbytes)
            return
        blobs: List[Tuple[str, List[Any]]] = [("data", [entry.data])]
        for name in ARRAYS:
            head, body = npy_parts(getattr(entry, name))
            blobs.append((name, [head, body]))
        meta = json.dumps({**encode_meta(entry, version), "parts": [
            (name, sum(memoryview(p).nbytes for p in pieces)) for name, pieces in blobs]}).encode()
        tmp = self.root / f".{entry.id}.{version}.tmp"
        for attempt in (1, 2):
            try:
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                    f.write(MAGIC + struct.pack("<Q", len(meta)) + meta)
                    for _, pieces in blobs:
                        for piece in pieces:
                            f.write(piece)  # an array's own buffer: no copy
                os.replace(tmp, self._path(entry.id))
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise os_problem(FileNotFoundError(errno.ENOENT, "the folder is gone"),
                                     "the new result could not be kept.") from None
                # the folder was removed under the server (a cleaner of /tmp or /dev/shm): made again
                private_dir(self.root.parent)
                self.root.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise os_problem(exc, "the new result could not be kept.") from None
        self._clean()

    def _clean(self) -> None:
        """Deletes expired entries, then the least recently used until the rest fit the budget."""
        try:
            with open(self._lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                now = time.time()
                files = []
                for item in os.scandir(self.root):
                    try:
                        info = item.stat()
                    except FileNotFoundError:
                        continue
                    if item.name.endswith(".tmp") and now - info.st_mtime > 600:
                        os.unlink(item.path)  # left behind by a process killed while writing
                    elif item.name.endswith(SUFFIX):
                        if now - info.st_mtime > self.ttl_s:
                            os.unlink(item.path)
                        else:
                            files.append((info.st_mtime, info.st_size, item.path))
                total = sum(size for _, size, _ in files)
                for _, size, path in sorted(files):
                    if total <= self.max_bytes:
                        break
                    Path(path).unlink(missing_ok=True)
                    total -= size
        except OSError as exc:
            log.warning("cleaning the result store failed: %s", exc)

    def _delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise os_problem(exc, "the result could not be deleted.") from None

    def _shared_secret(self) -> bytes:
        """A random key in ``secret`` beside the results: written once (a link fails if another worker was
        first, and then its key is read), 0600."""
        path = self.root.parent / "secret"
        try:
            if not path.exists():
                tmp = self.root.parent / f".secret-{secrets.token_hex(8)}"
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                    f.write(secrets.token_bytes(32))
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink()
            return path.read_bytes()
        except OSError as exc:
            raise os_problem(exc, "its key could not be read.") from None

    def stats(self) -> Dict[str, Any]:
        entries = total = 0
        for item in os.scandir(self.root):
            if item.name.endswith(SUFFIX):
                try:
                    total += item.stat().st_size
                    entries += 1
                except FileNotFoundError:
                    continue
        return {"backend": self.kind, "shared": "host", "entries": entries, "bytes": total,
                "max_bytes": self.max_bytes, "ttl_s": self.ttl_s, "in_memory": self._in_memory}

    def in_memory(self) -> bool:
        return self._in_memory


# Redis ----------------------------------------------------------------------------------------------------

class RedisStore(ResultStore):
    """One hash per result, ``depthmap:result:<id>``, with fields ``meta`` (JSON), ``data`` and one per
    array (``.npy``), and an expiry ``ttl_s`` after its last use. Every key of a result has a TTL, so
    Redis's ``maxmemory-policy volatile-lru`` (or ``allkeys-lru`` on a Redis of its own) bounds the bytes;
    a Redis that refuses a write (``noeviction`` and full) answers ``StoreUnavailable``."""

    kind = "redis"
    PREFIX = "depthmap:result:"
    SECRET_KEY = "depthmap:secret"

    def __init__(self, url: str, ttl_s: float) -> None:
        import redis  # only where Redis is configured

        super().__init__(ttl_s)
        self.url = url
        self._errors = (redis.RedisError, OSError)
        self._oom = redis.exceptions.ResponseError  # OutOfMemoryError, or the pipeline's ExecAbortError
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=30,
                                           health_check_interval=10, retry_on_timeout=False)
        self._persistence: Tuple[float, bool] = (-math.inf, False)  # (when asked, in memory only)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._oom as exc:
            if "OOM" not in str(exc) and "maxmemory" not in str(exc):
                raise
            raise StoreUnavailable("The result store (Redis) is full; "
                                   f"{what} Please try again later.", FULL_RETRY_S, full=True) from None
        except self._errors as exc:
            log.warning("redis: %s", exc)
            raise StoreUnavailable("The result store (Redis) cannot be reached; "
                                   f"{what} Please try again in a moment.") from None

    def _key(self, key: str) -> str:
        return self.PREFIX + key

    def _version(self, key: str) -> Optional[str]:
        def read() -> Any:
            with self.client.pipeline(transaction=False) as p:
                p.hget(self._key(key), "meta")
                p.expire(self._key(key), int(self.ttl_s))
                return p.execute()[0]
        meta = self._call("the result could not be read.", read)
        try:
            return None if meta is None else str(json.loads(meta)["version"])
        except (KeyError, TypeError, ValueError, RecursionError):
            return None  # not what put stores: _load never trusts it either

    def _load(self, key: str) -> Optional[Tuple[str, Entry]]:
        fields = ("meta", "data", *ARRAYS)
        values = self._call("the result could not be read.", self.client.hmget, self._key(key), fields)
        if any(v is None for v in values):
            return None
        try:
            meta = json.loads(values[0])
            return meta["version"], decode_entry(key, meta, values[1], {n: memoryview(v) for n, v in
                                                                        zip(ARRAYS, values[2:], strict=True)})
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            log.warning("unreadable result %s, deleted: %s", key, exc)
            self._call("the result could not be deleted.", self.client.delete, self._key(key))
            return None

    def _store(self, entry: Entry, version: str) -> None:
        mapping = {"meta": json.dumps(encode_meta(entry, version)), "data": entry.data,
                   **{name: npy_bytes(getattr(entry, name)) for name in ARRAYS}}

        def write() -> None:
            with self.client.pipeline(transaction=True) as p:
                p.delete(self._key(entry.id))
                p.hset(self._key(entry.id), mapping=mapping)
                p.expire(self._key(entry.id), int(self.ttl_s))
                p.execute()
        self._call("the new result could not be kept.", write)

    def _delete(self, key: str) -> bool:
        return bool(self._call("the result could not be deleted.", self.client.delete, self._key(key)))

    def _shared_secret(self) -> bytes:
        def read() -> bytes:
            self.client.set(self.SECRET_KEY, secrets.token_bytes(32), nx=True)
            return self.client.get(self.SECRET_KEY)
        return self._call("its key could not be read.", read)

    def stats(self) -> Dict[str, Any]:
        def read() -> Dict[str, Any]:
            memory = self.client.info("memory")
            return {"backend": self.kind, "shared": "every host on this Redis",
                    "used_memory": memory.get("used_memory"), "maxmemory": memory.get("maxmemory"),
                    "maxmemory_policy": memory.get("maxmemory_policy"), "ttl_s": self.ttl_s}
        return {**self._call("its figures could not be read.", read), "in_memory": self.in_memory()}

    def in_memory(self) -> bool:
        """True when this Redis saves no snapshots (``save ""``) and keeps no append-only file: then
        nothing of a result reaches its disk. A Redis that does not answer (or hides CONFIG, as managed
        ones may) counts as one that saves."""
        asked, memory_only = self._persistence
        if time.monotonic() - asked < REDIS_PERSISTENCE_CHECK_S:
            return memory_only
        try:
            config = {**self.client.config_get("save"), **self.client.config_get("appendonly")}
            memory_only = config.get("save") == "" and config.get("appendonly") == "no"
        except self._errors:
            memory_only = False
        self._persistence = (time.monotonic(), memory_only)
        return memory_only


def open_store(redis_url: Optional[str], folder: Optional[str], max_bytes: int,
               ttl_s: float) -> ResultStore:
    """Redis when ``redis_url`` is set, else the files under ``data_dir(folder)``."""
    if redis_url:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise StoreUnavailable("DEPTHMAP_REDIS_URL must start with redis://, rediss:// or unix://.")
        return RedisStore(redis_url, ttl_s)
    return FileStore(data_dir(folder, max_bytes), max_bytes, ttl_s)
