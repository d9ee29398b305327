"""The application factory: config order and the once-per-process model."""

from __future__ import annotations

import os
from typing import List

import pytest

from app import create_app
from app.depth.registry import WeightsError


def test_model_is_loaded_once_and_kept(app, weights_path) -> None:
    from app.depth.engines import resolve_engine

    model = app.extensions["depth_models"]["midas-small"]
    assert model.weights_path == weights_path and app.config["ENGINE"] == "auto"
    assert model.engine == resolve_engine("auto") and model.precision == "fp32"


def test_healthz(app) -> None:
    body = app.test_client().get("/healthz").get_json()
    assert body["status"] == "ok" and body["torch_threads"] == 2
    assert body["weights_sha256"] == app.extensions["depth_models"]["midas-small"].weights_sha256


def test_environment_then_test_config(monkeypatch, weights_path) -> None:
    monkeypatch.setenv("DEPTHMAP_MAX_PIXELS", "1234")
    monkeypatch.setenv("DEPTHMAP_MAX_SIDE", "999")
    monkeypatch.setenv("MIDAS_WEIGHTS", str(weights_path))
    app = create_app({"MAX_SIDE": 512, "ENGINE": "eager"})
    assert app.config["MAX_PIXELS"] == 1234 and app.config["MAX_SIDE"] == 512
    assert app.config["SECRET_KEY"] and app.extensions["depth_models"]["midas-small"].engine == "eager"


def test_missing_weights_never_falls_back(tmp_path) -> None:
    with pytest.raises(WeightsError):
        create_app({"MIDAS_WEIGHTS": str(tmp_path / "absent.pt")})


def test_secret_key_and_gate_come_from_the_environment(monkeypatch, weights_path) -> None:
    monkeypatch.setenv("MIDAS_WEIGHTS", str(weights_path))
    config = {"TORCHSCRIPT": False}
    first, second = create_app(config), create_app(config)
    assert len(first.config["SECRET_KEY"]) >= 32  # never a fixed key: random per process...
    assert first.config["SECRET_KEY"] != second.config["SECRET_KEY"]
    monkeypatch.setenv("DEPTHMAP_SECRET_KEY", "from-the-environment")  # ...unless the operator sets one
    monkeypatch.setenv("DEPTHMAP_INFERENCE_QUEUE", "5")
    monkeypatch.setenv("DEPTHMAP_QUEUE_TIMEOUT", "2.5")
    app = create_app(config)
    gate = app.extensions["depth_service"].gate
    assert app.config["SECRET_KEY"] == "from-the-environment" and not app.debug
    assert (gate.slots, gate.queue, gate.timeout) == (1, 5, 2.5)


# a worker on an ONNX engine whose export an earlier start (or `depthmap serve`) cached: everything it
# does, photo included, without torch; prints whether torch was imported and the depth's checksum
WITHOUT_TORCH = """
import sys, zlib
import numpy as np
from app import create_app
from app.options import Options
from app.imaging.pipeline import predict
weights, model, data, photo = sys.argv[1:]
app = create_app({"MIDAS_WEIGHTS": weights, "DAV2_WEIGHTS": weights, "MODELS": model,
                  "ENGINE": "onnxruntime", "TORCH_THREADS": 2, "DATA_DIR": data})
body = app.test_client().post("/api/v1/depth", data={"image": (open(photo, "rb"), "p.jpg"),
                                                      "views": "heatmap"}).get_json()
depth = predict(open(photo, "rb").read(), app.extensions["depth_models"][model], Options(model=model)).depth
print("torch" in sys.modules, body["options"]["model"], zlib.crc32(depth.tobytes()))
"""


@pytest.mark.parametrize("model", ["midas-small", "depth-anything-v2-small"])
def test_a_cached_export_serves_without_torch(model, weights_path, dav2_weights_path, tmp_path,
                                              samples) -> None:
    """About 200 MB of every worker's memory is torch: a worker that finds its engine's export (and,
    for Depth Anything V2, the position embedding kept beside it) never imports it, and computes the
    same depth as one that made the export. A damaged embedding file is written again by a start that
    loads the checkpoint."""
    import subprocess
    import sys
    import zlib

    from app.depth.model import DepthModel, file_digest
    from app.depth.registry import spec
    from app.options import Options
    from app.imaging.pipeline import predict
    from app.depth.engines import onnx_cache_path, positions_path
    from support.samples import SAMPLES
    from support.servers import this_checkout

    weights = dav2_weights_path if model == "depth-anything-v2-small" else weights_path
    cache = tmp_path / "cache"

    def made() -> int:  # exports (or reads the export), with torch
        loaded = DepthModel.load(weights, threads=2, engine="onnxruntime", warm_up=False,
                                 onnx_cache=cache / "onnx", model=spec(model))
        return zlib.crc32(predict(samples["rocket"], loaded, Options(model=model)).depth.tobytes())

    def worker() -> List[str]:
        env = this_checkout({k: v for k, v in os.environ.items() if not k.startswith("DEPTHMAP_")})
        run = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(weights), model,
                              str(tmp_path / "data"), str(SAMPLES["rocket"])],
                             env={**env, "DEPTHMAP_CACHE": str(cache)},
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    expected = made()
    assert worker() == ["False", model, str(expected)]
    if model == "depth-anything-v2-small":
        kept = positions_path(onnx_cache_path(cache / "onnx", file_digest(weights, "sha256"), model))
        kept.write_bytes(kept.read_bytes()[:1000])  # truncated
        assert worker() == ["True", model, str(expected)]  # torch loads the checkpoint...
        assert worker() == ["False", model, str(expected)]  # ...and keeps the embedding again
