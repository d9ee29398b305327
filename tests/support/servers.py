"""The studio's own processes, started for real: ``depthmap`` commands, ``depthmap serve`` on a free
loopback port, ``depthmap worker``; each runs the code of this checkout. And a plain HTTP file server
in a thread, for what the studio downloads or a page of another site."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import requests

DEPTHMAP = Path(sys.executable).parent / "depthmap"
REPO = Path(__file__).parents[2]


def this_checkout(env: Dict[str, str]) -> Dict[str, str]:
    """``env`` with this checkout first on the import path: the venv's ``depthmap`` may be an editable
    install of another working tree, and a test must run the code it sits beside."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}


def run_cli(args: List[str], env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``depthmap ARGS`` as a process, without this shell's MIDAS_WEIGHTS and DEPTHMAP_CACHE (``env`` is
    added); its output as text."""
    base = {k: v for k, v in os.environ.items() if k not in ("MIDAS_WEIGHTS", "DEPTHMAP_CACHE")}
    return subprocess.run([str(DEPTHMAP), *args], capture_output=True, text=True, timeout=timeout,
                          env=this_checkout({**base, **(env or {})}), cwd=cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Ends ``proc`` unless it ended already: SIGTERM, then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_server(weights: Path, log_path: Path, *args: str,
                   env: Optional[Dict[str, Optional[str]]] = None) -> Iterator[Tuple[str, subprocess.Popen]]:
    """``depthmap serve`` as a real process on a free loopback port; yields its URL and process. Its
    results go to a folder beside ``log_path`` unless ``env`` names a DEPTHMAP_DATA_DIR (or Redis)."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEPTHMAP_")}
    # results in a folder of this server's own (beside its log) unless the test shares one
    full_env = {**base, "MIDAS_WEIGHTS": str(weights), "DEPTHMAP_TORCH_THREADS": "2",
                "DEPTHMAP_DATA_DIR": str(log_path.parent / "data"), **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: leave the variable unset
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(DEPTHMAP), "serve", "--bind", f"127.0.0.1:{port}", *args],
                                env=this_checkout(full_env), stdout=log, stderr=subprocess.STDOUT)
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
        stop(proc)


@contextlib.contextmanager
def running_worker(weights: Path, log_path: Path, env: Dict[str, str]) -> Iterator[subprocess.Popen]:
    """``depthmap worker`` as a real process (``env`` added to a clean environment), up once it logs that
    it runs; stopped (SIGTERM, then SIGKILL) at the end unless the test ended it already."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEPTHMAP_")}
    full_env = {**base, "MIDAS_WEIGHTS": str(weights), "DEPTHMAP_TORCH_THREADS": "1", **env}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(DEPTHMAP), "worker"], env=this_checkout(full_env), stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "video job worker:" not in log_path.read_text():
            if proc.poll() is not None:
                pytest.fail(f"worker exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker did not start in 120 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc)


def serving(root: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the files in ``root`` until the generator is closed;
    yields its URL."""
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def worker_pid(url: str) -> int:
    """The pid of the server's worker that answers /healthz (a replaced worker has another)."""
    return requests.get(url + "/healthz", timeout=30).json()["pid"]


def entries(url: str) -> int:
    """How many results the server's result store holds (from /healthz)."""
    return requests.get(url + "/healthz", timeout=10).json()["store"]["entries"]
