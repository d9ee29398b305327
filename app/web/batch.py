"""Several photos in one request (``/api/v1/batch``) and the zip of earlier results
(``/api/v1/batch.zip``).

A batch's work is bounded: at most ``BATCH_MAX_FILES`` photos (a depth id named twice counts once) and
``BATCH_MAX_PIXELS`` pixels in all. Its zip is streamed: each photo's files are made inside the
admission gate, like an inference, then sent before the next photo is begun, so a worker holds one
photo's files at a time whatever the batch's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from flask import Blueprint, Response, current_app, jsonify, request

from ..imaging import exports
from ..serving.gate import Busy
from ..options import Options
from ..imaging.pipeline import ImageError, working_size
from ..serving.service import DepthService, safe_stem
from ..serving.store import Entry, StoreUnavailable, npy_parts
from ..imaging.zipstream import ZipStream
from .errors import ApiError, as_api_error
from .exports import begun
from .reading import NOT_CACHED, attach, cached_entry, depth_service, read_options, read_views

bp = Blueprint("batch", __name__, url_prefix="/api/v1")

# what fails one photo of a batch rather than the whole answer
PHOTO_ERRORS = (ImageError, Busy, StoreUnavailable, ApiError)


@dataclass
class Photo:
    """One photo of a batch: its row of the answer (and of results.json), and how to get its result
    when its turn comes (an inference, or a read from the store)."""

    row: Dict[str, Any]
    result: Callable[[], Entry]


def _limits() -> Tuple[int, int]:
    return int(current_app.config["BATCH_MAX_FILES"]), int(current_app.config["BATCH_MAX_PIXELS"])


def _made(photo: Photo, service: DepthService, opts: Options, views: Tuple[str, ...],
          began: bool) -> Optional[Tuple[Entry, Dict[str, bytes]]]:
    """One photo's result and its views and 16-bit depth as PNG, made inside the gate: a photo's worth of
    rendering waits its turn like an inference. Until the answer has begun, a full line (or a store that
    is down) fails the whole answer; after, the line is waited out (``DepthService.patient_slot``), and
    what still fails is noted in the photo's row (None). A bad photo is only ever its row's error."""
    try:
        entry = photo.result()
        with service.patient_slot() if began else service.gate.slot():
            pngs, _ = service.render(entry, opts, views)
            pngs["depth16"] = exports.depth_png16(entry.depth)
    except PHOTO_ERRORS as exc:
        if not began and not isinstance(exc, ImageError):
            raise
        err = as_api_error(exc)
        photo.row.update(error=err.error, message=err.message)
        return None
    return entry, pngs


def _zip(photos: Iterable[Photo], opts: Options, views: Tuple[str, ...],
         service: DepthService) -> Iterator[bytes]:
    """The batch's zip, made while it is sent: a folder per photo (its views, ``depth.npy`` and
    ``depth16.png``), then ``results.json`` with every photo's row."""
    out, report, used, began = ZipStream(), [], {}, False
    for photo in photos:
        report.append(photo.row)
        made = None if "error" in photo.row else _made(photo, service, opts, views, began)
        if made is None:
            continue
        entry, files = made
        del made  # each photo's arrays and files go once sent, not when the next is made
        used[entry.name] = used.get(entry.name, 0) + 1
        folder = entry.name if used[entry.name] == 1 else f"{entry.name}-{used[entry.name]}"
        photo.row["folder"] = folder
        began = True
        for name in list(files):
            yield from out.add(f"{folder}/{name}.png", files.pop(name))
        yield from out.add_parts(f"{folder}/depth.npy", npy_parts(entry.depth))
        del entry, files
    results = {"options": opts.as_dict(), "results": report}
    yield from out.add("results.json", json.dumps(results, indent=2).encode(), deflate=True)
    yield from out.close()


def _send_zip(photos: Iterable[Photo], opts: Options, views: Tuple[str, ...]) -> Response:
    """The streamed zip; its first photo is made before the answer begins, so that a busy server answers
    503 rather than a zip of refusals."""
    body = begun(_zip(photos, opts, views, depth_service()))
    return attach(Response(body, mimetype="application/zip"), "batch.zip")


def _computed(row: Dict[str, Any], service: DepthService, data: bytes, name: str, opts: Options) -> Entry:
    """The depth of one upload (an inference, or the store's copy), its id and size noted in ``row``."""
    result = service.from_upload(data, name, opts)
    height, width = result.entry.depth.shape
    row.update(depth_id=result.entry.id, width=width, height=height, cached=result.cached,
               owner_token=result.token)
    return result.entry


def _uploads(opts: Options) -> List[Photo]:
    """The uploads in ``image`` as photos, in order; a photo whose header is unreadable or whose pixels
    would take the batch past ``BATCH_MAX_PIXELS`` gets its error row at once."""
    max_files, max_pixels = _limits()
    uploads = [f for f in request.files.getlist("image") if f.filename or f.content_length]
    if not uploads:
        raise ApiError("missing_file", "No photos were sent: put them in the form field 'image'.")
    if len(uploads) > max_files:
        raise ApiError("too_many_files", f"At most {max_files} photos per batch (got {len(uploads)}).",
                       status=413)
    service, photos, total = depth_service(), [], 0
    for upload in uploads:
        data, name = upload.read(), safe_stem(upload.filename)
        row: Dict[str, Any] = {"name": upload.filename or name}
        try:
            height, width = working_size(data, service.max_side)
        except ImageError as exc:
            row.update(error=exc.code, message=exc.message)
        else:
            if total + height * width > max_pixels:
                row.update(error="too_large", message=f"This photo would take the batch past "
                           f"{max_pixels / 1e6:g} megapixels in all (DEPTHMAP_BATCH_MAX_PIXELS); send it "
                           "in another batch.")
            else:
                total += height * width
        photos.append(Photo(row, lambda r=row, d=data, n=name: _computed(r, service, d, n, opts)))
    return photos


@bp.post("/batch")
def batch() -> Response:
    """Several photos at once: every file in the multipart field ``image`` (up to ``BATCH_MAX_FILES``,
    ``BATCH_MAX_PIXELS`` in all) with one set of options. Answers JSON, one result per file in the order
    sent (a depth_id, or the error of that file alone: one bad photo does not fail the others); with
    ``Accept: application/zip``, a zip with a folder per photo (its views, .npy and 16-bit PNG) and
    results.json, streamed."""
    if request.mimetype != "multipart/form-data":
        raise ApiError("unsupported_type", "Send the photos as multipart/form-data in the field 'image'.")
    opts = read_options(request.form, strict=True)
    depth_service().model_for(opts)  # a model this server does not load fails the batch, not each photo
    views = read_views(request.form)
    photos = _uploads(opts)
    if request.accept_mimetypes.best_match(["application/json", "application/zip"]) == "application/zip":
        return _send_zip(photos, opts, views)
    for photo in photos:
        if "error" in photo.row:
            continue
        try:
            photo.result()
        except (ImageError, Busy) as exc:  # one bad photo does not fail the others
            err = as_api_error(exc)
            photo.row.update(error=err.error, message=err.message)
    return jsonify(results=[photo.row for photo in photos], options=opts.as_dict())


@bp.get("/batch.zip")
def batch_zip() -> Response:
    """The zip of earlier results (``depth_id`` repeated, in order; a repeated id counts once) with the
    display options in the query: what the page's batch offers once its photos are done. Streamed."""
    max_files, max_pixels = _limits()
    ids = list(dict.fromkeys(request.args.getlist("depth_id")))
    if not ids:
        raise ApiError("missing_depth_id", "Give one depth_id per photo (depth_id=…&depth_id=…).")
    if len(ids) > max_files:
        raise ApiError("too_many_files", f"At most {max_files} depth_id values per batch (got {len(ids)}).",
                       status=413)
    opts = read_options({k: v for k, v in request.args.items() if k not in ("depth_id", "views")},
                        strict=True)
    views = read_views(request.args)
    service, photos, total = depth_service(), [], 0
    for depth_id in ids:  # each result is read once here for its size, and again when its turn comes
        entry = cached_entry(depth_id)
        height, width = entry.depth.shape
        total += height * width
        photos.append(Photo({"name": entry.name, "depth_id": entry.id, "width": width, "height": height},
                            lambda i=depth_id: _stored(service, i)))
        del entry
    if total > max_pixels:
        raise ApiError("too_large", f"These results add up to {total / 1e6:.1f} megapixels; one batch zip "
                       f"renders at most {max_pixels / 1e6:g} (DEPTHMAP_BATCH_MAX_PIXELS): ask for fewer.")
    return _send_zip(photos, opts, views)


def _stored(service: DepthService, depth_id: str) -> Entry:
    """The stored result of a well-formed ``depth_id``, or ``not_cached`` if it went since the answer
    began (the answer runs outside the request's context: no ``lookup``)."""
    entry = service.store.get(depth_id)
    if entry is None:
        raise ApiError("not_cached", NOT_CACHED)
    return entry
