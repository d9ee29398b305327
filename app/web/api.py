"""The JSON API under ``/api/v1``: depth of an upload, re-render from the cache, raw depth, view images."""

from __future__ import annotations

import base64
from typing import Any, Dict, Mapping

from flask import Blueprint, Response, jsonify, request

from ..options import Options
from ..service import Result
from .errors import ApiError
from .reading import (DEPTH_ID, NOT_CACHED, attach, cached_entry, depth_service, read_display_options,
                      read_json_object, read_max_side, read_options, read_upload, read_views)

bp = Blueprint("api", __name__, url_prefix="/api/v1")

IMAGE_VIEWS = ("heatmap", "overlay", "gray", "photo")


def _answer(result: Result, opts: Options, views: tuple) -> Response:
    """JSON with data-URI PNGs, or with ``Accept: image/png`` and one view, the PNG itself."""
    png_wanted = request.accept_mimetypes.best_match(["application/json", "image/png"]) == "image/png"
    if png_wanted and len(views) != 1:
        raise ApiError("not_acceptable", "Accept: image/png returns one image: ask for exactly one view "
                       "(for example view=heatmap).")
    pngs, render_ms = depth_service().render(result.entry, opts, views)
    timings = {**result.timings_ms, **render_ms}
    timings["total"] = round(sum(timings.values()), 2)
    if png_wanted:
        response = Response(pngs[views[0]], mimetype="image/png")
    else:
        height, width = result.entry.depth.shape
        response = jsonify(
            width=width, height=height, depth_id=result.entry.id, cached=result.cached,
            options=opts.as_dict(),
            views={v: "data:image/png;base64," + base64.b64encode(png).decode() for v, png in pngs.items()},
            timings_ms=timings)
    response.headers["X-Depth-Id"] = result.entry.id
    # the standard header browsers' developer tools show next to the request
    response.headers["Server-Timing"] = ", ".join(f"{k};dur={v}" for k, v in timings.items())
    return response


@bp.post("/depth")
def depth() -> Response:
    """Multipart ``image`` plus options -> views and a ``depth_id`` for later re-renders."""
    data, name = read_upload()
    opts = read_options(request.form, strict=True)
    views = read_views(request.form)
    return _answer(depth_service().from_upload(data, name, opts), opts, views)


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
    return _answer(depth_service().for_options(entry, opts), opts, views)


@bp.get("/depth/<depth_id>.npy")
def depth_npy(depth_id: str) -> Response:
    """The raw float32 depth (relative inverse depth, larger = nearer) while it is cached."""
    entry = cached_entry(depth_id)
    return attach(Response(depth_service().depth_npy(entry), mimetype="application/octet-stream"),
                  f"{entry.name}.depth.npy")


@bp.get("/depth/<depth_id>/<view>.png")
def view_png(depth_id: str, view: str) -> Response:
    """One view (or the photo) rendered from the cache with the options in the query string;
    ``max_side=N`` gives a preview whose longer side is at most N pixels (the page uses these)."""
    entry = cached_entry(depth_id)
    if view not in IMAGE_VIEWS:
        raise ApiError("not_found", f"Unknown image {view[:40]!r}; use one of {', '.join(IMAGE_VIEWS)}.")
    max_side = read_max_side(request.args)
    if view == "photo":
        png = depth_service().photo_png(entry, max_side)
    else:
        opts = read_display_options(entry, request.args)
        png = depth_service().render(entry, opts, (view,), max_side)[0][view]
    response = Response(png, mimetype="image/png")
    # the same id and options always give the same image
    response.headers["Cache-Control"] = "private, max-age=86400"
    if request.args.get("download"):
        attach(response, f"{entry.name}.{view}.png")
    return response


@bp.delete("/depth/<depth_id>")
def delete_depth(depth_id: str) -> Response:
    """Deletes the result (its upload, photo and depth) at once, on every worker: 204, or 404 if it was
    not kept."""
    if not (DEPTH_ID.fullmatch(depth_id) and depth_service().store.delete(depth_id)):
        raise ApiError("not_cached", NOT_CACHED)
    return Response(status=204)
