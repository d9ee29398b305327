"""Shared fixtures: synthetic weights in the official format, the loaded model, the sample photos."""

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

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import write_synthetic_weights  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = {p.stem: p for p in sorted((FIXTURES / "samples").iterdir()) if p.suffix in (".png", ".jpg")}


@pytest.fixture(scope="session")
def manifest_path() -> Path:
    return FIXTURES / "state_dict_manifest.json"


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory: pytest.TempPathFactory, manifest_path: Path) -> Path:
    """The synthetic MiDaS-small weights, regenerated from the manifest and saved like the official file."""
    return write_synthetic_weights(manifest_path, tmp_path_factory.mktemp("weights") / "synthetic.pt")


@pytest.fixture(scope="session")
def engine_models(weights_path: Path):
    """``get(engine)``: the synthetic-weights model on that engine, loaded once per session; skips,
    visibly, where the engine's optional packages are not installed. The bf16 engine is built even on
    CPUs without native bfloat16 (oneDNN emulates it, slowly), so that its numerics are tested
    everywhere."""
    from app.model import DepthModel, build_runner, engine_problem, file_digest, load_network

    made: Dict[str, object] = {}

    def get(engine: str):
        if engine not in made:
            problem = engine_problem(engine)
            if engine == "bf16" and problem:
                runner, precision = build_runner(load_network(weights_path), "bf16", 2, check=False)
                made[engine] = DepthModel(runner, weights_path, file_digest(weights_path, "sha256"), 2,
                                          "bf16", precision)
            elif problem:
                pytest.skip(problem)
            else:
                made[engine] = DepthModel.load(weights_path, threads=2, engine=engine, warm_up=False)
        return made[engine]

    return get


@pytest.fixture(scope="session")
def model(engine_models):
    return engine_models("torchscript")


@pytest.fixture(scope="session")
def eager_model(engine_models):
    return engine_models("eager")


@pytest.fixture(scope="session")
def samples() -> Dict[str, bytes]:
    return {name: path.read_bytes() for name, path in SAMPLES.items()}


def reference(name: str, kind: str) -> np.ndarray:
    """The official implementation's array for a sample: net_input, net_output or upsampled."""
    return np.load(FIXTURES / "reference" / f"{name}.{kind}.npy")


@pytest.fixture(scope="session")
def real_weights() -> Path:
    """The official checkpoint, if this machine has it (MIDAS_REAL_WEIGHTS=PATH)."""
    path = os.environ.get("MIDAS_REAL_WEIGHTS")
    if not path or not Path(path).is_file():
        pytest.skip("official midas_v21_small_256.pt not available: set MIDAS_REAL_WEIGHTS=PATH")
    return Path(path)


@pytest.fixture(scope="session")
def app(weights_path: Path):
    """The application as ``create_app`` builds it, on the synthetic weights."""
    from app import create_app

    return create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 2})


@pytest.fixture()
def client(app):
    return app.test_client()


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
