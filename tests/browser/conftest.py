"""The browser tests' fixtures: a real `depthmap serve` (one per test module) and a headless Chromium. Each
browser test module skips itself first where Chromium is missing (support.browser.skip_without_browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from support.browser import make_driver
from support.servers import running_server


@pytest.fixture(scope="module")
def server_url(request, weights_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``depthmap serve`` as a real process on the synthetic weights, one per test module; its URL."""
    log = tmp_path_factory.mktemp(request.module.__name__) / "server.log"
    with running_server(weights_path, log) as (url, _):
        yield url


@pytest.fixture(scope="module")
def two_model_server_url(weights_path: Path, dav2_weights_path: Path,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``depthmap serve --model midas-small --model depth-anything-v2-small`` as a real process."""
    log = tmp_path_factory.mktemp("two-models") / "server.log"
    with running_server(weights_path, log, "--model", "midas-small", "--model", "depth-anything-v2-small",
                        env={"DAV2_WEIGHTS": str(dav2_weights_path)}) as (url, _):
        yield url


@pytest.fixture(scope="module")
def driver():
    """A headless Chromium, one per test module."""
    d = make_driver()
    yield d
    d.quit()
