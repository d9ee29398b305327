"""Depth-map studio: MiDaS v2.1 small behind a Flask app and a CLI.

``create_app`` is the application factory. Importing this package loads nothing heavy: torch is
imported by ``app.model`` only when a model is created.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any, Mapping, Optional

from flask import Flask, jsonify

DEFAULTS: Mapping[str, Any] = {
    "MIDAS_WEIGHTS": None,  # path; None = user cache, else download (see app.model.resolve_weights)
    "WEIGHTS_DOWNLOAD": True,
    "TORCH_THREADS": None,  # None = every core this process may use
    "ENGINE": "torchscript",  # torchscript | eager | bf16 | onnxruntime | openvino (app.model.ENGINES)
    "MAX_CONTENT_LENGTH": 20 * 1024 * 1024,
    "MAX_PIXELS": 40_000_000,
    "MAX_SIDE": 4096,
    "CACHE_BYTES": 200 * 1024 * 1024,  # recent uploads and raw depths kept for re-rendering
    # admission (app.gate): depth maps computed at once, how many more may wait, and for how long;
    # beyond that a request gets 503 + Retry-After
    "INFERENCE_SLOTS": 1,
    "INFERENCE_QUEUE": 2,
    "QUEUE_TIMEOUT": 30.0,
}


def create_app(test_config: Optional[Mapping[str, Any]] = None) -> Flask:
    """Config goes defaults -> environment (``DEPTHMAP_*``, ``MIDAS_WEIGHTS``) -> ``test_config``;
    then the model is loaded once for this process and kept in ``app.extensions["depth_model"]``."""
    from . import api, i18n, openapi, page, studio_api, video_api, web
    from .cache import DepthCache
    from .gate import Gate
    from .model import DepthModel, resolve_weights
    from .service import DepthService

    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config.from_mapping(DEFAULTS)
    app.json.sort_keys = False  # answers keep their natural order (views in the order asked for)
    # never a fixed secret: DEPTHMAP_SECRET_KEY from the environment, else random per process
    app.config["SECRET_KEY"] = secrets.token_hex(32)
    app.config.from_prefixed_env("DEPTHMAP")  # e.g. DEPTHMAP_MAX_PIXELS=20000000
    if os.environ.get("MIDAS_WEIGHTS"):
        app.config["MIDAS_WEIGHTS"] = os.environ["MIDAS_WEIGHTS"]
    if test_config:
        app.config.from_mapping(test_config)

    t0 = time.monotonic()
    weights = resolve_weights(app.config["MIDAS_WEIGHTS"], download=app.config["WEIGHTS_DOWNLOAD"])
    # loads, compiles and warms up: a server process answers nothing, /healthz included, before this
    model = DepthModel.load(weights, threads=app.config["TORCH_THREADS"],
                            engine=app.config["ENGINE"])
    app.extensions["depth_model"] = model
    gate = Gate(int(app.config["INFERENCE_SLOTS"]), int(app.config["INFERENCE_QUEUE"]),
                float(app.config["QUEUE_TIMEOUT"]))
    service = DepthService(model, DepthCache(app.config["CACHE_BYTES"]), app.config["MAX_PIXELS"],
                           app.config["MAX_SIDE"], gate)
    app.extensions["depth_service"] = service
    started = time.monotonic()
    load_s = round(started - t0, 2)

    app.register_blueprint(page.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(studio_api.bp)  # exports, legend (issue 7)
    app.register_blueprint(openapi.bp)  # /api/v1/openapi.json, /docs (issue 7)
    i18n.init_app(app)  # English / Simplified Chinese page (issue 7)
    web.init_app(app)
    video_api.init_app(app)  # video jobs: config defaults (VIDEO_*), job manager, routes

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok", model=model.name, weights_sha256=model.weights_sha256,
                       engine=model.engine, torchscript=model.scripted, torch_threads=model.threads,
                       load_s=load_s,
                       uptime_s=round(time.monotonic() - started, 1), pid=os.getpid(),
                       cache={"entries": len(service.cache), "bytes": service.cache.nbytes},
                       gate=service.gate.stats())

    return app
