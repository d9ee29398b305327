"""The code's layout is a rule a tool checks: the core is Flask-free, the web layer does not use the CLI,
and no module of ``app`` imports itself back through others (import-linter and its graph, grimp)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).parents[1]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_flask_free_contract_names_every_core_module() -> None:
    """A new module in app/ is core unless it goes to app/web/: the contract must name it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["name"] == "the core is Flask-free")
    core = {f"app.{p.stem}" for p in (ROOT / "app").glob("*.py") if p.stem != "__init__"}
    assert set(contract["source_modules"]) == core
    assert {"flask", "werkzeug", "app.web"} <= set(contract["forbidden_modules"])


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
