"""``/healthz``: the process is up and its model loaded (a worker answers nothing before that)."""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, current_app, jsonify

from ..store import StoreUnavailable
from .reading import depth_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """The process is up, its model loaded: which model, engine and threads, the shared result store and
    this process's gate. A store that is down is reported, not answered with an error: this process is
    fine and serves again as soon as the store is back."""
    model = current_app.extensions["depth_model"]
    service = depth_service()
    started = current_app.extensions["started"]
    try:
        store = service.store.stats()
    except (StoreUnavailable, OSError) as exc:
        store = {"backend": service.store.kind, "error": getattr(exc, "message", str(exc))}
    return jsonify(status="ok", model=model.name, weights_sha256=model.weights_sha256,
                   engine=model.engine, torchscript=model.scripted, torch_threads=model.threads,
                   load_s=current_app.extensions["load_s"],
                   uptime_s=round(time.monotonic() - started, 1), pid=os.getpid(),
                   store=store,
                   gate=service.gate.stats())
