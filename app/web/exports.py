"""Files of a cached depth under ``/api/v1/depth/<id>``: 16-bit PNG, PFM, point cloud (PLY), mesh (GLB),
a zip of everything, and the colour legend of a view. None of them runs the network."""

from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Tuple

from flask import Blueprint, Response, jsonify, request

from .. import exports
from ..store import Entry
from ..legend import legend
from ..options import SceneOptions
from ..pipeline import VIEWS
from .errors import ApiError
from .reading import cached_entry, depth_service, read_display_options, send_bytes

bp = Blueprint("exports", __name__, url_prefix="/api/v1")

LEGEND_VIEWS = ("heatmap", "overlay", "gray")
NOT_DISPLAY = frozenset(SceneOptions.names()) | {"view"}  # query names that are not display options


def _scene(entry: Entry, args: Mapping[str, Any]) -> Tuple[SceneOptions, Any, Any]:
    """The scene options and the photo and depth downscaled to the vertex grid."""
    opts = SceneOptions.from_strings(args)
    photo, depth = depth_service().preview(entry, opts.grid)
    return opts, photo, depth


@bp.get("/depth/<depth_id>.png")
def depth_png16(depth_id: str) -> Response:
    """The raw depth as a 16-bit grayscale PNG (min-max scaled; range in its text chunks)."""
    entry = cached_entry(depth_id)
    return send_bytes(exports.depth_png16(entry.depth), "image/png", f"{entry.name}.depth16.png")


@bp.get("/depth/<depth_id>.pfm")
def depth_pfm(depth_id: str) -> Response:
    """The raw depth as PFM (float32, one channel)."""
    entry = cached_entry(depth_id)
    return send_bytes(exports.depth_pfm(entry.depth), "application/octet-stream", f"{entry.name}.depth.pfm")


@bp.get("/depth/<depth_id>.exr")
def depth_exr(depth_id: str) -> Response:
    """The raw depth as OpenEXR (float32, one channel ``Y``, unscaled; range in its header)."""
    entry = cached_entry(depth_id)
    return send_bytes(exports.depth_exr(entry.depth), "image/x-exr", f"{entry.name}.depth.exr")


@bp.get("/depth/<depth_id>.ply")
def point_cloud(depth_id: str) -> Response:
    """A point cloud coloured by the photo (binary PLY); ``depth_scale``, ``fov``, ``grid`` in the query."""
    entry = cached_entry(depth_id)
    opts, photo, depth = _scene(entry, request.args)
    return send_bytes(exports.point_cloud_ply(photo, depth, opts), "application/octet-stream",
                      f"{entry.name}.pointcloud.ply")


@bp.get("/depth/<depth_id>.glb")
def mesh(depth_id: str) -> Response:
    """A displaced-grid mesh with vertex colours (glTF 2.0 binary); same query as the point cloud."""
    entry = cached_entry(depth_id)
    opts, photo, depth = _scene(entry, request.args)
    response = send_bytes(exports.mesh_glb(photo, depth, opts), "model/gltf-binary", f"{entry.name}.mesh.glb")
    response.headers["Cache-Control"] = "private, max-age=86400"  # the 3D preview asks again on reopen
    return response


@bp.get("/depth/<depth_id>.zip")
def bundle(depth_id: str) -> Response:
    """Everything for one photo: the photo, the three views (display options in the query), the raw
    depth as .npy, .pfm, .exr and 16-bit PNG, the point cloud and the mesh (scene options in the query)."""
    entry = cached_entry(depth_id)
    opts = read_display_options(entry, request.args, skip=NOT_DISPLAY)
    scene, photo_small, depth_small = _scene(entry, request.args)
    service = depth_service()
    t0 = time.perf_counter()
    pngs, _ = service.render(entry, opts, VIEWS)
    files: Dict[str, bytes] = {
        "photo.png": service.photo_image(entry), **{f"{v}.png": pngs[v] for v in VIEWS},
        "depth.npy": service.depth_npy(entry), "depth.pfm": exports.depth_pfm(entry.depth),
        "depth.exr": exports.depth_exr(entry.depth), "depth16.png": exports.depth_png16(entry.depth),
        "pointcloud.ply": exports.point_cloud_ply(photo_small, depth_small, scene),
        "mesh.glb": exports.mesh_glb(photo_small, depth_small, scene)}
    height, width = entry.depth.shape
    info = {"name": entry.name, "width": width, "height": height, "depth_id": entry.id,
            "options": opts.as_dict(), "scene": scene.as_dict(),
            "readme": {"max_side": service.max_side, "colormap": opts.colormap,
                       "near": "dark" if opts.invert else "bright",
                       "grid_note": f"grid of at most {scene.grid} points per side",
                       "fov": scene.fov, "ratio": 1.0 + scene.depth_scale}}
    response = send_bytes(exports.bundle(entry.name, files, info), "application/zip", f"{entry.name}.zip")
    response.headers["Server-Timing"] = f"zip;dur={(time.perf_counter() - t0) * 1000:.1f}"
    return response


@bp.get("/depth/<depth_id>/legend.json")
def legend_json(depth_id: str) -> Response:
    """The colour legend of ``view`` (heatmap, overlay or gray) with the display options in the query:
    colour stops, which end is near, raw-value ticks at their positions (none with CLAHE)."""
    entry = cached_entry(depth_id)
    view = request.args.get("view", "heatmap")
    if view not in LEGEND_VIEWS:
        raise ApiError("bad_option",
                       f"Option 'view': must be one of {', '.join(LEGEND_VIEWS)}; got {view[:40]!r}.")
    opts = read_display_options(entry, request.args, skip=NOT_DISPLAY)
    return jsonify(legend(entry.depth, opts, gray=view == "gray"))
