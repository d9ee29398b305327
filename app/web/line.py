"""The line for inference slots, as clients see it: the ``X-Line-Ticket`` request header (a client that
sends it asks for a place, and shows its ticket once it has one) and ``GET /api/v1/line/<ticket>``, where a
client asks how its place moves without sending its upload again (see ``app.serving.gate``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from .errors import ApiError
from .reading import depth_service

bp = Blueprint("line", __name__, url_prefix="/api/v1")

HEADER = "X-Line-Ticket"
NOT_IN_LINE = ("No such place in line: it expired, was used, or never existed. Send the request again "
               f"with {HEADER}: new for a new place at the back.")


@bp.before_app_request
def begin_visit() -> None:
    g.line_visit = depth_service().gate.begin_visit(request.headers.get(HEADER))


@bp.teardown_app_request
def end_visit(exc: Any) -> None:
    depth_service().gate.end_visit(g.pop("line_visit", None))


@bp.get("/line/<ticket>")
def place(ticket: str) -> Response:
    """Where a place in line stands: its place (1: first), how many are ahead, whether its turn has come
    (``called``: send the request again now, with ``X-Line-Ticket: <ticket>``) and, if not, in how many
    seconds to ask again (``retry_in``); asking keeps the place that long, plus ``LINE_GRACE``."""
    info = depth_service().gate.status(ticket[:64])
    if info is None:
        raise ApiError("not_in_line", NOT_IN_LINE)
    response = jsonify(info)
    response.headers["Cache-Control"] = "no-store"
    return response
