"""The one error type of the web layer, the registry of its codes and the one handler.

Every error answer is ``{"error": code, "message": plain words}`` with the code's HTTP status, as JSON for
the API (and for clients that prefer JSON) and as an HTML page otherwise; a blueprint with a page of its
own (the studio) renders that instead. Errors of the core (a bad image, option or video, a full
queue) are answered through the same registry, so views need no try/except for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Type

from flask import Flask, Response, current_app, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from ..serving.gate import Busy
from ..imaging.measure import CalibrationError
from ..options import OptionError
from ..imaging.pipeline import ImageError
from ..serving.store import StoreUnavailable
from ..imaging.video import VideoError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Code:
    """An error code: the HTTP statuses it comes with (the first is its usual one) and its meaning."""

    statuses: Tuple[int, ...]
    meaning: str


ERRORS: Mapping[str, Code] = {
    "bad_request": Code((400,), "a JSON body that is not an object, malformed or nested too deeply "
                                "(`/api/v1/render`, calibration)"),
    "missing_file": Code((400,), "no photo in `image` (no video in `video`)"),
    "too_many_files": Code((400, 413), "two files in one request (400); a batch of more than "
                                       "`BATCH_MAX_FILES` photos or depth ids (413)"),
    "empty": Code((400,), "an empty file"),
    "corrupt": Code((400,), "a damaged image (truncated JPEG or PNG, bad checksum); a video whose structure "
                            "cannot be read (an MP4 cut before its index)"),
    "missing_depth_id": Code((400,), "a render (or a batch zip) without `depth_id`"),
    "bad_host": Code((400,), "a `Host` that is not an IP address, `localhost` or a name in "
                             "`DEPTHMAP_TRUSTED_HOSTS` (DNS rebinding)"),
    "bad_redirect": Code((400,), "a control character (CR, LF, tab…) in `next` of `/lang/<code>`, which "
                                 "would go into the `Location` header"),
    "bad_token": Code((400,), "an `X-Owner-Token` that is not 32 hex digits"),
    "cross_site": Code((403,), "a POST or DELETE sent by another site's page (by its `Sec-Fetch-Site`, "
                               "else its `Origin`)"),
    "not_owner": Code((403,), "a DELETE without the `X-Owner-Token` of the upload that made the result, "
                              "or with another one"),
    "not_cached": Code((404,), "the result is no longer kept (expired, pushed out or deleted): upload "
                               "again"),
    "not_found": Code((404,), "an unknown URL, view or language; a video job's zip that was not asked for"),
    "no_job": Code((404,), "an unknown video job, or one that expired"),
    "not_in_line": Code((404,), "no such place in the line for slots: unknown, expired (its holder did not "
                                "come back in time), already used, or forged; send the request again for a "
                                "new place at the back"),
    "method_not_allowed": Code((405,), "wrong method"),
    "not_acceptable": Code((406,), "`Accept: image/png` (or `image/jpeg`) with more than one view"),
    "not_ready": Code((409,), "a video result asked for before the job is done"),
    "job_failed": Code((409,), "the result of a failed video job"),
    "job_cancelled": Code((409,), "the result of a cancelled video job"),
    "too_large": Code((413,), "a body over `MAX_CONTENT_LENGTH` (videos: `VIDEO_MAX_CONTENT_LENGTH`; "
                              "JSON: 64 KB), an image over `MAX_PIXELS` (read from its header before "
                              "decoding), video frames over `VIDEO_MAX_PIXELS`, a video upload larger than "
                              "all of `VIDEO_BYTES`, a batch zip of more than `BATCH_MAX_PIXELS` (in "
                              "`POST /api/v1/batch`, the row of each photo past it)"),
    "too_long": Code((413,), "a clip over `VIDEO_MAX_SECONDS` or `VIDEO_MAX_FRAMES`"),
    "not_image": Code((415,), "a file that is not JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC/HEIF or AVIF"),
    "not_video": Code((415,), "not a video (a still photo too: it belongs to `/api/v1/depth`)"),
    "unsupported_type": Code((415,), "a body that is not `multipart/form-data`"),
    "bad_option": Code((422,), "an unknown option, a wrong type, NaN/inf, a value out of range, an unknown "
                               "colormap, view or image `format` (photo or video option alike)"),
    "bad_calibration": Code((422,), "calibration points that cannot fix a scale and shift"),
    "internal_error": Code((500,), "a bug (logged; the server goes on serving)"),
    "busy": Code((503,), "photos: every inference slot is busy and others are ahead in line (with the "
                         "`X-Line-Ticket` header the answer holds the place kept for the client: `line`); "
                         "videos: `VIDEO_QUEUE` jobs are already waiting in the queue. `Retry-After` says "
                         "when to try again"),
    "unavailable": Code((503,), "from the scaled deployment's proxy (`docker/nginx.conf`): the replica "
                                "answering stopped before it answered (killed, crashed, restarting), or none "
                                "could be reached; `Retry-After` says when to try again"),
    "store_unavailable": Code((503,), "the shared result store (the data folder, or Redis) is down or "
                                      "cannot be written; `Retry-After` says when to try again, and the "
                                      "server recovers by itself once the store is back"),
    "storage_full": Code((507,), "no room for what the request would keep: a new result (the data "
                                 "folder's disk, or Redis's `maxmemory`; results held are still served), or "
                                 "a video upload (the byte budget `VIDEO_BYTES` is taken by other jobs' "
                                 "uploads and results, or the disk is full; nothing of the upload is kept). "
                                 "`Retry-After` says when room is likely"),
    "error": Code((), "any other HTTP error (its status says which)"),
}
# the code of an HTTP error that Werkzeug or Flask raised on their own
STATUS_CODES: Mapping[int, str] = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                                   406: "not_acceptable", 413: "too_large", 415: "unsupported_type",
                                   422: "bad_option", 500: "internal_error", 503: "busy"}


class ApiError(HTTPException):
    """An answer with a registered ``error`` code, its HTTP status (``code``, as Werkzeug names it), a
    ``message`` in plain words and, for ``busy``, the seconds after which to try again and the client's
    place in line."""

    def __init__(self, error: str, message: str, status: Optional[int] = None,
                 retry_after: Optional[int] = None, extra: Optional[Mapping[str, Any]] = None) -> None:
        statuses = ERRORS[error].statuses
        status = status or statuses[0]
        if statuses and status not in statuses:
            raise ValueError(f"error code {error!r} does not go with HTTP status {status}")
        super().__init__(description=message)
        self.code = status
        self.error = error
        self.retry_after = retry_after
        self.extra = dict(extra or {})  # more fields of the JSON answer (a place in line)

    @property
    def message(self) -> str:
        return self.description or ""


def as_api_error(exc: Exception) -> ApiError:
    """The answer to ``exc``: an ``ApiError`` as it is, a core error by its code, an HTTP error that
    Werkzeug raised by its status."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (ImageError, VideoError)):
        return ApiError(exc.code, exc.message)
    if isinstance(exc, OptionError):
        return ApiError("bad_option", f"Option '{exc.name}': {exc.message}.")
    if isinstance(exc, CalibrationError):
        return ApiError("bad_calibration", f"Calibration: {exc}.")
    if isinstance(exc, Busy):
        return ApiError("busy", exc.message, retry_after=exc.retry_after,
                        extra={"line": exc.line} if exc.line else None)
    if isinstance(exc, StoreUnavailable):
        return ApiError("storage_full" if exc.full else "store_unavailable", exc.message,
                        retry_after=exc.retry_after)
    assert isinstance(exc, HTTPException)
    status = exc.code or 500
    if status == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = f"The upload is larger than this server's limit of {limit / 2**20:g} MB."
    elif status >= 500:
        message = "Something went wrong on the server; the error was logged. Please try again."
    else:
        message = exc.description or exc.name
    return ApiError(STATUS_CODES.get(status, "error"), message, status=status)


# what the one handler answers; a view raises any of these and the user gets its 4xx or 5xx
HANDLED: Tuple[Type[Exception], ...] = (HTTPException, ImageError, VideoError, OptionError, CalibrationError,
                                         Busy, StoreUnavailable)


def wants_json() -> bool:
    """The API answers JSON; other URLs answer JSON only to a client that prefers it to HTML."""
    if request.path.startswith("/api/"):
        return True
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def log_error(err: ApiError) -> None:
    if err.error in ("store_unavailable", "storage_full"):
        log.error("%s %s -> 503 %s", request.method, request.path, err.message)
    elif err.code >= 500 and err.error != "busy":
        log.error("%s %s -> %d", request.method, request.path, err.code)
    elif err.error == "busy":
        log.warning("%s %s -> 503 busy (retry after %s s)", request.method, request.path, err.retry_after)


def finish(response: Response, err: ApiError) -> Response:
    """``response`` with the error's status and, for ``busy`` and ``store_unavailable``, its Retry-After."""
    response.status_code = err.code
    if err.retry_after:
        response.headers["Retry-After"] = str(err.retry_after)
    return response


def answer(exc: Exception) -> Response:
    """The one handler: JSON ``{"error", "message"}`` or the plain error page."""
    err = as_api_error(exc)
    log_error(err)
    if wants_json():
        response = jsonify(error=err.error, message=err.message, **err.extra)
    else:
        response = make_response(render_template("error.html", status=err.code, error=err.error,
                                                 message=err.message))
    return finish(response, err)


def init_app(app: Flask) -> None:
    for cls in HANDLED:
        app.register_error_handler(cls, answer)


def markdown_table() -> str:
    """The registry as the Markdown table of docs/api.md."""
    rows = ["| `error` | HTTP status | meaning |", "|---|---|---|"]
    for code, spec in ERRORS.items():
        statuses = ", ".join(map(str, spec.statuses)) or "other"
        rows.append(f"| `{code}` | {statuses} | {spec.meaning} |")
    return "\n".join(rows) + "\n"

