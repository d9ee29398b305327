"""Helper functions and constants for the tests; the fixtures are in conftest.py. pytest puts this folder
on ``sys.path`` through the ``pythonpath`` setting in pyproject.toml, so tests import it as ``helpers``."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = {p.stem: p for p in sorted((FIXTURES / "samples").iterdir()) if p.suffix in (".png", ".jpg")}


def reference(name: str, kind: str) -> np.ndarray:
    """The official implementation's array for a sample: net_input, net_output or upsampled."""
    return np.load(FIXTURES / "reference" / f"{name}.{kind}.npy")


# requests through Flask's test client ------------------------------------------------------------------

def form_data(fields: Dict[str, object]) -> Dict[str, object]:
    """Test-client keyword arguments for a multipart body built in memory; ``(bytes, filename)`` values
    are files, lists give repeated fields. (The test client's own encoder spools bodies over 500 KB to
    temporary files it never closes.)"""
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import encode_multipart

    values: MultiDict = MultiDict()
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, tuple):
                item = FileStorage(io.BytesIO(item[0]), filename=item[1])
            values.add(name, item)
    boundary, body = encode_multipart(values)
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


# a real server ----------------------------------------------------------------------------------------

DEPTHMAP = Path(sys.executable).parent / "depthmap"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(weights: Path, log_path: Path, *args: str,
                   env: Optional[Dict[str, Optional[str]]] = None) -> Iterator[Tuple[str, subprocess.Popen]]:
    """``depthmap serve`` as a real process on a free loopback port; yields its URL and process."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEPTHMAP_")}
    full_env = {**base, "MIDAS_WEIGHTS": str(weights), "DEPTHMAP_TORCH_THREADS": "2", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: leave the variable unset
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(DEPTHMAP), "serve", "--bind", f"127.0.0.1:{port}", *args],
                                env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /healthz in 90 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
