"""Files of a cached depth under ``/api/v1/depth/<id>``: 16-bit PNG, PFM, point cloud (PLY), mesh (GLB),
a zip of everything, and the colour legend of a view. None of them runs the network.

Large files are sent as they are made, in pieces, and never joined into one copy; the work of a large
photo at full size waits in the admission gate like an inference (``DepthService.slot``).
"""

from __future__ import annotations

import logging
from itertools import chain
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from flask import Blueprint, Response, jsonify, request

from ..imaging import exports
from ..serving.gate import Busy
from ..imaging.legend import legend
from ..options import SceneOptions
from ..imaging.pipeline import VIEWS
from ..serving.service import DepthService
from ..serving.store import Entry, npy_parts
from ..imaging.zipstream import Buffer, slices
from .errors import ApiError
from .reading import attach, cached_entry, depth_service, read_display_options, send_bytes

bp = Blueprint("exports", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)

LEGEND_VIEWS = ("heatmap", "overlay", "gray")
NOT_DISPLAY = frozenset(SceneOptions.names()) | {"view"}  # query names that are not display options


def begun(body: Iterator[bytes]) -> Iterator[bytes]:
    """``body`` with its first piece made now, before the answer's status is sent: what fails that early
    (a full gate, a store that is down) is answered as an error, not as a broken download."""
    first = next(body)

    def whole() -> Iterator[bytes]:  # a generator, so that the server's close() reaches ``body``
        yield first
        yield from body
    return whole()


def send_parts(parts: Iterable[Buffer], mimetype: str, filename: Optional[str],
               length: Optional[int] = None) -> Response:
    """``parts`` (bytes and arrays' memory) one after the other, with their ``length`` (by default, of
    every part: then ``parts`` is read as a list first), as a download named ``filename`` (None: not a
    download): sent a slice at a time, never joined into one copy."""
    if length is None:
        parts = list(parts)
        length = sum(memoryview(p).nbytes for p in parts)
    response = Response(slices(parts), mimetype=mimetype)
    response.headers["Content-Length"] = str(length)
    return attach(response, filename) if filename else response


@bp.get("/depth/<depth_id>.png")
def depth_png16(depth_id: str) -> Response:
    """The raw depth as a 16-bit grayscale PNG (min-max scaled; range in its text chunks)."""
    entry = cached_entry(depth_id)
    with depth_service().slot(entry.depth.size):
        png = exports.depth_png16(entry.depth)
    return send_bytes(png, "image/png", f"{entry.name}.depth16.png")


@bp.get("/depth/<depth_id>.pfm")
def depth_pfm(depth_id: str) -> Response:
    """The raw depth as PFM (float32, one channel)."""
    entry = cached_entry(depth_id)
    height, width = entry.depth.shape
    parts = exports.depth_pfm_parts(entry.depth)
    header = next(parts)
    return send_parts(chain([header], parts), "application/octet-stream", f"{entry.name}.depth.pfm",
                      length=len(header) + 4 * height * width)


@bp.get("/depth/<depth_id>.exr")
def depth_exr(depth_id: str) -> Response:
    """The raw depth as OpenEXR (float32, one channel ``Y``, unscaled; range in its header)."""
    entry = cached_entry(depth_id)
    with depth_service().slot(entry.depth.size):
        exr = exports.depth_exr(entry.depth)
    return send_bytes(exr, "image/x-exr", f"{entry.name}.depth.exr")


def _made_3d(entry: Entry, make: Callable[..., List[Buffer]]) -> List[Buffer]:
    """A point cloud or mesh of ``entry`` with the scene options in the query (a grid of up to 2048
    points a side: gated like full-size work beyond ``GATED_PIXELS`` points)."""
    opts = SceneOptions.from_strings(request.args)
    service = depth_service()
    with service.slot(opts.grid * opts.grid):
        photo, depth = service.preview(entry, opts.grid)
        return make(photo, depth, opts)


@bp.get("/depth/<depth_id>.ply")
def point_cloud(depth_id: str) -> Response:
    """A point cloud coloured by the photo (binary PLY); ``depth_scale``, ``fov``, ``grid`` in the query."""
    entry = cached_entry(depth_id)
    return send_parts(_made_3d(entry, exports.point_cloud_ply), "application/octet-stream",
                      f"{entry.name}.pointcloud.ply")


@bp.get("/depth/<depth_id>.glb")
def mesh(depth_id: str) -> Response:
    """A displaced-grid mesh with vertex colours (glTF 2.0 binary); same query as the point cloud."""
    entry = cached_entry(depth_id)
    response = send_parts(_made_3d(entry, exports.mesh_glb), "model/gltf-binary", f"{entry.name}.mesh.glb")
    response.headers["Cache-Control"] = "private, max-age=86400"  # the 3D preview asks again on reopen
    return response


def _bundle_files(service: DepthService, entry: Entry, args: Mapping[str, Any]
                  ) -> Tuple[List[Tuple[str, exports.Made]], Dict[str, Any]]:
    """The files of the zip of everything, each with what makes it, and its options.json."""
    opts = read_display_options(entry, args, skip=NOT_DISPLAY)
    scene = SceneOptions.from_strings(args)
    full, points = entry.depth.size, scene.grid * scene.grid
    grid = lambda: service.preview(entry, scene.grid)  # noqa: E731 - the photo and depth at the grid
    made: List[Tuple[str, int, exports.Made]] = [
        ("photo.png", full, lambda: [service.photo_image(entry)]),
        *((f"{v}.png", full, lambda v=v: [service.render(entry, opts, (v,))[0][v]]) for v in VIEWS),
        ("depth.npy", 0, lambda: npy_parts(entry.depth)),
        ("depth.pfm", 0, lambda: exports.depth_pfm_parts(entry.depth)),
        ("depth.exr", full, lambda: [exports.depth_exr(entry.depth)]),
        ("depth16.png", full, lambda: [exports.depth_png16(entry.depth)]),
        ("pointcloud.ply", points, lambda: exports.point_cloud_ply(*grid(), scene)),
        ("mesh.glb", points, lambda: exports.mesh_glb(*grid(), scene))]

    def gated(first: bool, fname: str, pixels: int, make: exports.Made) -> exports.Made:
        """``make`` in the gate; the first file is made before the answer begins, so a full line is its
        503, while a later file that a full line keeps out even after waiting is left out."""
        def make_in_line() -> Optional[Iterable[Buffer]]:
            try:
                with service.slot(pixels, patient=not first):
                    return make()
            except Busy:
                if first:
                    raise
                log.warning("%s of %s left out of its zip: the gate stayed full", fname, entry.id)
                return None
        return make_in_line

    height, width = entry.depth.shape
    info = {"name": entry.name, "width": width, "height": height, "depth_id": entry.id,
            "options": opts.as_dict(), "scene": scene.as_dict(),
            "readme": {"max_side": service.max_side, "colormap": opts.colormap,
                       "near": "dark" if opts.invert else "bright",
                       "grid_note": f"grid of at most {scene.grid} points per side",
                       "fov": scene.fov, "ratio": 1.0 + scene.depth_scale}}
    return [(fname, gated(i == 0, fname, pixels, make)) for i, (fname, pixels, make) in enumerate(made)], info


@bp.get("/depth/<depth_id>.zip")
def bundle(depth_id: str) -> Response:
    """Everything for one photo: the photo, the three views (display options in the query), the raw
    depth as .npy, .pfm, .exr and 16-bit PNG, the point cloud and the mesh (scene options in the query).
    Streamed: each file is made when its turn comes and sent before the next."""
    entry = cached_entry(depth_id)
    files, info = _bundle_files(depth_service(), entry, request.args)
    body = begun(exports.bundle(entry.name, files, info))
    return attach(Response(body, mimetype="application/zip"), f"{entry.name}.zip")


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
