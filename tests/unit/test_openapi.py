"""The OpenAPI document: generated from the code, valid OpenAPI 3.1, complete (every API route, every
query parameter a GET route reads, every form field a POST route takes), true to the server (its option
ranges and choices are the ones the views parse and enforce with), and checked by schemathesis, which
sends generated requests to every operation and validates each answer's status, content type and body
against the document."""

from __future__ import annotations

import io
import re
import time
from dataclasses import Field, fields
from typing import Any, Dict, Iterator, List, Set, Tuple
from urllib.parse import urlencode

import numpy as np
import pytest
import schemathesis
from flask import request as current_request
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.utils import cached_property

from app.depth.registry import DEPTH_ANYTHING_V2_SMALL, MIDAS_SMALL
from app.imaging.pipeline import IMAGE_FORMATS
from app.options import Options, OptionsBase
from app.web.exports import LEGEND_VIEWS
from app.web.openapi import build_spec
from app.web.reading import PREVIEW_SIDES, InMemoryRequest
from support.clips import moving_scene, write_clip
from support.forms import form_data


@pytest.fixture(scope="module")
def spec(app) -> dict:
    r = app.test_client().get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    return r.json


def test_the_document_is_valid_openapi(spec) -> None:
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema
    assert spec["openapi"] == "3.1.0"


def test_every_api_route_is_described(app, spec) -> None:
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = rule.rule.replace("<", "{").replace(">", "}")
            methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
            assert {m.lower() for m in methods} <= set(spec["paths"][path]), path
    upload = spec["paths"]["/api/v1/depth"]["post"]
    assert upload["summary"].startswith("Multipart ``image`` plus options")  # from the docstring
    props = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert props["colormap"]["enum"][:2] == ["inferno", "magma"] and props["size"]["default"] == 0


@pytest.mark.parametrize("name", [n for n, v in Options().as_dict().items() if isinstance(v, (int, float))
                                  and not isinstance(v, bool)])
def test_documented_ranges_are_the_ones_the_server_enforces(client, spec, samples, name) -> None:
    prop = spec["components"]["schemas"]["Options"]["properties"][name]
    top = prop["enum"][-1] if "enum" in prop else prop["maximum"]
    if name == "size":  # the sizes of every model are listed; the app here loads the default model only
        assert set(prop["enum"]) == {0, *MIDAS_SMALL.sizes, *DEPTH_ANYTHING_V2_SMALL.sizes}
        top = MIDAS_SMALL.sizes[-1]
    over = top + 1 if "enum" in prop else prop["maximum"] * 1.5 + 1
    ok = client.post("/api/v1/depth", **form_data({"image": (samples["rocket"], "r.jpg"), "views": "none",
                                                   name: str(top)}))
    assert ok.status_code == 200, ok.json
    bad = client.post("/api/v1/depth", **form_data({"image": (samples["rocket"], "r.jpg"), "views": "none",
                                                    name: str(over)}))
    assert bad.status_code == 422 and bad.json["error"] == "bad_option" and name in bad.json["message"]


def test_docs_page_is_served(client) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and b"apidocs.js" in r.data and b"/api/v1/openapi.json" in r.data


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


def test_schemathesis_every_answer_conforms(api_schema) -> None:
    # one hypothesis run per operation, driven here rather than by schemathesis's pytest plugin, whose
    # lazy fixture loader does not work with pytest 9
    operations = [result.ok() for result in api_schema.get_all_operations()]
    described = {f"{m.upper()} {p}" for p, ops in api_schema.raw_schema["paths"].items() for m in ops}
    # schemathesis leaves out the document's own URL
    assert {op.label for op in operations} == described - {"GET /api/v1/openapi.json"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case) -> None:
            case.call_and_validate(checks=[not_a_server_error, status_code_conformance,
                                           content_type_conformance, response_schema_conformance])

        conforms()


def test_a_route_added_later_is_described_from_its_docstring(weights_path) -> None:
    from flask import jsonify

    from app import create_app

    app = create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 1})

    @app.get("/api/v1/echo/<word>")
    def echo(word: str):
        """Says the word back. Nothing else."""
        return jsonify(word=word)

    spec = build_spec(app)
    validate(spec)
    op = spec["paths"]["/api/v1/echo/{word}"]["get"]
    assert op["summary"] == "Says the word back" and op["parameters"][0]["name"] == "word"
    assert "default" in op["responses"]  # its errors have the one documented shape


# every query parameter of every GET route -------------------------------------------------------------

# the GET routes outside the document: the studio's pages and their files, not its API
PAGES = {"page.index": "the studio page", "i18n.choose": "the language switch (a redirect to a page)",
         "openapi.docs": "the API reference page", "static": "the pages' scripts, styles and images"}
JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number", "str": "string"}
# what a probe sends for a required query parameter
REQUIRED_VALUES = {"scale": "1.5", "shift": "0.1"}
# the names, besides options, that each POST route's body takes
POST_EXTRAS = {"/api/v1/depth": {"image", "views", "view", "format"},
               "/api/v1/render": {"depth_id", "views", "format"},
               "/api/v1/batch": {"image", "views"}, "/api/v1/video": {"video"}}


class ReadArgs(ImmutableMultiDict):
    """A query string that notes the names a view looks up one by one (``looked_up``) and whether it went
    through all of them (``listed``: then only a strict parse of an options class says what it took)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.looked_up: Set[str] = set()
        self.listed = False

    def __getitem__(self, key: str) -> Any:  # get() comes here too
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.looked_up.add(str(key))
        return super().__contains__(key)

    def getlist(self, key: str, type: Any = None) -> List[Any]:  # noqa: A002 - Werkzeug's name
        self.looked_up.add(key)
        return super().getlist(key, type)

    def _listing(self) -> "ReadArgs":
        self.listed = True
        return self

    def items(self, multi: bool = False) -> Any:
        return ImmutableMultiDict.items(self._listing(), multi)

    def keys(self) -> Any:
        return ImmutableMultiDict.keys(self._listing())

    def __iter__(self) -> Iterator[str]:
        return ImmutableMultiDict.__iter__(self._listing())

    def values(self) -> Any:
        return ImmutableMultiDict.values(self._listing())

    def lists(self) -> Any:
        return ImmutableMultiDict.lists(self._listing())

    def to_dict(self, flat: bool = True) -> Any:
        return ImmutableMultiDict.to_dict(self._listing(), flat)


class ReadingRequest(InMemoryRequest):
    @cached_property
    def args(self) -> ReadArgs:  # type: ignore[override]
        return ReadArgs(super().args)


def small_photo() -> bytes:
    rgb = np.zeros((72, 96, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 96, dtype=np.uint8)[None, :]
    rgb[20:50, 30:60] = (230, 200, 60)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def reading_app(weights_path, tmp_path_factory) -> Iterator[Any]:
    """An app whose requests note which query names their view reads."""
    from app import create_app

    app = create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 2,
                      "DATA_DIR": str(tmp_path_factory.mktemp("data")),
                      "VIDEO_DIR": str(tmp_path_factory.mktemp("video")), "VIDEO_WORKERS": 1})
    app.request_class = ReadingRequest
    yield app
    app.extensions["video_jobs"].shutdown()


@pytest.fixture()
def parses(monkeypatch) -> List[Tuple[type, bool]]:
    """Every options class parsed while the test runs, and whether strictly (any other name refused)."""
    seen: List[Tuple[type, bool]] = []
    original = OptionsBase.from_strings.__func__  # type: ignore[attr-defined]

    def from_strings(cls: type, values: Any, strict: bool = False) -> Any:
        seen.append((cls, strict))
        return original(cls, values, strict)

    monkeypatch.setattr(OptionsBase, "from_strings", classmethod(from_strings))
    return seen


@pytest.fixture(scope="module")
def made(reading_app, tmp_path_factory) -> Dict[str, str]:
    """What the GET routes' paths name: a result, a done video job with its depth zip, a place in line."""
    client = reading_app.test_client()
    r = client.post("/api/v1/depth", **form_data({"image": (small_photo(), "p.png"), "views": "none"}))
    assert r.status_code == 200, r.json
    depth_id = r.json["depth_id"]
    clip = write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", moving_scene(4, 64, 48)).read_bytes()
    r = client.post("/api/v1/video", **form_data({"video": (clip, "c.mp4"), "depth_zip": "on"}))
    assert r.status_code == 202, r.json
    job_id, deadline = r.json["id"], time.monotonic() + 300
    while (state := client.get(f"/api/v1/jobs/{job_id}").json["state"]) not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state == "done"
    line = reading_app.extensions["depth_service"].gate.line
    place = line.join(600, 100)
    line.hold(place.ticket, 600, inside=True)  # as if its request were being served: nobody waits behind it
    return {"depth_id": depth_id, "job_id": job_id, "ticket": place.ticket}


def build(app) -> Dict[str, Any]:
    spec = build_spec(app)
    validate(spec)
    return spec


def resolve(spec: Dict[str, Any], schema: Dict[str, Any]) -> Dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def assert_field_schema(schema: Dict[str, Any], f: Field, where: str) -> None:
    """``schema`` says what the field's metadata says: type, default, choices, range."""
    meta = f.metadata
    assert schema["type"] == JSON_TYPES[str(f.type)], where
    assert schema["default"] == f.default and type(schema["default"]) is type(f.default), where
    assert schema.get("enum") == (list(meta["choices"]) if meta["choices"] else None), where
    assert (schema.get("minimum"), schema.get("maximum")) == (meta["lo"], meta["hi"]), where
    assert schema["description"] == meta["help"], where


def fields_of(classes: Set[type]) -> Dict[str, Field]:
    return {f.name: f for cls in classes for f in fields(cls)}


def get_probes(spec: Dict[str, Any], made: Dict[str, str]) -> Iterator[Tuple[str, str, Dict[str, str]]]:
    """(path, URL, required query) for every GET operation: each value of an enumerated path parameter."""
    for path, ops in spec["paths"].items():
        if "get" not in ops:
            continue
        urls = [path]
        for p in ops["get"].get("parameters", []):
            if p["in"] != "path":
                continue
            values = resolve(spec, p["schema"]).get("enum") or [made[p["name"]]]
            urls = [u.replace("{" + p["name"] + "}", str(v)) for u in urls for v in values]
        query = {p["name"]: REQUIRED_VALUES.get(p["name"], made.get(p["name"]))
                 for p in ops["get"].get("parameters", []) if p["in"] == "query" and p["required"]}
        for url in urls:
            yield path, url, query


def read_by(client, url: str, parses: List[Tuple[type, bool]]) -> Tuple[Set[str], Set[type], bool]:
    """What the view of ``url`` read of its query: the names, the options classes it parsed, and whether
    it went through the whole query."""
    parses.clear()
    with client:
        r = client.get(url)
        r.get_data()  # a streamed body made to its end
        r.close()
        assert r.status_code == 200, (url, r.status_code, r.get_data()[:300])  # so every read happened
        args = current_request.args
        looked_up, listed = set(args.looked_up), args.listed
    strict = {cls for cls, is_strict in parses if is_strict}
    names = looked_up | (set(fields_of(strict)) if listed else set())
    return names, {cls for cls, _ in parses}, listed


def test_every_get_route_outside_the_document_is_a_page(app, spec) -> None:
    described = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    outside = {rule.endpoint for rule in app.url_map.iter_rules() if "GET" in (rule.methods or set())
               and (re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), "get") not in described}
    assert outside == set(PAGES)


def test_every_query_parameter_a_get_route_reads_is_documented(reading_app, made, parses) -> None:
    """Each GET route of the document is called (200, so its view read all it reads) with a query string
    that notes what the view looks up; what it reads, and the fields of every options class it parses
    the whole query with, must be exactly its documented query parameters, each with the type, default,
    choices and range of the field the view parses it as."""
    spec = build(reading_app)
    client = reading_app.test_client()
    read: Dict[str, Set[str]] = {}
    for path, url, query in get_probes(spec, made):
        names, classes, listed = read_by(client, f"{url}?{urlencode(query, doseq=True)}", parses)
        documented = {p["name"]: p for p in spec["paths"][path]["get"].get("parameters", [])
                      if p["in"] == "query"}
        assert names <= set(documented), (url, names - set(documented))
        read.setdefault(path, set()).update(names)
        if listed:  # every name it went through: any but its options' must be refused, not ignored
            assert any(is_strict for _, is_strict in parses), url
            bad = client.get(f"{url}?{urlencode({**query, 'not_an_option': '1'})}")
            assert bad.status_code == 422 and bad.json["error"] == "bad_option", url
        options = fields_of(classes)
        for name in names & set(options):
            assert_field_schema(resolve(spec, documented[name]["schema"]), options[name], f"{url} {name}")
    for path, ops in spec["paths"].items():
        if "get" in ops:
            documented = {p["name"] for p in ops["get"].get("parameters", []) if p["in"] == "query"}
            assert documented == read[path], (path, documented - read[path])  # none documented in vain
    assert {"layout", "divergence", "convergence", "swap_eyes", "max_side", "download"} == \
        read["/api/v1/depth/{depth_id}/stereo.png"]


def test_the_other_query_parameters_are_the_servers(spec) -> None:
    """The names that are no option field: their ranges and choices are the constants the server reads
    them with."""
    for path, ops in spec["paths"].items():
        for p in ops.get("get", {}).get("parameters", []):
            schema = resolve(spec, p["schema"])
            if p["name"] == "max_side":
                assert (schema["minimum"], schema["maximum"]) == PREVIEW_SIDES, path
            if p["name"] == "format":
                assert schema["enum"] == list(IMAGE_FORMATS), path
    legend = spec["paths"]["/api/v1/depth/{depth_id}/legend.json"]["get"]["parameters"]
    assert next(p for p in legend if p["name"] == "view")["schema"]["enum"] == list(LEGEND_VIEWS)


def test_post_form_fields_are_the_fields_the_views_parse(reading_app, made, parses, tmp_path) -> None:
    """Each POST body's options are the fields of the options classes its view parses, with their
    metadata; its other names are the few the view reads besides."""
    spec = build(reading_app)
    client = reading_app.test_client()
    clip = write_clip(tmp_path / "post.mp4", moving_scene(2, 64, 48)).read_bytes()
    bodies = {"/api/v1/depth": form_data({"image": (small_photo(), "p.png"), "views": "none"}),
              "/api/v1/render": {"json": {"depth_id": made["depth_id"], "views": "none"}},
              "/api/v1/batch": form_data({"image": (small_photo(), "p.png"), "views": "none"}),
              "/api/v1/video": form_data({"video": (clip, "c.mp4")})}
    posts = {p for p, ops in spec["paths"].items() if "requestBody" in ops.get("post", {})}
    assert set(bodies) == posts - {"/api/v1/depth/{depth_id}/calibrate"}  # that one takes points only
    for path, body in bodies.items():
        parses.clear()
        r = client.post(path, **body)
        assert r.status_code in (200, 202), (path, r.json)
        options = fields_of({cls for cls, _ in parses})
        for content in spec["paths"][path]["post"]["requestBody"]["content"].values():
            props = content["schema"]["properties"]
            assert set(props) - set(options) == POST_EXTRAS[path], (path, set(props) - set(options))
            assert set(options) <= set(props), (path, set(options) - set(props))
            for name, f in options.items():
                assert_field_schema(props[name], f, f"{path} {name}")
