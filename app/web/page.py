"""The studio page at ``/``: a plain form that works without JavaScript (post -> redirect -> result
page), which ``static/studio.js`` upgrades to in-place updates. Its errors appear next to the form."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, Optional

from flask import Blueprint, Response, current_app, make_response, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from ..serving.store import Entry
from ..options import COLORBLIND_FRIENDLY, COLORMAPS, DEPTH_OPTIONS, OptionError, Options
from ..imaging.pipeline import VIEWS
from .errors import HANDLED, ApiError, answer, as_api_error, finish, log_error, wants_json
from .reading import (DEFAULTS, cached_entry, depth_service, lookup, options_query, read_options, read_upload)

bp = Blueprint("page", __name__)

MODES = ("all",) + VIEWS  # the display modes: every view side by side, or one of them
# the page shows previews no longer than this (sharp at twice the widest figure); downloads are full size
PREVIEW_SIDE = 1600
FIELD_META = {f.name: f.metadata for f in fields(Options)}  # ranges and help of the form's controls


def read_mode(values: Mapping[str, Any]) -> str:
    mode = str(values.get("views", "all")).strip().lower() or "all"
    if mode not in MODES:
        raise ApiError("bad_option", f"Display mode must be one of {', '.join(MODES)}; got {mode[:40]!r}.")
    return mode


def _kept_options(values: Mapping[str, Any]) -> Options:
    """The user's valid choices, each kept on its own (a size with its model), to show the form again
    after an error."""
    kept = {"model": depth_service().default_model}
    for name in ("model", *Options.names()):
        if name in values:
            try:
                Options.from_strings({"model": kept["model"], name: values[name]})
                kept[name] = values[name]
            except OptionError:
                pass
    return Options.from_strings(kept)


def _submitted() -> Mapping[str, Any]:
    if request.method != "POST":
        return request.args
    try:
        return request.form
    except HTTPException:  # a body too large to read: show the form with its defaults
        return {}


def render_page(error: Optional[str] = None, entry: Optional[Entry] = None,
                opts: Optional[Options] = None, mode: Optional[str] = None) -> str:
    """The page, with the result of ``entry`` if given and ``error`` next to the form."""
    values = _submitted()
    if entry is None and error is not None:
        # after an error, keep showing the result the user was looking at, if it is still cached
        entry = lookup(values.get("depth_id"))
    if opts is None:
        opts = _kept_options(values)
    if mode is None:
        mode = values.get("views", "all") if values.get("views") in MODES else "all"
    return render_template(
        "index.html", error=error, entry=entry, opts=opts, mode=mode, modes=MODES,
        colormaps=COLORMAPS, colorblind=COLORBLIND_FRIENDLY,
        meta=FIELD_META, defaults=DEFAULTS, depth_options=DEPTH_OPTIONS, view_query=options_query,
        models=[m.spec for m in depth_service().models.values()],
        max_bytes=current_app.config["MAX_CONTENT_LENGTH"], preview=PREVIEW_SIDE)


def page_error(exc: Exception) -> Response:
    """The page's errors: next to its form, with the user's choices kept (JSON to a client asking for it)."""
    if wants_json():
        return answer(exc)
    err = as_api_error(exc)
    log_error(err)
    return finish(make_response(render_page(error=err.message)), err)


for _cls in HANDLED:
    bp.register_error_handler(_cls, page_error)


@bp.get("/")
def index() -> Any:
    """The empty studio, or with ``?depth_id=…&options`` the result of an earlier upload."""
    if "depth_id" not in request.args:
        return render_page()
    entry = cached_entry(request.args["depth_id"])
    # the depth's own options belong to it, whatever the query says
    opts = read_options({**request.args, **entry.depth_opts}, strict=False)
    return render_page(entry=entry, opts=opts, mode=read_mode(request.args))


@bp.post("/")
def submit() -> Any:
    """A new photo (or new options for the shown one) -> 303 to the result page, so a reload is safe."""
    opts = read_options(request.form, strict=False)
    mode = read_mode(request.form)
    upload = request.files.get("image")
    if upload is not None and upload.filename:  # browsers send an empty part when nothing was chosen
        data, name = read_upload()
        result = depth_service().from_upload(data, name, opts)
    elif request.form.get("depth_id"):
        result = depth_service().for_options(cached_entry(request.form["depth_id"]), opts)
    else:
        raise ApiError("missing_file", "Choose a photo first.")
    return redirect(url_for("page.index", depth_id=result.entry.id, views=mode, **options_query(opts)),
                    code=303)
