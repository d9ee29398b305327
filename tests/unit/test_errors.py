"""One registry of error codes: every code the code answers is in it, the docs' table and the OpenAPI
document are generated from it, and a code cannot be sent with a status it does not go with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.docs import marked

from app.web.errors import ERRORS, ApiError, markdown_table

ROOT = Path(__file__).parents[2]


def codes_in(pattern: str, paths) -> set:
    return {code for p in paths for code in re.findall(pattern, p.read_text())}


def test_every_code_the_code_answers_is_registered() -> None:
    web = codes_in(r'ApiError\(\s*"([a-z_]+)"', (ROOT / "app/web").glob("*.py"))
    core = codes_in(r'(?:ImageError|VideoError)\(\s*"([a-z_]+)"', (ROOT / "app").rglob("*.py"))
    assert {"bad_option", "not_cached", "busy", "no_job"} <= web
    assert {"empty", "corrupt", "not_image", "not_video", "too_long"} <= core
    assert web | core <= set(ERRORS)


def test_docs_table_is_the_generated_one() -> None:
    assert marked(ROOT / "docs/api.md", "errors") == markdown_table()


def test_openapi_lists_the_registry(client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"] == list(ERRORS)


def test_a_code_goes_only_with_its_statuses() -> None:
    assert ApiError("too_many_files", "x", status=413).code == 413
    assert ApiError("bad_option", "x").code == 422
    with pytest.raises(ValueError):
        ApiError("bad_option", "x", status=400)
    with pytest.raises(KeyError):
        ApiError("no_such_code", "x")

