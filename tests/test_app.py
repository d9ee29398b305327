"""The application factory: config order and the once-per-process model."""

from __future__ import annotations

import pytest

from app import create_app
from app.model import WeightsError


def test_model_is_loaded_once_and_kept(app, weights_path) -> None:
    model = app.extensions["depth_model"]
    assert model.weights_path == weights_path and model.scripted


def test_healthz(app) -> None:
    body = app.test_client().get("/healthz").get_json()
    assert body["status"] == "ok" and body["torch_threads"] == 2
    assert body["weights_sha256"] == app.extensions["depth_model"].weights_sha256


def test_environment_then_test_config(monkeypatch, weights_path) -> None:
    monkeypatch.setenv("DEPTHMAP_MAX_PIXELS", "1234")
    monkeypatch.setenv("DEPTHMAP_MAX_SIDE", "999")
    monkeypatch.setenv("MIDAS_WEIGHTS", str(weights_path))
    app = create_app({"MAX_SIDE": 512, "ENGINE": "eager"})
    assert app.config["MAX_PIXELS"] == 1234 and app.config["MAX_SIDE"] == 512
    assert app.config["SECRET_KEY"] and app.extensions["depth_model"].engine == "eager"


def test_missing_weights_never_falls_back(tmp_path) -> None:
    with pytest.raises(WeightsError):
        create_app({"MIDAS_WEIGHTS": str(tmp_path / "absent.pt")})
