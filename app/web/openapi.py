"""The OpenAPI 3.1 description of the HTTP API, generated from the code each time it is asked for:

* paths and methods from the app's URL map (every ``/api/v1`` route and ``/healthz``; a route added
  later appears with its docstring even before anyone describes it here),
* summaries and descriptions from the view functions' docstrings,
* every option's type, default, range, choices and help from the field metadata of the options classes
  a route parses with (``Options``, ``SceneOptions``, ``StereoOptions``, ``NormalOptions``,
  ``VideoOptions``: the same source the CLI, the form and the validation use), as query parameters of
  the GET routes and as form fields of the POST ones,
* error codes from the registry in ``app.web.errors``.

Only what a route takes and answers (``ROUTES`` below) is written here, per endpoint: which options
classes it parses, and the few names it reads besides them.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from ..imaging.pipeline import IMAGE_FORMATS, VIEWS
from ..options import NormalOptions, Options, OptionsBase, SceneOptions, StereoOptions, VideoOptions
from ..serving.jobs import STATES
from .api import IMAGE_VIEWS
from .errors import ERRORS
from .exports import LEGEND_VIEWS
from .reading import PREVIEW_SIDES

# the options classes whose fields are query parameters of some GET route (each field a component
# schema, ``<class>_<field>``, that the parameters refer to)
QUERY_CLASSES: Tuple[Type[OptionsBase], ...] = (Options, SceneOptions, StereoOptions, NormalOptions)

JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number", "str": "string"}
DEPTH_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$",
            "description": "the id of an earlier result (from POST /api/v1/depth or /render)"}
VIEWS_PARAM = {"type": "string", "default": "all",
               "description": "`all`, `none`, or a comma-separated list of " + ", ".join(VIEWS)}
VIEW_ALIAS = {"type": "string", "description": "same as views"}
FORMAT_PARAM = {"type": "string", "enum": list(IMAGE_FORMATS), "default": "png",
                "description": "the images' format: `png` (lossless) or `jpeg` (lossy, far smaller and "
                               "faster at full size); for the colour views and the photo, gray stays PNG"}
IMAGE_CONTENT = {mime: {"schema": {"type": "string", "format": "binary"}} for mime in IMAGE_FORMATS.values()}
OWNER_TOKEN = {"type": "string", "pattern": "^[0-9a-f]{32}$",
               "description": "the owner token the upload answered, for its uploader alone"}
OWNER_PARAM = {"name": "X-Owner-Token", "in": "header", "required": False, "schema": OWNER_TOKEN}
LINE_HEADER = {"name": "X-Line-Ticket", "in": "header", "required": False, "schema": {"type": "string"},
               "description": "asks for a place in the line for slots: `new`, or the `ticket` of the place "
                              "an earlier 503 gave (see docs/api.md, \"Waiting in line\")"}


def _ref(name: str) -> Dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def dataclass_schema(cls: type, description: str) -> Dict[str, Any]:
    """A JSON Schema object from a dataclass whose fields carry ``help``/``choices``/``lo``/``hi``."""
    props: Dict[str, Any] = {}
    for f in fields(cls):
        meta = f.metadata
        prop: Dict[str, Any] = {"type": JSON_TYPES[str(f.type)], "default": f.default,
                                "description": meta["help"]}
        if meta.get("choices"):
            prop["enum"] = list(meta["choices"])
        if meta.get("lo") is not None:
            prop["minimum"], prop["maximum"] = meta["lo"], meta["hi"]
        props[f.name] = prop
    return {"type": "object", "description": description, "properties": props}


def _form(extra: Dict[str, Any], required: List[str],
          classes: Tuple[Type[OptionsBase], ...] = (Options,)) -> Dict[str, Any]:
    """A request body of every field of ``classes`` plus ``extra``; any other name is refused (422
    bad_option)."""
    props = {name: prop for cls in classes for name, prop in dataclass_schema(cls, "")["properties"].items()}
    return {"type": "object", "properties": {**props, **extra}, "required": required,
            "additionalProperties": False}


def _query(*classes: Type[OptionsBase]) -> List[Dict[str, Any]]:
    """Each field of ``classes`` as an optional query parameter, its schema the field's own (type,
    default, range, choices: what the view parses and checks it with)."""
    return [_param(f.name, _ref(f"{cls.__name__}_{f.name}")) for cls in classes for f in fields(cls)]


def _param(name: str, schema: Dict[str, Any], required: bool = False) -> Dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _field_schemas(cls: type) -> Dict[str, Any]:
    whole = dataclass_schema(cls, "")
    return {f"{cls.__name__}_{name}": prop for name, prop in whole["properties"].items()}


def _errors(*statuses: int) -> Dict[str, Any]:
    """Error answers of these statuses, each described by the registry's codes that come with it."""
    return {str(s): {"description": "; ".join(f"`{code}`: {spec.meaning}" for code, spec in ERRORS.items()
                                              if s in spec.statuses),
                     "content": {"application/json": {"schema": _ref("Error")}}}
            for s in statuses}


def _file(mimetype: str, description: str) -> Dict[str, Any]:
    return {"description": description, "content": {mimetype: {"schema": {"type": "string",
                                                                          "format": "binary"}}}}


def _display_query() -> List[Dict[str, Any]]:
    return _query(Options)


def _preview(default: Optional[int] = None) -> Dict[str, Any]:
    """``max_side``: a preview whose longer side is at most this many pixels (``reading.read_max_side``)."""
    schema = {"type": "integer", "minimum": PREVIEW_SIDES[0], "maximum": PREVIEW_SIDES[1],
              "description": "a preview whose longer side is at most this many pixels"
                             + ("" if default else " (without it: full size)")}
    return _param("max_side", schema if default is None else {**schema, "default": default})


DOWNLOAD = _param("download", {"type": "string",
                               "description": "any value but empty: answer as a file download"})
JOB_FILE_ERRORS = (404, 409, 503)


# what each endpoint takes and answers; paths, methods and words come from the URL map and docstrings
ROUTES: Mapping[str, Dict[str, Any]] = {
    "api.depth": {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _form({
            "image": {"type": "string", "format": "binary",
                      "description": "the photo: JPEG, PNG, WebP, BMP, TIFF or GIF"},
            "views": VIEWS_PARAM, "view": VIEW_ALIAS,
            "format": FORMAT_PARAM}, ["image"]),
            "encoding": {"image": {"contentType": "image/*"}}}}},
        "responses": {"200": {"description": "the depth's id and the asked-for views as data URIs (PNG, or "
                              "JPEG with `format=jpeg`); with one view and an `Accept` that prefers its "
                              "image type to JSON (`image/png`, or `image/jpeg` with `format=jpeg`), that "
                              "image",
                              "headers": {"X-Depth-Id": {"schema": DEPTH_ID},
                                          "X-Owner-Token": {"schema": OWNER_TOKEN}},
                              "content": {"application/json": {"schema": _ref("DepthResult")},
                                          **IMAGE_CONTENT}},
                      **_errors(400, 406, 413, 415, 422, 503, 507)},
        "parameters": [OWNER_PARAM, LINE_HEADER],
    },
    "api.render": {
        "parameters": [LINE_HEADER],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _form({"depth_id": DEPTH_ID, "views": VIEWS_PARAM,
                                                  "format": FORMAT_PARAM}, ["depth_id"])},
            "application/x-www-form-urlencoded": {
                "schema": _form({"depth_id": DEPTH_ID, "views": VIEWS_PARAM, "format": FORMAT_PARAM},
                                ["depth_id"])}}},
        "responses": {"200": {"description": "as POST /api/v1/depth",
                              "content": {"application/json": {"schema": _ref("DepthResult")},
                                          **IMAGE_CONTENT}},
                      **_errors(400, 404, 406, 422, 503, 507)},
    },
    "api.depth_npy": {"responses": {"200": _file("application/octet-stream", "float32 H×W .npy"),
                                    **_errors(404, 503)}},
    "api.delete_depth": {"parameters": [{**OWNER_PARAM, "required": True}],
                         "responses": {"204": {"description": "deleted, on every worker"},
                                       **_errors(400, 403, 404, 503)}},
    "api.view_png": {
        "parameters": [*_display_query(), _preview(), _param("format", FORMAT_PARAM), DOWNLOAD],
        "responses": {"200": {"description": "the view: PNG, or JPEG with `format=jpeg` (gray stays PNG)",
                              "content": IMAGE_CONTENT}, **_errors(404, 422, 503)},
    },
    "exports.depth_png16": {"responses": {"200": _file("image/png", "16-bit grayscale PNG"),
                                          **_errors(404, 503)}},
    "exports.depth_pfm": {"responses": {"200": _file("application/octet-stream", "PFM"),
                                        **_errors(404, 503)}},
    "exports.depth_exr": {"responses": {"200": _file("image/x-exr", "OpenEXR: float32, one channel Y"),
                                        **_errors(404, 503)}},
    "exports.point_cloud": {"parameters": _query(SceneOptions),
                           "responses": {"200": _file("application/octet-stream", "binary PLY"),
                                         **_errors(404, 422, 503)}},
    "exports.mesh": {"parameters": _query(SceneOptions),
                    "responses": {"200": _file("model/gltf-binary", "glTF 2.0 binary"),
                                  **_errors(404, 422, 503)}},
    "exports.bundle": {"parameters": [*_display_query(), *_query(SceneOptions)],
                      "responses": {"200": _file("application/zip", "zip"), **_errors(404, 422, 503)}},
    "exports.legend_json": {
        "parameters": [_param("view", {"type": "string", "enum": list(LEGEND_VIEWS), "default": "heatmap"}),
                       *_display_query()],
        "responses": {"200": {"description": "the colour key", "content": {
            "application/json": {"schema": _ref("Legend")}}}, **_errors(404, 422, 503)},
    },
    "stereo.stereo_png": {
        "parameters": [*_query(StereoOptions), _preview(), DOWNLOAD],
        "responses": {"200": _file("image/png", "the stereo image, in the layout asked for"),
                      **_errors(404, 422, 503)}},
    "stereo.normals_png": {
        "parameters": [*_query(NormalOptions), _preview(), DOWNLOAD],
        "responses": {"200": _file("image/png", "the normal map (RGB)"), **_errors(404, 422, 503)}},
    "batch.batch": {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _form({
            "image": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "the photos (the field repeated), at most BATCH_MAX_FILES"},
            "views": VIEWS_PARAM}, ["image"])}}},
        "responses": {"200": {"description": "one result per photo, in order; with `Accept: "
                              "application/zip`, a zip with a folder per photo and results.json",
                              "content": {"application/json": {"schema": _ref("BatchResult")},
                                          "application/zip": {"schema": {"type": "string",
                                                                         "format": "binary"}}}},
                      **_errors(400, 413, 415, 422, 503, 507)},
    },
    "batch.batch_zip": {
        "parameters": [{**_param("depth_id", {"type": "array", "items": DEPTH_ID, "minItems": 1}, True),
                        "style": "form", "explode": True},
                       _param("views", VIEWS_PARAM), _param("view", VIEW_ALIAS),
                       *_display_query()],
        "responses": {"200": _file("application/zip", "a folder per photo and results.json"),
                      **_errors(400, 404, 413, 422, 503)},
    },
    "measure.depth_preview": {
        "parameters": [_preview(default=512)],
        "responses": {"200": _file("application/octet-stream", "float32 .npy, downscaled"),
                      **_errors(404, 422, 503)}},
    "live.colormaps": {"responses": {"200": {
        "description": "each colormap's 256 RGB entries, display level 0 first: the tables the views use",
        "content": {"application/json": {"schema": {"type": "object", "properties": {"colormaps": {
            "type": "object", "additionalProperties": {
                "type": "array", "minItems": 256, "maxItems": 256, "items": {
                    "type": "array", "minItems": 3, "maxItems": 3,
                    "items": {"type": "integer", "minimum": 0, "maximum": 255}}}}}}}}}}},
    "measure.calibrate_depth": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["points"], "properties": {"points": {
                "type": "array", "minItems": 2, "maxItems": 32, "items": {
                    "type": "object", "required": ["u", "v", "metres"], "properties": {
                        "u": {"type": "number", "minimum": 0, "maximum": 1,
                              "description": "relative x in the photo (0 left, 1 right)"},
                        "v": {"type": "number", "minimum": 0, "maximum": 1,
                              "description": "relative y in the photo (0 top, 1 bottom)"},
                        "metres": {"type": "number", "exclusiveMinimum": 0, "maximum": 100000}}}}}}}}},
        "responses": {"200": {"description": "the fit", "content": {"application/json": {
            "schema": _ref("Calibration")}}}, **_errors(400, 404, 422, 503)}},
    "measure.metric_npy": {
        "parameters": [_param(n, {"type": "number"}, True) for n in ("scale", "shift")],
        "responses": {"200": _file("application/octet-stream", "float32 metres .npy (NaN: beyond the fit)"),
                      **_errors(404, 422, 503)}},
    "video.submit": {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _form({
            "video": {"type": "string", "format": "binary",
                      "description": "the clip: MP4, WebM, MOV, AVI, MKV or animated GIF"}},
            ["video"], (Options, VideoOptions)), "encoding": {"video": {"contentType": "video/*"}}}}},
        "responses": {"202": {"description": "the job, queued", "headers": {"Location": {
            "schema": {"type": "string"}, "description": "the job's URL"}},
            "content": {"application/json": {"schema": _ref("Job")}}},
            **_errors(400, 413, 415, 422, 503, 507)}},
    "video.job_status": {"responses": {"200": {"description": "the job", "content": {
        "application/json": {"schema": _ref("Job")}}}, **_errors(404, 503)}},
    "video.job_result": {"parameters": [DOWNLOAD], "responses": {
        "200": _file("video/mp4", "the depth video (H.264 MP4)"),
        "206": _file("video/mp4", "the part a `Range` header asked for"), **_errors(*JOB_FILE_ERRORS)}},
    "video.job_zip": {"parameters": [DOWNLOAD], "responses": {
        "200": _file("application/zip", "the 16-bit depth PNGs and frames.csv"),
        "206": _file("application/zip", "the part a `Range` header asked for"),
        **_errors(*JOB_FILE_ERRORS)}},
    "video.job_delete": {"responses": {
        "202": {"description": "a queued or running job: cancelled", "content": {
            "application/json": {"schema": _ref("Job")}}},
        "204": {"description": "an ended job: deleted with its files"}, **_errors(404, 503)}},
    "line.place": {"responses": {"200": {"description": "the place",
                                         "content": {"application/json": {"schema": _ref("LinePlace")}}},
                                 **_errors(404, 503)}},
    "health.healthz": {"responses": {"200": {"description": "the process is up, its models loaded",
                                      "content": {"application/json": {"schema": _ref("Health")}}}}},
    "openapi.spec": {"responses": {"200": {"description": "this document",
                                           "content": {"application/json": {"schema": {"type": "object"}}}}}},
}

SCHEMAS: Dict[str, Any] = {
    "Options": dataclass_schema(Options, "How to compute and show a depth map (docs/cli.md, Options)"),
    "SceneOptions": dataclass_schema(SceneOptions, "How relative depth becomes 3D geometry"),
    "StereoOptions": dataclass_schema(StereoOptions, "How a photo and its depth become a stereo pair"),
    "NormalOptions": dataclass_schema(NormalOptions, "How depth becomes a normal map"),
    "VideoOptions": dataclass_schema(VideoOptions, "How a clip becomes a depth video (docs/video.md)"),
    **{name: prop for cls in QUERY_CLASSES for name, prop in _field_schemas(cls).items()},
    "Error": {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string", "enum": list(ERRORS), "description": "stable, machine-readable"},
        "message": {"type": "string", "description": "plain words, English"},
        "line": _ref("LinePlace")}},
    "LinePlace": {"type": "object", "required": ["ticket", "place", "ahead", "called", "retry_in"],
                  "description": "a place in the line for slots, kept for the client", "properties": {
                      "ticket": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                                 "description": "send it back in `X-Line-Ticket`"},
                      "place": {"type": "integer", "minimum": 1, "description": "1: first in line"},
                      "ahead": {"type": "integer", "minimum": 0},
                      "called": {"type": "boolean",
                                 "description": "its turn: send the request again now, with the ticket"},
                      "retry_in": {"type": "number", "minimum": 0,
                                   "description": "seconds until the client should ask again"}}},
    "DepthResult": {"type": "object", "required": ["width", "height", "depth_id", "cached", "options",
                                                   "views", "timings_ms"], "properties": {
        "width": {"type": "integer", "minimum": 1}, "height": {"type": "integer", "minimum": 1},
        "depth_id": DEPTH_ID, "cached": {"type": "boolean"}, "options": _ref("Options"),
        "owner_token": {**OWNER_TOKEN, "description": "for DELETE; only in the answer to an upload"},
        "views": {"type": "object",
                  "additionalProperties": {"type": "string", "pattern": "^data:image/(png|jpeg);base64,"},
                  "description": "view name -> data URI: PNG, or JPEG with `format=jpeg` (gray: PNG)"},
        "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}}}},
    "Legend": {"type": "object", "required": ["colormap", "stops", "near", "local", "ticks", "saturated"],
               "properties": {
                   "colormap": {"type": "string"},
                   "stops": {"type": "array", "items": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}},
                   "near": {"type": "string", "enum": ["left", "right"]},
                   "local": {"type": "boolean", "description": "CLAHE: no values"},
                   "unit": {"type": "string"},
                   "ticks": {"type": "array", "items": {"type": "object", "required": ["value", "pos"],
                                                        "properties": {"value": {"type": "number"},
                                                                       "pos": {"type": "number", "minimum": 0,
                                                                               "maximum": 1}}}},
                   "saturated": {"type": "array", "items": {"type": "string", "enum": ["far", "near"]}}}},
    "BatchResult": {"type": "object", "required": ["results", "options"], "properties": {
        "options": _ref("Options"),
        "results": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "depth_id": DEPTH_ID, "width": {"type": "integer"},
            "height": {"type": "integer"}, "cached": {"type": "boolean"},
            "owner_token": {**OWNER_TOKEN, "description": "for DELETE /api/v1/depth/{depth_id}"},
            "error": {"type": "string", "description": "this photo's error code; the others still count"},
            "message": {"type": "string"}}}}}},
    "Job": {"type": "object", "required": ["id", "state", "progress", "error", "result"], "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "state": {"type": "string", "enum": list(STATES)},
        "cancel_requested": {"type": "boolean"}, "created": {"type": "number"},
        "name": {"type": "string"}, "input": {"type": "object", "description": "what the clip is"},
        "options": _ref("Options"), "video_options": _ref("VideoOptions"),
        "progress": {"type": "object", "properties": {
            "pass": {"type": "integer"}, "passes": {"type": "integer"}, "frames_done": {"type": "integer"},
            "frames_total": {"type": "integer"}, "fraction": {"type": "number", "minimum": 0, "maximum": 1},
            "elapsed_s": {"type": ["number", "null"]}, "eta_s": {"type": ["number", "null"]}}},
        "error": {"type": ["object", "null"], "description": "why it failed: `error` and `message`"},
        "result": {"type": ["object", "null"], "properties": {"files": {
            "type": "object", "description": "kind (`video`, `depth_zip`) -> URL",
            "additionalProperties": {"type": "string"}}}},
        "expires_in_s": {"type": "number", "description": "an ended job: seconds until it is deleted"}}},
    "Calibration": {"type": "object", "required": ["scale", "shift", "rmse_m", "points"], "properties": {
        "scale": {"type": "number"}, "shift": {"type": "number"},
        "rmse_m": {"type": ["number", "null"]},
        "points": {"type": "array", "items": {"type": "object", "properties": {
            "u": {"type": "number"}, "v": {"type": "number"}, "metres": {"type": "number"},
            "relative": {"type": "number"}, "fitted_metres": {"type": ["number", "null"]}}}}}},
    "Health": {"type": "object", "required": ["status", "model", "models"], "properties": {
        "status": {"type": "string"}, "model": {"type": "string", "description": "the default model"},
        "weights_sha256": {"type": "string"},
        "models": {"type": "array", "description": "every model this process loaded, the default first",
                   "items": {"type": "object", "required": ["name", "engine"], "properties": {
                       "name": {"type": "string"}, "title": {"type": "string"}, "licence": {"type": "string"},
                       "weights_sha256": {"type": "string"}, "engine": {"type": "string"},
                       "precision": {"type": "string"},
                       "sizes": {"type": "array", "items": {"type": "integer"}},
                       "default_size": {"type": "integer"}}}}}},
}


def _path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _path_params(rule: Any) -> List[Dict[str, Any]]:
    out = []
    for name in sorted(rule.arguments):
        schema: Dict[str, Any] = DEPTH_ID if name == "depth_id" else {"type": "string"}
        if name == "view":
            schema = {"type": "string", "enum": list(IMAGE_VIEWS)}
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    return out


def _docstring(fn: Any) -> tuple:
    doc = " ".join((fn.__doc__ or "").split())
    first, _, rest = doc.partition(". ")
    return first.rstrip("."), rest


def build_spec(app: Flask, server_url: Optional[str] = None) -> Dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s API."""
    paths: Dict[str, Dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not (rule.rule.startswith("/api/") or rule.endpoint == "health.healthz"):
            continue
        # a route nobody has described yet still appears, with its docstring and the one error shape
        doc = ROUTES.get(rule.endpoint, {"responses": {
            "200": {"description": "see the description"},
            "default": {"description": "an error",
                        "content": {"application/json": {"schema": _ref("Error")}}}}})
        summary, description = _docstring(app.view_functions[rule.endpoint])
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: Dict[str, Any] = {"operationId": rule.endpoint.replace(".", "_") + "_" + method.lower(),
                                  "summary": summary or rule.endpoint, "tags": [rule.endpoint.split(".")[0]],
                                  "responses": doc["responses"]}
            if description:
                op["description"] = description
            params = _path_params(rule) + doc.get("parameters", [])
            if params:
                op["parameters"] = params
            if "requestBody" in doc:
                op["requestBody"] = doc["requestBody"]
            paths.setdefault(_path(rule.rule), {})[method.lower()] = op
    spec: Dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Depth-map studio API", "version": "1",
                 "description": "Monocular depth maps with MiDaS v2.1 small. Depth is relative inverse depth "
                                "(larger = nearer), not metres. Errors are JSON `{error, message}` with a "
                                "stable `error` code; messages are in English."},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if server_url:
        spec["servers"] = [{"url": server_url}]
    return spec


bp = Blueprint("openapi", __name__)


@bp.get("/api/v1/openapi.json")
def spec() -> Response:
    """This API's OpenAPI 3.1 document, generated from the code."""
    return jsonify(build_spec(current_app, request.host_url.rstrip("/")))


@bp.get("/docs")
def docs() -> str:
    """The interactive API reference (static/apidocs.js renders the document and sends requests)."""
    return render_template("apidocs.html")
