"""What the page and the API share: reading a request (upload, options, views, depth id) and the one
error handler, which answers JSON for the API and HTML for the page."""

from __future__ import annotations

import io
import logging
import re
from typing import IO, Any, Dict, Mapping, NoReturn, Optional, Tuple

from flask import Flask, Request, Response, current_app, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException, abort

from .cache import Entry
from .gate import Busy
from .options import DEPTH_OPTIONS, OptionError, Options
from .pipeline import VIEWS, ImageError
from .service import DepthService, safe_stem

log = logging.getLogger(__name__)

# the stable machine-readable code each status gets unless a view names a more precise one
ERROR_CODES: Mapping[int, str] = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
    413: "too_large", 415: "unsupported_type", 422: "bad_option", 500: "internal_error", 503: "busy",
}
# pipeline.ImageError codes -> HTTP status
IMAGE_ERROR_STATUS: Mapping[str, int] = {"empty": 400, "corrupt": 400, "not_image": 415, "too_large": 413}
NOT_OPTIONS = frozenset({"image", "views", "view", "depth_id", "download", "max_side"})
PREVIEW_SIDES = (64, 8192)  # the range of max_side
DEPTH_ID = re.compile(r"[0-9a-f]{32}")
DEFAULTS: Mapping[str, Any] = Options().as_dict()  # built once: URLs carry only what differs from it


class InMemoryRequest(Request):
    """Uploads stay in memory (bounded by ``MAX_CONTENT_LENGTH``): Werkzeug would otherwise spool any
    upload over 500 KB to a temporary file on disk."""

    def _get_file_stream(self, total_content_length: Optional[int], content_type: Optional[str],
                         filename: Optional[str] = None,
                         content_length: Optional[int] = None) -> IO[bytes]:
        return io.BytesIO()


def fail(status: int, error: str, message: str) -> NoReturn:
    """``abort`` with a stable code (``error``) beside the plain-words ``message``."""
    try:
        abort(status, description=message)
    except HTTPException as exc:
        exc.error = error  # type: ignore[attr-defined]  # read by handle_error
        raise


def service() -> DepthService:
    return current_app.extensions["depth_service"]


def read_upload() -> Tuple[bytes, str]:
    """The one file in the multipart field ``image``: its bytes (in memory only) and a safe stem."""
    if request.mimetype != "multipart/form-data":
        fail(415, "unsupported_type", "Send the photo as multipart/form-data in the field 'image'.")
    files = request.files.getlist("image")
    if not files:
        others = ", ".join(repr(k) for k in request.files)
        fail(400, "missing_file", "No photo was sent: put it in the form field 'image'"
             + (f" (got {others})." if others else "."))
    if len(files) > 1:
        fail(400, "too_many_files", f"Send one photo per request (got {len(files)} in 'image').")
    return files[0].read(), safe_stem(files[0].filename)


def read_options(values: Mapping[str, Any], strict: bool) -> Options:
    """Options from form fields or query arguments; with ``strict`` an unknown name is an error."""
    try:
        return Options.from_strings({k: v for k, v in values.items() if k not in NOT_OPTIONS}, strict)
    except OptionError as exc:
        fail(422, "bad_option", f"Option '{exc.name}': {exc.message}.")


def read_views(values: Mapping[str, Any], default: Tuple[str, ...] = VIEWS) -> Tuple[str, ...]:
    """``views`` (or ``view``): "all", "none"/empty, or a comma-separated list of view names."""
    raw = values.get("views", values.get("view"))
    if raw is None:
        return default
    raw = str(raw).strip().lower()
    if raw == "all":
        return VIEWS
    names = [v.strip() for v in raw.split(",") if v.strip() and v.strip() != "none"]
    for name in names:
        if name not in VIEWS:
            fail(422, "bad_option", f"Option 'views': unknown view {name[:40]!r}; use all, none or "
                 f"a comma-separated list of {', '.join(VIEWS)}.")
    return tuple(dict.fromkeys(names))


def read_max_side(values: Mapping[str, Any]) -> Optional[int]:
    """``max_side`` of a preview: a whole number of pixels in ``PREVIEW_SIDES``, or None for full size."""
    raw = values.get("max_side")
    if raw is None or raw == "":
        return None
    lo, hi = PREVIEW_SIDES
    try:
        side = int(str(raw))
    except ValueError:
        fail(422, "bad_option", f"Option 'max_side': expected a whole number, got {str(raw)[:40]!r}.")
    if not lo <= side <= hi:
        fail(422, "bad_option", f"Option 'max_side': must be between {lo} and {hi}; got {side}.")
    return side


def infer(data: bytes, name: str, opts: Options) -> Any:
    """``DepthService.infer`` with image errors turned into their 4xx answers."""
    try:
        return service().infer(data, name, opts)
    except ImageError as exc:
        fail(IMAGE_ERROR_STATUS.get(exc.code, 400), exc.code, exc.message)


def lookup(depth_id: Any) -> Optional[Entry]:
    """The cache entry of a well-formed ``depth_id``, else None (junk never reaches the cache)."""
    text = str(depth_id or "")
    return service().cache.get(text) if DEPTH_ID.fullmatch(text) else None


def cached_entry(depth_id: Any) -> Entry:
    """The cache entry of ``depth_id``, or a 404 that tells the user what to do."""
    if not depth_id:
        fail(400, "missing_depth_id", "Give the depth_id of an earlier result.")
    entry = lookup(depth_id)
    if entry is None:
        fail(404, "not_cached", "That depth map is no longer in this server's memory (only recent "
             "results are kept); upload the photo again.")
    return entry


def options_query(opts: Options, view: Optional[str] = None) -> Dict[str, str]:
    """The options that differ from the defaults, as query/form strings (short, stable URLs). For one
    ``view``, only those that change it: the alpha slider then re-renders the overlay alone."""
    skip = set()
    if view is not None:
        skip = set(DEPTH_OPTIONS)  # fixed by the depth_id
        if view != "overlay":
            skip.add("alpha")
        if view == "gray":
            skip.add("colormap")
        if view == "photo":
            skip.update(opts.as_dict())
    out = {}
    for name, value in opts.as_dict().items():
        if name not in skip and value != DEFAULTS[name]:
            out[name] = ("on" if value else "off") if isinstance(value, bool) else str(value)
    return out


def wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def handle_error(exc: HTTPException) -> Response:
    """The one error handler: JSON ``{"error", "message"}`` for the API, an HTML page otherwise."""
    status = exc.code or 500
    error = getattr(exc, "error", None) or ERROR_CODES.get(status, "error")
    if status == 413 and error == "too_large" and not getattr(exc, "error", None):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = f"The upload is larger than this server's limit of {limit / 2**20:g} MB."
    elif status >= 500 and status != 503:
        message = "Something went wrong on the server; the error was logged. Please try again."
    else:
        message = exc.description or exc.name
    if status >= 500 and status != 503:
        log.error("%s %s -> %d", request.method, request.path, status)
    if wants_json():
        response = jsonify(error=error, message=message)
    elif request.blueprint == "page":
        # errors of the page appear next to its form, with the user's choices kept
        from .page import render_page

        response = make_response(render_page(error=message))
    else:
        response = make_response(render_template("error.html", status=status, error=error, message=message))
    response.status_code = status
    if getattr(exc, "retry_after", None):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def handle_busy(exc: Busy) -> Response:
    """At capacity (see ``app.gate``): 503 with Retry-After, through the one error handler."""
    log.warning("%s %s -> 503 busy (retry after %d s)", request.method, request.path, exc.retry_after)
    try:
        fail(503, "busy", exc.message)
    except HTTPException as http:
        http.retry_after = exc.retry_after  # type: ignore[attr-defined]
        return handle_error(http)
    raise AssertionError("unreachable")


# Content-Security-Policy: everything from this origin only; images may also be data: URIs (the API's
# inline views) and blob: (the studio's local previews); no inline script, no framing
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Cross-Origin-Opener-Policy": "same-origin",
}


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    app.request_class = InMemoryRequest
    app.register_error_handler(HTTPException, handle_error)
    app.register_error_handler(Busy, handle_busy)
    app.after_request(add_security_headers)
    # the studio sets no cookies; should a later feature use Flask's session, it is locked down
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
