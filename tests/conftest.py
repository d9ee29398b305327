"""Shared fixtures: synthetic weights in the official format, the loaded model, the sample photos, the app,
local servers (the weights over HTTP) and Redis; the browser tests' own (a real server and Chromium) are in
browser/conftest.py. Fixtures only: the functions and classes they use, and that tests use, are in the
support package (tests/support/)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Iterator

import pytest

import app.depth.engines  # noqa: F401 - sets OMP_WAIT_POLICY before torch is first imported (by synthetic)
from support.redis_servers import REDIS_SERVER, RedisServer, tls_files
from support.samples import DAV2_SHARED, FIXTURES, SAMPLES
from support.servers import serving
from support.synthetic import write_dav2_synthetic_weights, write_synthetic_weights


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh user cache folder for the session (``XDG_CACHE_HOME``, which the servers and commands
    the tests start inherit; ``DEPTHMAP_CACHE`` unset), so that the ONNX exports of the synthetic
    weights never land in the user's own cache. Yields ``app.depth.model.cache_dir()``."""
    path = tmp_path_factory.mktemp("xdg-cache")
    before = {k: os.environ.pop(k, None) for k in ("XDG_CACHE_HOME", "DEPTHMAP_CACHE")}
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path / "depthmap"
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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
    from app.depth.torch_engines import build_runner, load_network
    from app.depth.model import DepthModel, file_digest
    from app.depth.engines import engine_problem

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


# Depth Anything V2 Small: its manifest and references are in the team's shared folder -------------------

@pytest.fixture(scope="session")
def dav2_manifest_path() -> Path:
    """The official Depth Anything V2 Small state_dict manifest; skips, visibly, where the shared folder
    is not beside the clone."""
    path = DAV2_SHARED / "state_dict_manifest.json"
    if not path.is_file():
        pytest.skip(f"{DAV2_SHARED} not beside the repository (the team's shared/models)")
    return path


@pytest.fixture(scope="session")
def dav2_weights_path(tmp_path_factory: pytest.TempPathFactory, dav2_manifest_path: Path) -> Path:
    """The synthetic Depth Anything V2 Small weights, regenerated from the manifest and saved like the
    official file (99 MB, in a temp folder)."""
    return write_dav2_synthetic_weights(dav2_manifest_path, tmp_path_factory.mktemp("dav2") / "synthetic.pt")


@pytest.fixture(scope="session")
def dav2_reference_dir(dav2_manifest_path: Path) -> Path:
    """The official code's net_input, net_output and upsampled arrays for the samples at 518 and 364."""
    folder = dav2_manifest_path.parent / "reference"
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing")
    return folder


@pytest.fixture(scope="session")
def dav2_net(dav2_weights_path: Path):
    """An eval-mode ``DepthAnythingV2Small`` with the synthetic weights, strictly loaded."""
    import torch

    from app.depth.dav2 import DepthAnythingV2Small

    net = DepthAnythingV2Small().eval()
    net.load_state_dict(torch.load(dav2_weights_path, map_location="cpu", weights_only=True), strict=True)
    return net


@pytest.fixture(scope="session")
def dav2_engines(dav2_net, dav2_weights_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """``get(engine)``: the synthetic-weights Depth Anything V2 Small compiled for that engine (a runner
    from (1, 3, h, w) to (1, h, w) arrays), built once per session, the ONNX-based engines from one
    export; skips, visibly, where the engine cannot run here."""
    from app.depth.torch_engines import build_runner
    from app.depth.model import file_digest
    from app.depth.engines import DAV2_SMALL, engine_problem

    sha256, onnx_cache = file_digest(dav2_weights_path, "sha256"), tmp_path_factory.mktemp("dav2-onnx")

    made: Dict[str, object] = {}

    def get(engine: str):
        if engine not in made:
            problem = engine_problem(engine, DAV2_SMALL)
            if problem:
                pytest.skip(problem)
            made[engine] = build_runner(dav2_net, engine, 2, weights_sha256=sha256, onnx_cache=onnx_cache)[0]
        return made[engine]

    return get


@pytest.fixture(scope="session")
def samples() -> Dict[str, bytes]:
    return {name: path.read_bytes() for name, path in SAMPLES.items()}


@pytest.fixture(scope="session")
def real_weights() -> Path:
    """The official checkpoint, if this machine has it (MIDAS_REAL_WEIGHTS=PATH)."""
    path = os.environ.get("MIDAS_REAL_WEIGHTS")
    if not path or not Path(path).is_file():
        pytest.skip("official midas_v21_small_256.pt not available: set MIDAS_REAL_WEIGHTS=PATH")
    return Path(path)


@pytest.fixture(scope="session")
def app(weights_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """The application as ``create_app`` builds it, on the synthetic weights, its results in a folder of
    its own."""
    from app import create_app

    return create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 2,
                       "DATA_DIR": str(tmp_path_factory.mktemp("data"))})


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def dav2_model(dav2_weights_path: Path):
    """Depth Anything V2 Small on the synthetic weights as a server loads it (engine ``auto``)."""
    from app.depth.model import DepthModel
    from app.depth.registry import DEPTH_ANYTHING_V2_SMALL

    return DepthModel.load(dav2_weights_path, threads=2, warm_up=False, model=DEPTH_ANYTHING_V2_SMALL)


@pytest.fixture(scope="session")
def two_model_app(weights_path: Path, dav2_weights_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """The application loading both models, MiDaS small first (the default of requests)."""
    from app import create_app

    return create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 2,
                       "DAV2_WEIGHTS": str(dav2_weights_path),
                       "MODELS": "midas-small,depth-anything-v2-small",
                       "DATA_DIR": str(tmp_path_factory.mktemp("data"))})


@pytest.fixture()
def weights_server(weights_path: Path, tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the synthetic weights (and a junk file)."""
    from app.depth.model import WEIGHTS_FILENAME

    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(weights_path, root / WEIGHTS_FILENAME)
    (root / "junk.pt").write_bytes(b"this is not a checkpoint")

    yield from serving(root)


@pytest.fixture()
def dav2_weights_server(dav2_weights_path: Path, weights_path: Path, tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the synthetic Depth Anything weights under the official
    file name, and under ``wrong/`` the MiDaS weights under that same name."""
    from app.depth.registry import DEPTH_ANYTHING_V2_SMALL

    root = tmp_path / "www"
    (root / "wrong").mkdir(parents=True)
    (root / DEPTH_ANYTHING_V2_SMALL.weights_filename).symlink_to(dav2_weights_path)
    (root / "wrong" / DEPTH_ANYTHING_V2_SMALL.weights_filename).symlink_to(weights_path)
    yield from serving(root)


# the result store: the embedded one and a real Redis ------------------------------------------------------

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Debian's ``redis-server`` on a free loopback port with a password, for the session; a test that
    stops it starts it again (``redis_server.start()``)."""
    if not Path(REDIS_SERVER).is_file():
        pytest.fail("redis-server is missing: apt install redis-server (.ci/run does)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of the session's Redis, running and emptied for this test."""
    import redis

    if redis_server.proc is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Debian's ``redis-server`` speaking TLS only (no plain port), with a password and a certificate from
    a CA made for the test; ``tls_redis.url`` is its ``rediss://`` URL naming that CA,
    ``tls_redis.tls["other_ca"]`` a CA that did not sign it."""
    if not Path(REDIS_SERVER).is_file():
        pytest.fail("redis-server is missing: apt install redis-server (.ci/run does)")
    folder = tmp_path_factory.mktemp("redis-tls")
    server = RedisServer(folder, tls=tls_files(folder / "tls"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def file_store(tmp_path: Path):
    """An empty embedded result store in a temp folder."""
    from app.serving.store import FileStore

    return FileStore(tmp_path / "data", max_bytes=10**9, ttl_s=3600)


@pytest.fixture(params=["files", "redis"])
def result_store(request, tmp_path: Path):
    """A result store of each backend, empty: the embedded files in a temp folder, and a real Redis."""
    from app.serving.store import FileStore, RedisStore

    if request.param == "files":
        return FileStore(tmp_path / "data", max_bytes=10**9, ttl_s=3600)
    return RedisStore(request.getfixturevalue("redis_url"), ttl_s=3600)
