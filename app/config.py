"""Every setting of the studio in one place: its name, default, environment variable and meaning.

``create_app`` reads them as defaults -> environment -> the test's overrides; ``depthmap serve`` and
``app/serving/gunicorn_conf.py`` read the serving ones, ``app.depth.model`` the weights ones.
``markdown_table()`` writes the table in docs/configuration.md (a test keeps the two equal).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

TRUE = frozenset({"1", "true", "yes", "on"})
ANY_HOST = "*"  # DEPTHMAP_TRUSTED_HOSTS: every name
HOST_NAME = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")  # as IDNA gives it, no port
FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """An environment variable holds a value its setting cannot take."""


@dataclass(frozen=True)
class Setting:
    """One setting. ``key`` is its name in Flask's ``app.config`` (``None`` for those read elsewhere),
    ``env`` its environment variable, ``kind`` how that variable's text is read."""

    env: str
    default: Any
    kind: type
    meaning: str
    key: Optional[str] = None
    shown_default: Optional[str] = None  # for the docs, where the default is not a literal value


MB = 1024 * 1024


def _app(name: str, default: Any, kind: type, meaning: str, shown: Optional[str] = None) -> Setting:
    """A setting of the Flask app, ``DEPTHMAP_<name>`` in the environment."""
    return Setting(f"DEPTHMAP_{name}", default, kind, meaning, key=name, shown_default=shown)


def _other(env: str, default: Any, kind: type, meaning: str, shown: Optional[str] = None) -> Setting:
    """A setting read by the server's launcher or the weights loader, not by the Flask app."""
    return Setting(env, default, kind, meaning, shown_default=shown)


SETTINGS: Tuple[Setting, ...] = (
    # the models
    _app("MODELS", "midas-small", str, "the models a server loads, comma-separated: `midas-small`, "
         "`depth-anything-v2-small` (same as `serve --model`, repeated); the first is what a request "
         "without `model` gets (see [Models](models.md))"),
    Setting("MIDAS_WEIGHTS", None, str, "path of the MiDaS checkpoint (same as `--weights`); unset: the "
            "user cache, else a download", key="MIDAS_WEIGHTS", shown_default="unset"),
    Setting("DAV2_WEIGHTS", None, str, "path of the Depth Anything V2 Small checkpoint (same as `--weights` "
            "with `--model depth-anything-v2-small`); unset: the user cache, else a download",
            key="DAV2_WEIGHTS", shown_default="unset"),
    _app("WEIGHTS_DOWNLOAD", True, bool, "allow the first start to download the weights"),
    _other("DEPTHMAP_CACHE", None, str, "where downloaded weights and the ONNX export (`onnx/`) are kept",
           "`~/.cache/depthmap`"),
    _other("MIDAS_WEIGHTS_URL", None, str, "download source of the weights (a mirror)", "official release"),
    _other("MIDAS_WEIGHTS_DIGEST", None, str, "expected digest of the download (`sha256:HEX` or "
           "`gitblob:HEX`)", "the official file's git blob id"),
    _other("DAV2_WEIGHTS_URL", None, str, "download source of the Depth Anything weights (a mirror)",
           "Hugging Face"),
    _other("DAV2_WEIGHTS_DIGEST", None, str, "expected digest of that download", "the official file's "
           "sha256"),
    _app("ENGINE", "auto", str, "how the network runs: `auto` (the fastest exact engine installed), "
         "`torchscript`, `eager`, `bf16`, `onnxruntime`, `openvino` or `openvino-fp32` (same as `--engine`; "
         "see [Engines](engines-and-speed.md#engines))"),
    _app("TORCH_THREADS", None, int, "inference threads per process, for every engine (same as "
         "`predict --threads`)", "the CPUs the process may use, cgroup quota included (`serve`: ÷ workers)"),
    # shared state: results and video jobs, for every worker and host
    _app("DATA_DIR", None, str, "where results and video jobs shared by this host's workers are kept "
         "(see [Scaling](self-hosting.md#scaling))", "`/dev/shm/depthmap-UID` (memory) if it has room for "
         "twice `DEPTHMAP_CACHE_BYTES`, else `depthmap-UID` in the system's temporary folder"),
    _app("REDIS_URL", None, str, "`redis://` or `rediss://` URL (with password): results and the job queue "
         "in Redis, shared by every host", "unset (the embedded store)"),
    # requests and their limits
    _app("MAX_CONTENT_LENGTH", 20 * MB, int, "largest request body the server reads; larger ones get 413"),
    _app("MAX_PIXELS", 40_000_000, int, "largest image, from its header, before decoding (413 above)"),
    _app("MAX_SIDE", 4096, int, "photos with a longer side are downscaled to this working size"),
    _app("CACHE_BYTES", 200 * MB, int, "bytes of recent results (uploads and raw depths) the embedded store "
         "keeps for all workers of the host, least recently used out (a 12 MP photo takes about 85 MB; "
         "with Redis, its `maxmemory` bounds them instead)"),
    _app("RESULT_TTL", 3600, float, "seconds a result (with its upload) is kept after its last use"),
    _app("BATCH_MAX_FILES", 20, int, "photos (or depth ids) in one batch request; more get 413 "
         "`too_many_files`"),
    # Flask reads a key TRUSTED_HOSTS itself, as a list with no rule for IP addresses: hence another key
    Setting("DEPTHMAP_TRUSTED_HOSTS", "", str, "host names the server answers to besides IP addresses and "
            "`localhost`, which always work: comma-separated, `.example.com` with its subdomains, `*` any "
            "name; a request for another name gets 400 `bad_host` (a DNS-rebinding page names its own; "
            "see [Self-hosting, \"Security\"](self-hosting.md#security))", key="TRUSTED_HOST_NAMES",
            shown_default="none"),
    _app("BATCH_MAX_PIXELS", 100_000_000, int, "pixels, at the working size, that one batch request "
         "computes or renders in all (about eight 12 MP photos): `batch.zip` past it gets 413 `too_large`, "
         "`POST /api/v1/batch` a `too_large` row for each photo past it"),
    _app("SECRET_KEY", None, str, "Flask's secret key (nothing uses sessions yet)", "random per process"),
    # admission (app.serving.gate)
    _app("INFERENCE_SLOTS", 1, int, "depth maps computed at once per worker (decode + inference)"),
    _app("INFERENCE_QUEUE", 2, int, "requests that may wait for a slot in a worker, holding their uploads; "
         "the rest wait in line without them (503 + `Retry-After` and their place)"),
    _app("QUEUE_TIMEOUT", 30, float, "seconds a request may wait for a slot before it gets 503 (below "
         "`DEPTHMAP_TIMEOUT`, so a queue never ends in gunicorn killing the worker)"),
    _app("LINE_LENGTH", 100, int, "places in the line for slots, shared by every worker (and host, with "
         "Redis); beyond it a request gets 503 + `Retry-After` without a place (see "
         "[Overload](self-hosting.md#overload))"),
    _app("LINE_GRACE", 5, float, "seconds a place in line is kept past the time its holder was told to come "
         "back; then it is dropped, so an abandoned place holds nobody up for long"),
    # video jobs
    _app("VIDEO_WORKERS", 1, int, "videos processed at once by one consumer (`depthmap worker`, or the "
         "one `serve` embeds)"),
    _app("VIDEO_QUEUE", 4, int, "videos waiting in the queue (shared by every process); one more is refused "
         "with 503"),
    _app("VIDEO_JOB_TTL", 3600, float, "seconds an ended video job and its files are kept"),
    _app("VIDEO_JOB_TIMEOUT", 3600, float, "seconds one video job may run before it is stopped (0: no "
         "limit)"),
    _app("VIDEO_WORKER_LOST", 30, float, "seconds without a heartbeat after which a running job's consumer "
         "counts as gone (killed, crashed): the job runs once more, then fails"),
    _app("EMBEDDED_WORKER", True, bool, "`serve` runs one video job consumer inside one of its processes per "
         "host; `false` where `depthmap worker` runs them"),
    _app("VIDEO_MAX_CONTENT_LENGTH", 200 * MB, int, "largest video upload (photos keep "
         "`DEPTHMAP_MAX_CONTENT_LENGTH`)"),
    _app("VIDEO_MAX_SECONDS", 300, float, "longest clip, in seconds (0: no limit)"),
    _app("VIDEO_MAX_FRAMES", 9000, int, "most frames in a clip, before `stride` (0: no limit)"),
    _app("VIDEO_MAX_PIXELS", 3840 * 2160, int, "largest video frame, in pixels (0: no limit)",
         "`8294400` (3840×2160)"),
    _app("VIDEO_BYTES", 512 * MB, int, "bytes all video jobs' files may take together (uploads, the "
         "`norm=clip` spool, depth videos and zips; 0: no limit): an upload that does not fit is refused "
         "with 507 before it is stored, a job that grows past it fails with `storage_full`. The default "
         "leaves room in a 2 GB container whose data folder is memory (`/dev/shm` or a tmpfs) for a worker "
         "(about 500 MB) and `DEPTHMAP_CACHE_BYTES`, and still takes a `DEPTHMAP_VIDEO_MAX_CONTENT_LENGTH` "
         "upload"),
    _app("VIDEO_DIR", None, str, "where each video job gets its folder (upload, spool, results); one "
         "folder for every process that runs or serves jobs", "`jobs` in the data dir"),
    # serving (depthmap serve, app/serving/gunicorn_conf.py)
    _other("DEPTHMAP_BIND", "127.0.0.1:8000", str, "address:port to listen on (same as `serve --bind`)"),
    _other("DEPTHMAP_WORKERS", None, int, "server worker processes, each with its own model, sharing the "
           "results (same as `serve --workers`)", "usable CPUs ÷ 4, rounded up "
           "([rule](self-hosting.md#workers-and-threads))"),
    _other("DEPTHMAP_WORKER_THREADS", 4, int, "request threads per worker: pages, images and health "
           "checks are served while a depth map is computed (same as `serve --threads`)"),
    _other("DEPTHMAP_TIMEOUT", 120, int, "seconds before a stuck worker is restarted (same as `serve "
           "--timeout`)"),
    _other("DEPTHMAP_GRACEFUL_TIMEOUT", 30, int, "seconds gunicorn gives running requests to finish when "
           "it stops or restarts a worker"),
    _other("DEPTHMAP_BUFFER_BYTES", 256 * MB, int, "bytes a server worker holds in memory for clients slower "
           "than itself: request bodies while they arrive (each request is received whole before the app "
           "sees it) and answers while the client takes them (see [Slow clients](self-hosting.md#slow-"
           "clients)); a body that would pass it gets 503 `busy`, an answer is then written at the "
           "client's pace by its thread; never below `DEPTHMAP_VIDEO_MAX_CONTENT_LENGTH`"),
    _other("DEPTHMAP_ACCESS_LOG", "-", str, "access log file, `-` for standard output (client "
           "address, request line, status, size, time; never bodies)"),
    _other("DEPTHMAP_LOG_LEVEL", "INFO", str, "the app's log level (standard error)"),
)
BY_ENV: Mapping[str, Setting] = {s.env: s for s in SETTINGS}


def parse(setting: Setting, text: str) -> Any:
    """The value of ``setting`` from the text of its environment variable."""
    text = text.strip()
    if setting.kind is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise ConfigError(f"{setting.env}: expected true or false, got {text[:40]!r}")
    try:
        return setting.kind(text)
    except ValueError:
        raise ConfigError(f"{setting.env}: expected {setting.kind.__name__}, got {text[:40]!r}") from None


def get(env: str, environ: Mapping[str, str] = os.environ) -> Any:
    """One setting's value: its environment variable if set (and not empty), else its default."""
    setting = BY_ENV[env]
    raw = environ.get(env)
    return setting.default if raw is None or raw == "" else parse(setting, raw)


def trusted_host_names(setting: str) -> Tuple[str, ...]:
    """``DEPTHMAP_TRUSTED_HOSTS`` as a tuple of lower-case names (``.example.com``, ``*``); ``ConfigError``
    for a name that is not one (Werkzeug's check would fail on it at every request)."""
    names = tuple(name.strip().lower() for name in setting.split(",") if name.strip())
    for name in names:
        try:
            ok = name == ANY_HOST or bool(HOST_NAME.fullmatch(name.lstrip(".").encode("idna").decode()))
        except UnicodeError:  # an empty or over-long label
            ok = False
        if not ok:
            raise ConfigError(f"DEPTHMAP_TRUSTED_HOSTS: {name[:60]!r} is not a host name")
    return names


def app_defaults() -> Dict[str, Any]:
    """The Flask app's settings with their defaults."""
    return {s.key: s.default for s in SETTINGS if s.key}


def app_environ(environ: Mapping[str, str] = os.environ) -> Dict[str, Any]:
    """The Flask app's settings that the environment sets."""
    return {s.key: get(s.env, environ) for s in SETTINGS if s.key and environ.get(s.env)}


def markdown_table() -> str:
    """The settings as the Markdown table of docs/configuration.md."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = s.shown_default or f"`{str(s.default).lower() if s.kind is bool else s.default}`"
        if s.env.endswith(("CONTENT_LENGTH", "BYTES")):
            default += f" ({s.default // MB} MB)"
        rows.append(f"| `{s.env}` | {default} | {s.meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m app.config > the table for docs/configuration.md
    sys.stdout.write(markdown_table())
