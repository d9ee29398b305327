"""app/config.py is the one list of settings: the docs' table is generated from it, the code reads no
setting it does not list, and environment values are read by their type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.docs import marked

from app import config

ROOT = Path(__file__).parents[2]


def test_docs_table_is_the_generated_one() -> None:
    assert marked(ROOT / "docs/configuration.md", "settings") == config.markdown_table(), \
        "run `python -m app.config` and paste its table into docs/configuration.md"


def test_every_config_key_the_app_reads_is_a_setting() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "app").rglob("*.py"))
    read = set(re.findall(r"""(?:config|\bc)\[["']([A-Z_]+)["']\]""", source))
    assert read and read <= set(config.app_defaults())


def test_every_environment_variable_the_code_reads_is_a_setting() -> None:
    files = [*(ROOT / "app").rglob("*.py"), *(ROOT / "docker").iterdir(), ROOT / "Dockerfile"]
    named, constants = set(), set()
    for path in files:
        text = path.read_text()
        named |= set(re.findall(r"\b((?:DEPTHMAP|MIDAS|DAV2)_[A-Z_]+[A-Z])\b", text))
        constants |= set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[:=]", text, re.M))  # Python names
    assert named - constants - set(config.BY_ENV) <= {"DEPTHMAP_VIDEO_"}  # a prefix in a comment


@pytest.mark.parametrize(("env", "text", "value"), [
    ("DEPTHMAP_WEIGHTS_DOWNLOAD", "off", False), ("DEPTHMAP_WEIGHTS_DOWNLOAD", " Yes ", True),
    ("DEPTHMAP_MAX_PIXELS", "1234", 1234), ("DEPTHMAP_QUEUE_TIMEOUT", "2.5", 2.5),
    ("DEPTHMAP_VIDEO_DIR", "/srv/jobs", "/srv/jobs"), ("DEPTHMAP_MAX_SIDE", "", 4096),
])
def test_values_are_read_by_type(env: str, text: str, value: object) -> None:
    assert config.get(env, {env: text}) == value


@pytest.mark.parametrize(("env", "text"), [("DEPTHMAP_WEIGHTS_DOWNLOAD", "maybe"),
                                           ("DEPTHMAP_MAX_PIXELS", "4e7x"), ("DEPTHMAP_WORKERS", "two")])
def test_a_bad_value_names_its_variable(env: str, text: str) -> None:
    with pytest.raises(config.ConfigError, match=env):
        config.get(env, {env: text})


def test_only_set_variables_reach_the_app() -> None:
    assert config.app_environ({"DEPTHMAP_MAX_SIDE": "999", "DEPTHMAP_BIND": "0.0.0.0:1",
                               "DEPTHMAP_UNKNOWN": "1", "MIDAS_WEIGHTS": "/w.pt"}) == {
        "MAX_SIDE": 999, "MIDAS_WEIGHTS": "/w.pt"}
