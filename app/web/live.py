"""What the page needs to render the views itself: the colormaps' lookup tables, exactly the ones the
server colours with. The depth comes from ``/api/v1/depth/<id>/preview.npy`` (app/web/measure.py)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..options import COLORMAPS
from ..imaging.pipeline import colormap_lut

bp = Blueprint("live", __name__, url_prefix="/api/v1")


@bp.get("/colormaps.json")
def colormaps() -> Response:
    """Every colormap as its 256 RGB entries (display level 0 first), the tables the server's views use."""
    response = jsonify(colormaps={name: colormap_lut(name).tolist() for name in COLORMAPS})
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response
