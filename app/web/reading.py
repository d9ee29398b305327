"""Reading a request, shared by every resource: the upload, the options, the views, a preview size, the
cached result a ``depth_id`` names; and answering a file download."""

from __future__ import annotations

import io
import json
import re
from typing import IO, Any, Collection, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

from flask import Request, Response, current_app, request

from ..serving.store import Entry
from ..options import DEPTH_OPTIONS, Options
from ..imaging.pipeline import IMAGE_FORMATS, VIEWS
from ..serving.service import DepthService, safe_stem
from .errors import ApiError

NOT_OPTIONS = frozenset({"image", "views", "view", "depth_id", "download", "max_side", "format"})
PREVIEW_SIDES = (64, 8192)  # the range of max_side
DEPTH_ID = re.compile(r"[0-9a-f]{32}")
DEFAULTS: Mapping[str, Any] = Options().as_dict()  # built once: URLs carry only what differs from it
# a JSON body holds option names or a few calibration points: a few hundred bytes
JSON_MAX_BYTES = 64 * 1024


class InMemoryRequest(Request):
    """Uploads stay in memory (bounded by ``MAX_CONTENT_LENGTH``): Werkzeug would otherwise spool any
    upload over 500 KB to a temporary file on disk."""

    def _get_file_stream(self, total_content_length: Optional[int], content_type: Optional[str],
                         filename: Optional[str] = None,
                         content_length: Optional[int] = None) -> IO[bytes]:
        return io.BytesIO()


def depth_service() -> DepthService:
    """This process's model and admission gate, and the result store shared by every worker."""
    return current_app.extensions["depth_service"]


def read_upload() -> Tuple[bytes, str]:
    """The one file in the multipart field ``image``: its bytes (in memory only) and a safe stem."""
    if request.mimetype != "multipart/form-data":
        raise ApiError("unsupported_type", "Send the photo as multipart/form-data in the field 'image'.")
    files = request.files.getlist("image")
    if not files:
        others = ", ".join(repr(k) for k in request.files)
        raise ApiError("missing_file", "No photo was sent: put it in the form field 'image'"
                       + (f" (got {others})." if others else "."))
    if len(files) > 1:
        raise ApiError("too_many_files", f"Send one photo per request (got {len(files)} in 'image').")
    return files[0].read(), safe_stem(files[0].filename)


def read_json_object(example: str) -> Optional[Dict[str, Any]]:
    """The request's JSON object, or None when the body is not JSON. Anything else that says it is JSON
    (not an object, malformed, nested past the parser's stack, over ``JSON_MAX_BYTES``) is a 4xx
    naming ``example``, never a 500."""
    if not request.is_json:
        return None
    if (request.content_length or 0) > JSON_MAX_BYTES or len(request.get_data()) > JSON_MAX_BYTES:
        raise ApiError("too_large", f"A JSON body here is at most {JSON_MAX_BYTES // 1024} KB: {example}.")
    try:
        body = json.loads(request.get_data())
    except (ValueError, RecursionError):  # Python's decoder recurses once per level of nesting
        body = None
    if not isinstance(body, dict):
        raise ApiError("bad_request", f"Send a JSON object: {example}.")
    return body


def read_options(values: Mapping[str, Any], strict: bool) -> Options:
    """Options from form fields or query arguments; with ``strict`` an unknown name is an error. Without
    ``model``, the server's default model (the first it loads)."""
    named = {"model": depth_service().default_model}
    named.update((k, v) for k, v in values.items() if k not in NOT_OPTIONS)
    return Options.from_strings(named, strict)


def read_display_options(entry: Entry, values: Mapping[str, Any], skip: Collection[str] = ()) -> Options:
    """The display options in ``values`` for the cached ``entry`` (names in ``skip`` belong to someone
    else). The depth's own options may be repeated but not changed: a new depth needs POST
    /api/v1/render, which answers a new depth_id."""
    opts = read_options({**entry.depth_opts, **{k: v for k, v in values.items() if k not in skip}},
                        strict=True)
    if opts.depth_options() != dict(entry.depth_opts):
        raise ApiError("bad_option", "Options that change the depth (model, size, square, flip, upsampling) "
                       "need POST /api/v1/render, which answers a new depth_id.")
    return opts


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
            raise ApiError("bad_option", f"Option 'views': unknown view {name[:40]!r}; use all, none or "
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
        raise ApiError("bad_option", f"Option 'max_side': expected a whole number, got {str(raw)[:40]!r}.") \
            from None
    if not lo <= side <= hi:
        raise ApiError("bad_option", f"Option 'max_side': must be between {lo} and {hi}; got {side}.")
    return side


def read_format(values: Mapping[str, Any]) -> str:
    """``format`` of the images: ``png`` (the default, lossless) or ``jpeg`` (lossy, far smaller and faster
    at full size). It applies to the colour views and the photo; gray stays PNG (``pipeline.view_format``)."""
    raw = values.get("format")
    if raw is None or raw == "":
        return "png"
    fmt = str(raw).strip().lower()
    if fmt not in IMAGE_FORMATS:
        raise ApiError("bad_option", f"Option 'format': use {' or '.join(IMAGE_FORMATS)}; "
                       f"got {str(raw)[:40]!r}.")
    return fmt


def lookup(depth_id: Any) -> Optional[Entry]:
    """The stored entry of a well-formed ``depth_id``, else None (junk never reaches the store)."""
    text = str(depth_id or "")
    return depth_service().store.get(text) if DEPTH_ID.fullmatch(text) else None


NOT_CACHED = ("That depth map is no longer kept on this server (only recent results are, for a while "
              "after their last use, and a deleted one is gone); upload the photo again.")


def cached_entry(depth_id: Any) -> Entry:
    """The stored entry of ``depth_id``, or a 404 that tells the user what to do."""
    if not depth_id:
        raise ApiError("missing_depth_id", "Give the depth_id of an earlier result.")
    entry = lookup(depth_id)
    if entry is None:
        raise ApiError("not_cached", NOT_CACHED)
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


def attach(response: Response, filename: str) -> Response:
    """``response`` as a download named ``filename``."""
    # RFC 6266: an ASCII fallback plus the UTF-8 name, so names in any script survive
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}")
    return response


def send_bytes(data: bytes, mimetype: str, filename: str) -> Response:
    """``data`` as a download named ``filename``."""
    return attach(Response(data, mimetype=mimetype), filename)
