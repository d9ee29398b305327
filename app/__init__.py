"""Depth-map studio: MiDaS v2.1 small behind a Flask app and a CLI.

``create_app`` is the application factory. Importing this package loads nothing heavy: Flask is
imported when an app is made, torch by ``app.depth.model`` only when a model is created.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: Optional[Mapping[str, Any]] = None) -> "Flask":
    """Config goes defaults -> environment (``app.config``) -> ``test_config``; then the models
    (``DEPTHMAP_MODELS``) are loaded once for this process and kept in ``app.extensions["depth_models"]``
    (name -> ``DepthModel``, the default first)."""
    from flask import Flask

    from . import config, web
    from .serving.gate import Gate
    from .serving.line import open_line
    from .depth.model import DepthModel, resolve_weights
    from .depth.registry import parse_model_list, spec
    from .serving.service import DepthService
    from .serving.store import open_store

    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config.from_mapping(config.app_defaults())
    app.config.from_mapping(config.app_environ())
    if test_config:
        app.config.from_mapping(test_config)
    # never a fixed secret: DEPTHMAP_SECRET_KEY if set, else random per process
    app.config["SECRET_KEY"] = app.config["SECRET_KEY"] or secrets.token_hex(32)
    app.json.sort_keys = False  # answers keep their natural order (views in the order asked for)

    t0 = time.monotonic()
    c = app.config
    try:
        names = parse_model_list(c["MODELS"])
    except ValueError as exc:
        raise config.ConfigError(f"DEPTHMAP_MODELS: {exc}") from None
    models = {}
    for name in names:
        model = spec(name)
        weights = resolve_weights(c[model.weights_env], download=c["WEIGHTS_DOWNLOAD"], model=model)
        # loads, compiles and warms up: a server process answers nothing, /healthz included, before this
        models[name] = DepthModel.load(weights, threads=c["TORCH_THREADS"], engine=c["ENGINE"], model=model)
    app.extensions["depth_models"] = models
    # results live outside the process, shared by every worker (and host, with Redis), and so does the line
    store = open_store(c["REDIS_URL"], c["DATA_DIR"], int(c["CACHE_BYTES"]), float(c["RESULT_TTL"]))
    gate = Gate(int(c["INFERENCE_SLOTS"]), int(c["INFERENCE_QUEUE"]), float(c["QUEUE_TIMEOUT"]),
                open_line(store), int(c["LINE_LENGTH"]), float(c["LINE_GRACE"]))
    app.extensions["depth_service"] = DepthService(models, store, c["MAX_PIXELS"], c["MAX_SIDE"], gate)
    app.extensions["started"] = time.monotonic()
    app.extensions["load_s"] = round(app.extensions["started"] - t0, 2)
    web.init_app(app)
    return app
