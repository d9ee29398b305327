"""The OpenAPI document: generated from the code, valid OpenAPI 3.1, complete (every API route), true to
the server (its option ranges are the ones the server enforces), and checked by schemathesis, which
sends generated requests to every operation and validates each answer's status, content type and body
against the document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from app.depth.registry import DEPTH_ANYTHING_V2_SMALL, MIDAS_SMALL
from app.options import Options
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
    from app.web.openapi import build_spec

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
