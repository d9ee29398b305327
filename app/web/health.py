"""``/healthz``: the process is up and its model loaded (a worker answers nothing before that)."""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, current_app, jsonify

from ..serving.store import StoreUnavailable
from .reading import depth_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """The process is up, its models loaded: the default model (``model``, its engine: the one running,
    and the setting that chose it: ``auto`` names the fastest exact one installed; threads) and every
    loaded model (``models``), the shared result store and
    this process's gate, with the line it shares with every worker (and host). A store that is down is
    reported, not answered with an error: this process is fine and serves again as soon as the store is
    back."""
    service = depth_service()
    models = service.models
    model = models[service.default_model]
    started = current_app.extensions["started"]
    try:
        store = service.store.stats()
    except (StoreUnavailable, OSError) as exc:
        store = {"backend": service.store.kind, "error": getattr(exc, "message", str(exc))}
    return jsonify(status="ok", model=model.name, weights_sha256=model.weights_sha256,
                   engine=model.engine, engine_setting=current_app.config["ENGINE"],
                   precision=model.precision, torchscript=model.scripted, torch_threads=model.threads,
                   load_s=current_app.extensions["load_s"],
                   uptime_s=round(time.monotonic() - started, 1), pid=os.getpid(),
                   store=store,
                   gate=service.gate.stats(),
                   models=[{"name": m.name, "title": m.spec.title, "licence": m.spec.licence,
                            "weights_sha256": m.weights_sha256, "engine": m.engine, "precision": m.precision,
                            "sizes": list(m.spec.sizes), "default_size": m.spec.default_size}
                           for m in models.values()])
