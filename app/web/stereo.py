"""Stereo 3D and normal-map images of a cached depth (no new inference): the views the page shows and
downloads, and the API's."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, Type, TypeVar

from flask import Blueprint, Response, request

from ..imaging.normals import normal_map
from ..options import NormalOptions, OptionsBase, StereoOptions
from ..imaging.pipeline import encode_png
from ..imaging.stereo import stereo
from .reading import NOT_OPTIONS, attach, cached_entry, depth_service, read_max_side

bp = Blueprint("stereo", __name__, url_prefix="/api/v1")

T = TypeVar("T", bound=OptionsBase)
# what templates/studio/stereo.html shows of each setting: its range, default and help (built once)
TEMPLATE_VALUES: Dict[str, Any] = {
    name: {f.name: {**f.metadata, "default": f.default} for f in fields(cls)}
    for name, cls in (("stereo_meta", StereoOptions), ("normal_meta", NormalOptions))}


@bp.app_context_processor
def stereo_template_values() -> Dict[str, Any]:
    return TEMPLATE_VALUES


def _options(cls: Type[T]) -> T:
    """``cls`` from the query string; any other name is an error, so a misspelt option is not ignored."""
    return cls.from_strings({k: v for k, v in request.args.items() if k not in NOT_OPTIONS}, strict=True)


def _png(png: bytes, filename: str) -> Response:
    response = Response(png, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=86400"  # same id and options, same image
    if request.args.get("download"):
        attach(response, filename)
    return response


@bp.get("/depth/<depth_id>/stereo.png")
def stereo_png(depth_id: str) -> Response:
    """A stereo 3D image of the cached photo: each pixel moved sideways by its depth, what near objects
    uncover filled from the background, in the layout asked for (``layout``, ``divergence``,
    ``convergence``, ``swap_eyes``; ``max_side=N`` for a preview whose photo is at most N pixels)."""
    entry = cached_entry(depth_id)
    opts = _options(StereoOptions)
    service = depth_service()
    photo, depth = service.preview(entry, read_max_side(request.args))
    with service.slot(2 * depth.size):  # two eyes
        png = encode_png(stereo(photo, depth, opts), "photo")
    return _png(png, f"{entry.name}.{opts.layout}.png")


@bp.get("/depth/<depth_id>/normals.png")
def normals_png(depth_id: str) -> Response:
    """A normal map of the cached depth (``normal_strength``, ``normal_smooth``, ``normal_convention``;
    ``max_side=N`` for a preview at most N pixels long)."""
    entry = cached_entry(depth_id)
    opts = _options(NormalOptions)
    service = depth_service()
    depth = service.preview(entry, read_max_side(request.args))[1]
    with service.slot(depth.size):
        png = encode_png(normal_map(depth, opts), "normals")
    return _png(png, f"{entry.name}.normals.png")
