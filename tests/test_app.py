"""The application factory: config order and the once-per-process model."""

from __future__ import annotations

import os

import pytest

from app import create_app
from app.models import WeightsError


def test_model_is_loaded_once_and_kept(app, weights_path) -> None:
    from app.runtime import resolve_engine

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
from app.pipeline import predict
app = create_app({"MIDAS_WEIGHTS": sys.argv[1], "ENGINE": "onnxruntime", "TORCH_THREADS": 2,
                  "DATA_DIR": sys.argv[2]})
body = app.test_client().post("/api/v1/depth", data={"image": (open(sys.argv[3], "rb"), "p.jpg"),
                                                      "views": "heatmap"}).get_json()
model = app.extensions["depth_models"]["midas-small"]
depth = predict(open(sys.argv[3], "rb").read(), model, Options()).depth
print("torch" in sys.modules, body["options"]["model"], zlib.crc32(depth.tobytes()))
"""


def test_a_cached_export_serves_without_torch(weights_path, tmp_path, samples) -> None:
    """About 200 MB of every worker's memory is torch: a worker that finds its engine's export never
    imports it, and computes the same depth as one that made the export."""
    import subprocess
    import sys
    import zlib

    from app.model import DepthModel
    from app.options import Options
    from app.pipeline import predict
    from helpers import SAMPLES, this_checkout

    cache = tmp_path / "cache"
    made = DepthModel.load(weights_path, threads=2, engine="onnxruntime", warm_up=False,
                           onnx_cache=cache / "onnx")  # exports, with torch
    expected = zlib.crc32(predict(samples["rocket"], made, Options()).depth.tobytes())
    env = this_checkout({k: v for k, v in os.environ.items() if not k.startswith("DEPTHMAP_")})
    run = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(weights_path), str(tmp_path / "data"),
                          str(SAMPLES["rocket"])], env={**env, "DEPTHMAP_CACHE": str(cache)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "midas-small", str(expected)]
