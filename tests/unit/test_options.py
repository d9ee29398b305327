"""Options: defaults, parsing of form/CLI strings, and every kind of bad value."""

from __future__ import annotations

import pytest

from app.options import OptionError, Options


def test_defaults() -> None:
    o = Options()
    assert (o.colormap, o.size, o.square, o.log, o.clahe, o.alpha) == (
        "inferno", 256, "off", False, False, 0.5)


def test_from_strings() -> None:
    o = Options.from_strings({"colormap": "viridis", "size": "384", "log": "on", "clahe": "false",
                              "alpha": "0.25", "clahe_grid": "4", "brightness": "-0.5"})
    assert (o.colormap, o.size, o.log, o.clahe, o.alpha, o.clahe_grid, o.brightness) == (
        "viridis", 384, True, False, 0.25, 4, -0.5)


@pytest.mark.parametrize("values,name", [
    ({"colormap": "rainbow-unicorn"}, "colormap"),
    ({"size": "300"}, "size"),
    ({"size": "big"}, "size"),
    ({"size": "256.0"}, "size"),
    ({"alpha": "1.5"}, "alpha"),
    ({"alpha": "-0.1"}, "alpha"),
    ({"alpha": "nan"}, "alpha"),
    ({"contrast": "inf"}, "contrast"),
    ({"brightness": "-inf"}, "brightness"),
    ({"contrast": "abc"}, "contrast"),
    ({"clip": "50"}, "clip"),
    ({"clahe_clip": "0"}, "clahe_clip"),
    ({"clahe_grid": "2.5"}, "clahe_grid"),
    ({"clahe_grid": "0"}, "clahe_grid"),
    ({"log": "maybe"}, "log"),
    ({"square": "circle"}, "square"),
])
def test_bad_values_name_the_option(values, name) -> None:
    with pytest.raises(OptionError) as info:
        Options.from_strings(values)
    assert info.value.name == name and info.value.message


def test_unknown_option_only_when_strict() -> None:
    assert Options.from_strings({"bogus": "1"}) == Options()
    with pytest.raises(OptionError, match="unknown option"):
        Options.from_strings({"bogus": "1"}, strict=True)


@pytest.mark.parametrize("kwargs", [{"alpha": True}, {"log": 1}, {"size": "256"}, {"contrast": float("nan")}])
def test_programmatic_values_are_checked_too(kwargs) -> None:
    with pytest.raises(OptionError):
        Options(**kwargs)


def test_docs_document_every_option() -> None:
    """The option table in docs/cli.md is the user's reference: it must name each option and its default."""
    from dataclasses import fields
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs/cli.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    for f in fields(Options):
        assert f.name in rows, f"docs/cli.md has no row for option {f.name}"
        default = {True: "on", False: "off"}.get(f.default, f.default) if f.type == "bool" else f.default
        assert f"| {default} |" in rows[f.name], f"docs/cli.md shows the wrong default for {f.name}"
