"""The application factory: config order and the once-per-process model."""

from __future__ import annotations

import pytest

from app import create_app
from app.model import WeightsError


def test_model_is_loaded_once_and_kept(app, weights_path) -> None:
    from app.model import resolve_engine

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
