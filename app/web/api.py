"""The JSON API under ``/api/v1``: depth of an upload, re-render from the cache, raw depth, view images."""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Dict, Iterator, Mapping, Optional

from flask import Blueprint, Response, request

from ..options import Options
from ..imaging.pipeline import EXTENSIONS, IMAGE_FORMATS, view_format
from ..serving.service import Result
from .errors import ApiError
from .reading import (NOT_CACHED, attach, cached_entry, depth_service, read_display_options, read_format,
                      read_json_object, read_max_side, read_options, read_upload, read_views)

bp = Blueprint("api", __name__, url_prefix="/api/v1")

IMAGE_VIEWS = ("heatmap", "overlay", "gray", "photo")
OWNER_HEADER = "X-Owner-Token"
OWNER_TOKEN = re.compile(r"[0-9a-f]{32}")
BASE64_SLICE = 3 << 18  # image bytes base64-encoded at a time (a multiple of 3: the slices' text joins up)


def json_with_images(fields: Mapping[str, Any], images: Mapping[str, bytes], fmt: str) -> Iterator[bytes]:
    """``fields`` as one JSON object with ``views`` (view -> data URI) last, written a slice at a time:
    the answer never holds more than the encoded images and one slice of their base64 text. Built whole,
    a 12 MP answer with three full-size PNGs held each image about four times over (bytes, base64,
    the JSON text, its UTF-8)."""
    yield json.dumps(fields)[:-1].encode() + b', "views": {'
    for i, (view, data) in enumerate(images.items()):
        mime = IMAGE_FORMATS[view_format(view, fmt)]
        yield (b", " if i else b"") + json.dumps(view).encode() + f': "data:{mime};base64,'.encode()
        whole = memoryview(data)
        for at in range(0, len(whole), BASE64_SLICE):
            yield base64.b64encode(whole[at:at + BASE64_SLICE])
        yield b'"'
    yield b"}}"


def _answer(result: Result, opts: Options, views: tuple, fmt: str) -> Response:
    """JSON with the views as data URIs (PNG, or JPEG with ``format=jpeg``), or, when the client accepts
    the image's type before JSON and asks for one view, that image itself."""
    mimes = {IMAGE_FORMATS[view_format(v, fmt)] for v in views} or {IMAGE_FORMATS[fmt]}
    best = request.accept_mimetypes.best_match(["application/json", *sorted(mimes)])
    image_wanted = best is not None and best != "application/json"
    if image_wanted and len(views) != 1:
        raise ApiError("not_acceptable", f"Accept: {best} returns one image: ask for exactly one view "
                       "(for example view=heatmap).")
    images, render_ms = depth_service().render(result.entry, opts, views, fmt=fmt)
    timings = {**result.timings_ms, **render_ms}
    timings["total"] = round(sum(timings.values()), 2)
    if image_wanted:
        response = Response(images[views[0]], mimetype=best)
    else:
        height, width = result.entry.depth.shape
        fields = dict(width=width, height=height, depth_id=result.entry.id, cached=result.cached,
                      options=opts.as_dict(), timings_ms=timings)
        if result.token:
            fields["owner_token"] = result.token
        response = Response(json_with_images(fields, images, fmt), mimetype="application/json")
    response.headers["X-Depth-Id"] = result.entry.id
    if result.token:  # the uploader's alone: never kept by a cache on the way
        response.headers[OWNER_HEADER] = result.token
        response.headers["Cache-Control"] = "no-store"
    # the standard header browsers' developer tools show next to the request
    response.headers["Server-Timing"] = ", ".join(f"{k};dur={v}" for k, v in timings.items())
    return response


def read_owner_token() -> Optional[str]:
    """The request's ``X-Owner-Token``: None if it has none, a 400 if it is not a token of this server's
    form."""
    token = request.headers.get(OWNER_HEADER)
    if token is None:
        return None
    if not OWNER_TOKEN.fullmatch(token.strip()):
        raise ApiError("bad_token", f"{OWNER_HEADER} must be the 32 hex digits an upload answered.")
    return token.strip()


@bp.post("/depth")
def depth() -> Response:
    """Multipart ``image`` plus options -> views, a ``depth_id`` for later re-renders and an
    ``owner_token`` for DELETE. With the ``X-Owner-Token`` of an earlier upload of the same photo, that
    result again, without inference."""
    data, name = read_upload()
    opts = read_options(request.form, strict=True)
    views = read_views(request.form)
    fmt = read_format(request.form)
    return _answer(depth_service().from_upload(data, name, opts, read_owner_token()), opts, views, fmt)


def _body() -> Mapping[str, Any]:
    body = read_json_object('{"depth_id": …, and option names and values}')
    return request.form if body is None else body


@bp.post("/render")
def render() -> Response:
    """``depth_id`` plus options -> views from the cached depth. Options that change the depth itself
    give a new ``depth_id``: upsampling ones re-run from the cached network output, size, square and
    flip re-run the network on the cached upload."""
    body = _body()
    entry = cached_entry(body.get("depth_id"))
    values: Dict[str, Any] = {**entry.depth_opts, **body}
    opts = read_options(values, strict=True)
    views = read_views(body)
    fmt = read_format(body)
    return _answer(depth_service().for_options(entry, opts), opts, views, fmt)


@bp.get("/depth/<depth_id>.npy")
def depth_npy(depth_id: str) -> Response:
    """The raw float32 depth (relative inverse depth, larger = nearer) while it is cached."""
    entry = cached_entry(depth_id)
    return attach(Response(depth_service().depth_npy(entry), mimetype="application/octet-stream"),
                  f"{entry.name}.depth.npy")


@bp.get("/depth/<depth_id>/<view>.png")
def view_png(depth_id: str, view: str) -> Response:
    """One view (or the photo) rendered from the cache with the options in the query string;
    ``max_side=N`` gives a preview whose longer side is at most N pixels (the page uses these);
    ``format=jpeg`` a JPEG of a colour view or the photo (gray stays PNG)."""
    entry = cached_entry(depth_id)
    if view not in IMAGE_VIEWS:
        raise ApiError("not_found", f"Unknown image {view[:40]!r}; use one of {', '.join(IMAGE_VIEWS)}.")
    max_side = read_max_side(request.args)
    fmt = view_format(view, read_format(request.args))
    opts = None if view == "photo" else read_display_options(entry, request.args)
    service = depth_service()
    # a full-size image of a large photo waits in the gate; the page's previews never do
    with service.slot(entry.depth.size if max_side is None else min(entry.depth.size, max_side ** 2)):
        if opts is None:
            image = service.photo_image(entry, max_side, fmt)
        else:
            image = service.render(entry, opts, (view,), max_side, fmt)[0][view]
    response = Response(image, mimetype=IMAGE_FORMATS[fmt])
    # the same id and options always give the same image
    response.headers["Cache-Control"] = "private, max-age=86400"
    if request.args.get("download"):
        attach(response, f"{entry.name}.{view}.{EXTENSIONS[fmt]}")
    return response


@bp.delete("/depth/<depth_id>")
def delete_depth(depth_id: str) -> Response:
    """Deletes the result (its upload, photo and depth) at once, on every worker, for whoever uploaded
    it: 204 with its ``X-Owner-Token``, 403 without it, 404 if it was not kept."""
    token = read_owner_token()
    if token is None:
        raise ApiError("not_owner", f"Deleting a result needs the {OWNER_HEADER} its upload answered.")
    entry = cached_entry(depth_id)
    if not depth_service().owns(entry, token):
        raise ApiError("not_owner", f"That {OWNER_HEADER} is not the one of the upload that made this "
                       "result; only its uploader may delete it.")
    if not depth_service().store.delete(depth_id):
        raise ApiError("not_cached", NOT_CACHED)
    return Response(status=204)
