"""Studio routes under ``/api/v1`` beside ``app.api``: exports of a cached depth (16-bit PNG, PFM, PLY,
GLB, a zip of everything) and the colour legend. None of them runs the network."""

from __future__ import annotations

import io
import json
import time
from typing import Any, Dict, Mapping, Tuple

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request

from . import exports
from .api import _attach
from .cache import Entry
from .gate import Busy
from .legend import legend
from .measure import CalibrationError, calibrate, metric, points_from_json
from .options import OptionError, Options
from .pipeline import VIEWS, ImageError
from .service import safe_stem
from .web import cached_entry, fail, read_max_side, read_options, read_views, service

bp = Blueprint("studio", __name__, url_prefix="/api/v1")

LEGEND_VIEWS = ("heatmap", "overlay", "gray")


def _view_options(entry: Entry, args: Mapping[str, Any]) -> Options:
    """The display options in the query (as for a view PNG); the depth's own options may be repeated
    but not changed, since a new depth needs POST /api/v1/render."""
    skip = set(exports.SCENE_FIELDS) | {"view", "download"}
    values = {k: v for k, v in args.items() if k not in skip}
    opts = read_options({**entry.depth_opts, **values}, strict=True)
    if opts.depth_options() != dict(entry.depth_opts):
        fail(422, "bad_option", "Options that change the depth (size, square, flip, upsampling) need "
             "POST /api/v1/render, which answers a new depth_id.")
    return opts


def _scene_options(args: Mapping[str, Any]) -> exports.SceneOptions:
    try:
        return exports.SceneOptions.from_strings(args)
    except OptionError as exc:
        fail(422, "bad_option", f"Option '{exc.name}': {exc.message}.")


def _file(data: bytes, mimetype: str, filename: str) -> Response:
    response = Response(data, mimetype=mimetype)
    _attach(response, filename)
    return response


def _scene(entry: Entry, args: Mapping[str, Any]) -> Tuple[exports.SceneOptions, Any, Any]:
    """The scene options and the photo and depth downscaled to the vertex grid."""
    opts = _scene_options(args)
    photo, depth = service().preview(entry, opts.grid)
    return opts, photo, depth


@bp.get("/depth/<depth_id>.png")
def depth_png16(depth_id: str) -> Response:
    """The raw depth as a 16-bit grayscale PNG (min-max scaled; range in its text chunks)."""
    entry = cached_entry(depth_id)
    return _file(exports.depth_png16(entry.depth), "image/png", f"{entry.name}.depth16.png")


@bp.get("/depth/<depth_id>.pfm")
def depth_pfm(depth_id: str) -> Response:
    """The raw depth as PFM (float32, one channel)."""
    entry = cached_entry(depth_id)
    return _file(exports.depth_pfm(entry.depth), "application/octet-stream", f"{entry.name}.depth.pfm")


@bp.get("/depth/<depth_id>.ply")
def point_cloud(depth_id: str) -> Response:
    """A point cloud coloured by the photo (binary PLY); ``depth_scale``, ``fov``, ``grid`` in the query."""
    entry = cached_entry(depth_id)
    opts, photo, depth = _scene(entry, request.args)
    return _file(exports.point_cloud_ply(photo, depth, opts), "application/octet-stream",
                 f"{entry.name}.pointcloud.ply")


@bp.get("/depth/<depth_id>.glb")
def mesh(depth_id: str) -> Response:
    """A displaced-grid mesh with vertex colours (glTF 2.0 binary); same query as the point cloud."""
    entry = cached_entry(depth_id)
    opts, photo, depth = _scene(entry, request.args)
    response = _file(exports.mesh_glb(photo, depth, opts), "model/gltf-binary", f"{entry.name}.mesh.glb")
    response.headers["Cache-Control"] = "private, max-age=86400"  # the 3D preview asks again on reopen
    return response


@bp.get("/depth/<depth_id>.zip")
def bundle(depth_id: str) -> Response:
    """Everything for one photo: the photo, the three views (display options in the query), the raw
    depth as .npy, .pfm and 16-bit PNG, the point cloud and the mesh (scene options in the query)."""
    entry = cached_entry(depth_id)
    opts = _view_options(entry, request.args)
    scene, photo_small, depth_small = _scene(entry, request.args)
    svc = service()
    t0 = time.perf_counter()
    pngs, _ = svc.render(entry, opts, VIEWS)
    files: Dict[str, bytes] = {"photo.png": svc.photo_png(entry), **{f"{v}.png": pngs[v] for v in VIEWS},
                               "depth.npy": svc.depth_npy(entry), "depth.pfm": exports.depth_pfm(entry.depth),
                               "depth16.png": exports.depth_png16(entry.depth),
                               "pointcloud.ply": exports.point_cloud_ply(photo_small, depth_small, scene),
                               "mesh.glb": exports.mesh_glb(photo_small, depth_small, scene)}
    height, width = entry.depth.shape
    info = {"name": entry.name, "width": width, "height": height, "depth_id": entry.id,
            "options": opts.as_dict(), "scene": scene.as_dict(),
            "readme": {"max_side": svc.max_side, "colormap": opts.colormap,
                       "near": "dark" if opts.invert else "bright",
                       "grid_note": f"grid of at most {scene.grid} points per side",
                       "fov": scene.fov, "ratio": 1.0 + scene.depth_scale}}
    data = exports.bundle(entry.name, files, info)
    response = _file(data, "application/zip", f"{entry.name}.zip")
    response.headers["Server-Timing"] = f"zip;dur={(time.perf_counter() - t0) * 1000:.1f}"
    return response


@bp.get("/depth/<depth_id>/legend.json")
def legend_json(depth_id: str) -> Response:
    """The colour legend of ``view`` (heatmap, overlay or gray) with the display options in the query:
    colour stops, which end is near, raw-value ticks at their positions (none with CLAHE)."""
    entry = cached_entry(depth_id)
    view = request.args.get("view", "heatmap")
    if view not in LEGEND_VIEWS:
        fail(422, "bad_option",
             f"Option 'view': must be one of {', '.join(LEGEND_VIEWS)}; got {view[:40]!r}.")
    opts = _view_options(entry, request.args)
    return jsonify(legend(entry.depth, opts, gray=view == "gray"))


# batch ------------------------------------------------------------------------------------------------

BATCH_MAX_FILES = 20  # default of the BATCH_MAX_FILES setting: photos per batch request


def _batch_zip(entries: list, opts: Options, views: Tuple[str, ...], report: list) -> bytes:
    """One folder per photo (its views with ``opts``, raw depth as .npy and 16-bit PNG) and results.json."""
    files: Dict[str, bytes] = {}
    used: Dict[str, int] = {}
    for entry, row in zip(entries, (r for r in report if "depth_id" in r), strict=True):
        used[entry.name] = used.get(entry.name, 0) + 1
        folder = entry.name if used[entry.name] == 1 else f"{entry.name}-{used[entry.name]}"
        row["folder"] = folder
        pngs, _ = service().render(entry, opts, views)
        for view, png in pngs.items():
            files[f"{folder}/{view}.png"] = png
        files[f"{folder}/depth.npy"] = service().depth_npy(entry)
        files[f"{folder}/depth16.png"] = exports.depth_png16(entry.depth)
    files["results.json"] = json.dumps({"options": opts.as_dict(), "results": report}, indent=2).encode()
    return exports.zip_files(files)


@bp.post("/batch")
def batch() -> Response:
    """Several photos at once: every file in the multipart field ``image`` (up to ``BATCH_MAX_FILES``)
    with one set of options. Answers JSON, one result per file in the order sent (a depth_id, or the
    error of that file alone: one bad photo does not fail the others); with ``Accept: application/zip``,
    a zip with a folder per photo (its views, .npy and 16-bit PNG) and results.json."""
    if request.mimetype != "multipart/form-data":
        fail(415, "unsupported_type", "Send the photos as multipart/form-data in the field 'image'.")
    uploads = [f for f in request.files.getlist("image") if f.filename or f.content_length]
    limit = int(current_app.config.get("BATCH_MAX_FILES", BATCH_MAX_FILES))
    if not uploads:
        fail(400, "missing_file", "No photos were sent: put them in the form field 'image'.")
    if len(uploads) > limit:
        fail(413, "too_many_files", f"At most {limit} photos per batch (got {len(uploads)}).")
    opts = read_options(request.form, strict=True)
    views = read_views(request.form)
    best = request.accept_mimetypes.best_match(["application/json", "application/zip"])
    want_zip = best == "application/zip"
    report, entries = [], []
    for upload in uploads:
        name = safe_stem(upload.filename)
        try:
            result = service().infer(upload.read(), name, opts)
        except ImageError as exc:
            report.append({"name": upload.filename or name, "error": exc.code, "message": exc.message})
            continue
        except Busy as exc:
            report.append({"name": upload.filename or name, "error": "busy", "message": exc.message})
            continue
        height, width = result.entry.depth.shape
        entries.append(result.entry)
        report.append({"name": upload.filename or name, "depth_id": result.entry.id, "width": width,
                       "height": height, "cached": result.cached})
    if want_zip:
        response = _file(_batch_zip(entries, opts, views, report), "application/zip", "batch.zip")
    else:
        response = jsonify(results=report, options=opts.as_dict())
    return response


@bp.get("/batch.zip")
def batch_zip() -> Response:
    """The zip of earlier results (``depth_id`` repeated, in order) with the display options in the
    query: what the page's batch offers once its photos are done."""
    ids = request.args.getlist("depth_id")
    if not ids:
        fail(400, "missing_depth_id", "Give one depth_id per photo (depth_id=…&depth_id=…).")
    if len(ids) > int(current_app.config.get("BATCH_MAX_FILES", BATCH_MAX_FILES)):
        fail(413, "too_many_files", "Too many depth_id values for one batch.")
    entries = [cached_entry(i) for i in ids]
    values = {k: v for k, v in request.args.items() if k not in ("depth_id", "views")}
    opts = read_options({**values}, strict=True)
    views = read_views(request.args)
    report = [{"name": e.name, "depth_id": e.id, "width": e.depth.shape[1], "height": e.depth.shape[0]}
              for e in entries]
    return _file(_batch_zip(entries, opts, views, report), "application/zip", "batch.zip")


# measure ----------------------------------------------------------------------------------------------

@bp.get("/depth/<depth_id>/preview.npy")
def depth_preview(depth_id: str) -> Response:
    """The raw depth area-averaged to at most ``max_side`` (default 512) pixels on its longer side, as
    float32 .npy: what the page reads the value under the cursor from."""
    entry = cached_entry(depth_id)
    max_side = read_max_side(request.args) or 512
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(service().preview(entry, max_side)[1], dtype="<f4"), allow_pickle=False)
    response = Response(buf.getvalue(), mimetype="application/octet-stream")
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


@bp.post("/depth/<depth_id>/calibrate")
def calibrate_depth(depth_id: str) -> Response:
    """Fits metric inverse depth ``1/Z = scale * relative + shift`` (least squares) to two or more points
    of known distance: JSON ``{"points": [{"u": 0…1, "v": 0…1, "metres": m}, …]}``, (u, v) the point's
    relative position in the photo. Answers the scale, shift, each point's fitted distance and the RMSE."""
    entry = cached_entry(depth_id)
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        fail(400, "bad_request",
             'Send a JSON object: {"points": [{"u": …, "v": …, "metres": …}, …]}.')
    try:
        points = points_from_json(body.get("points"))
        result = calibrate(entry.depth, points)
    except CalibrationError as exc:
        fail(422, "bad_calibration", f"Calibration: {exc}.")
    fitted = metric(np.asarray(result.samples, dtype=np.float32), result.scale, result.shift)
    rows = [{"u": u, "v": v, "metres": m, "relative": s,
             "fitted_metres": float(f) if np.isfinite(f) else None}
            for (u, v, m), s, f in zip(points, result.samples, fitted, strict=True)]
    rmse = result.rmse_m if np.isfinite(result.rmse_m) else None  # JSON has no NaN
    return jsonify(scale=result.scale, shift=result.shift, rmse_m=rmse, points=rows)


def _float_arg(name: str) -> float:
    raw = request.args.get(name)
    try:
        value = float(str(raw))
    except ValueError:
        fail(422, "bad_option", f"Option '{name}': expected a number, got {str(raw)[:40]!r}.")
    if not np.isfinite(value):
        fail(422, "bad_option", f"Option '{name}': must be a finite number.")
    return value


@bp.get("/depth/<depth_id>/metric.npy")
def metric_npy(depth_id: str) -> Response:
    """Metric depth in metres (float32 H×W, NaN where the fit puts a pixel at or beyond infinity) from
    the ``scale`` and ``shift`` that POST …/calibrate answered."""
    entry = cached_entry(depth_id)
    scale, shift = _float_arg("scale"), _float_arg("shift")
    if not scale > 0:
        fail(422, "bad_option", "Option 'scale': must be above 0 (nearer must mean closer).")
    buf = io.BytesIO()
    np.save(buf, metric(entry.depth, scale, shift), allow_pickle=False)
    return _file(buf.getvalue(), "application/octet-stream", f"{entry.name}.metres.npy")
