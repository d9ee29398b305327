"""The code's layout is a rule a tool checks: app/ is layers (cli, web, serving, imaging, options, depth,
config), each importing only those below it; only app.web uses Flask; and no module of ``app`` imports
itself back through others (import-linter and its graph, grimp)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).parents[2]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120,
                          env=env)


def test_import_contracts_hold() -> None:
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("importer, line, broken", [
    ("app/depth/cpus.py", "from ..imaging import pipeline", "app.depth is not allowed to import app.imaging"),
    ("app/imaging/legend.py", "from ..serving import store",
     "app.imaging is not allowed to import app.serving"),
    ("app/serving/gate.py", "from ..web import errors", "app.serving is not allowed to import app.web"),
    ("app/web/health.py", "from .. import cli", "app.web is not allowed to import app.cli"),
    ("app/config.py", "from .options import Options", "app.config is not allowed to import app.options"),
    ("app/errors.py", "from . import config", "app.errors is not allowed to import app.config"),
])
def test_a_planted_upward_import_breaks_the_layers(tmp_path: Path, importer: str, line: str,
                                                  broken: str) -> None:
    """The contract is not a list someone keeps by hand: an import against the layers, anywhere, fails."""
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / importer, "a") as f:
        f.write(f"\n{line}  # planted\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0
    assert broken in proc.stdout


def test_only_the_web_layer_may_use_flask_and_every_other_room_is_named() -> None:
    """A new module or package in app/ is Flask-free unless it is app.web: the contract must name it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["name"] == "only app.web uses Flask")
    rooms = {f"app.{p.stem}" for p in (ROOT / "app").glob("*.py") if p.stem != "__init__"}
    rooms |= {f"app.{p.parent.name}" for p in (ROOT / "app").glob("*/__init__.py")} - {"app.web"}
    assert set(contract["source_modules"]) == rooms
    assert {"flask", "werkzeug"} <= set(contract["forbidden_modules"])
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    assert (rooms - {"app.__main__"}) | {"app.web"} <= set(layers)


def test_no_import_cycle_in_app() -> None:
    graph = grimp.build_graph("app")
    modules = sorted(graph.modules)
    cycles = [(a, b) for i, a in enumerate(modules) for b in modules[i + 1:]
              if graph.direct_import_exists(importer=a, imported=b, as_packages=False)
              and graph.chain_exists(importer=b, imported=a)]
    assert cycles == []


def test_only_the_web_layer_and_the_factory_mention_flask() -> None:
    mentions = {str(p.relative_to(ROOT)) for p in (ROOT / "app").rglob("*.py")
                if "flask" in p.read_text()}  # as `grep -rl flask app/` sees it
    assert {m for m in mentions if not m.startswith("app/web/")} <= {"app/__init__.py"}
