"""Several photos in one request (``/api/v1/batch``) and the zip of earlier results
(``/api/v1/batch.zip``)."""

from __future__ import annotations

import json
from typing import Dict, List, Tuple

from flask import Blueprint, Response, current_app, jsonify, request

from .. import exports
from ..store import Entry
from ..gate import Busy
from ..options import Options
from ..pipeline import ImageError
from ..service import safe_stem
from .errors import ApiError
from .reading import cached_entry, depth_service, read_options, read_views, send_bytes

bp = Blueprint("batch", __name__, url_prefix="/api/v1")


def _zip(entries: List[Entry], opts: Options, views: Tuple[str, ...], report: List[dict]) -> bytes:
    """One folder per photo (its views with ``opts``, raw depth as .npy and 16-bit PNG) and results.json."""
    files: Dict[str, bytes] = {}
    used: Dict[str, int] = {}
    service = depth_service()
    for entry, row in zip(entries, (r for r in report if "depth_id" in r), strict=True):
        used[entry.name] = used.get(entry.name, 0) + 1
        folder = entry.name if used[entry.name] == 1 else f"{entry.name}-{used[entry.name]}"
        row["folder"] = folder
        pngs, _ = service.render(entry, opts, views)
        for view, png in pngs.items():
            files[f"{folder}/{view}.png"] = png
        files[f"{folder}/depth.npy"] = service.depth_npy(entry)
        files[f"{folder}/depth16.png"] = exports.depth_png16(entry.depth)
    files["results.json"] = json.dumps({"options": opts.as_dict(), "results": report}, indent=2).encode()
    return exports.zip_files(files)


def _limit() -> int:
    return int(current_app.config["BATCH_MAX_FILES"])


@bp.post("/batch")
def batch() -> Response:
    """Several photos at once: every file in the multipart field ``image`` (up to ``BATCH_MAX_FILES``)
    with one set of options. Answers JSON, one result per file in the order sent (a depth_id, or the
    error of that file alone: one bad photo does not fail the others); with ``Accept: application/zip``,
    a zip with a folder per photo (its views, .npy and 16-bit PNG) and results.json."""
    if request.mimetype != "multipart/form-data":
        raise ApiError("unsupported_type", "Send the photos as multipart/form-data in the field 'image'.")
    uploads = [f for f in request.files.getlist("image") if f.filename or f.content_length]
    if not uploads:
        raise ApiError("missing_file", "No photos were sent: put them in the form field 'image'.")
    if len(uploads) > _limit():
        raise ApiError("too_many_files", f"At most {_limit()} photos per batch (got {len(uploads)}).",
                       status=413)
    opts = read_options(request.form, strict=True)
    views = read_views(request.form)
    best = request.accept_mimetypes.best_match(["application/json", "application/zip"])
    want_zip = best == "application/zip"
    report, entries = [], []
    for upload in uploads:
        name = safe_stem(upload.filename)
        try:
            result = depth_service().from_upload(upload.read(), name, opts)
        except ImageError as exc:  # one bad photo does not fail the others
            report.append({"name": upload.filename or name, "error": exc.code, "message": exc.message})
            continue
        except Busy as exc:
            report.append({"name": upload.filename or name, "error": "busy", "message": exc.message})
            continue
        height, width = result.entry.depth.shape
        entries.append(result.entry)
        report.append({"name": upload.filename or name, "depth_id": result.entry.id, "width": width,
                       "height": height, "cached": result.cached, "owner_token": result.token})
    if want_zip:
        return send_bytes(_zip(entries, opts, views, report), "application/zip", "batch.zip")
    return jsonify(results=report, options=opts.as_dict())


@bp.get("/batch.zip")
def batch_zip() -> Response:
    """The zip of earlier results (``depth_id`` repeated, in order) with the display options in the
    query: what the page's batch offers once its photos are done."""
    ids = request.args.getlist("depth_id")
    if not ids:
        raise ApiError("missing_depth_id", "Give one depth_id per photo (depth_id=…&depth_id=…).")
    if len(ids) > _limit():
        raise ApiError("too_many_files", "Too many depth_id values for one batch.", status=413)
    entries = [cached_entry(i) for i in ids]
    opts = read_options({k: v for k, v in request.args.items() if k not in ("depth_id", "views")},
                        strict=True)
    views = read_views(request.args)
    report = [{"name": e.name, "depth_id": e.id, "width": e.depth.shape[1], "height": e.depth.shape[0]}
              for e in entries]
    return send_bytes(_zip(entries, opts, views, report), "application/zip", "batch.zip")
