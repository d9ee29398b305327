"""All of the studio's Flask code: the page, the API and its resources, errors, security headers.

``init_app`` wires them into the app that ``app.create_app`` made; the Flask-free core (``app.*``)
never imports this package.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from flask import Flask, Response

from ..serving.store import in_memory
from . import (api, batch, errors, exports, guards, health, i18n, line, live, measure, openapi, page, stereo,
               video)
from .reading import InMemoryRequest

# Content-Security-Policy: everything from this origin only; images may also be data: URIs (the API's
# inline views) and blob: (the studio's local previews); no inline script, no framing
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# powerful features the studio never uses, off for it and anything it could be made to load (only names
# Chromium knows: it logs an error for an unknown one)
PERMISSIONS = ("accelerometer", "camera", "display-capture", "geolocation", "gyroscope", "hid",
               "magnetometer", "microphone", "midi", "payment", "publickey-credentials-get",
               "screen-wake-lock", "serial", "usb", "xr-spatial-tracking")
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Cross-Origin-Opener-Policy": "same-origin",
    # another site's page may not even embed a result as an image or script (Spectre-style reads)
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": ", ".join(f"{name}=()" for name in PERMISSIONS),
}


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Request reading, the error handler, the request guards, security headers, the page in two languages
    and every route."""
    app.request_class = InMemoryRequest
    errors.init_app(app)
    guards.init_app(app)  # first: no other work for a request it refuses
    app.after_request(add_security_headers)
    # the studio sets no cookies; should a later feature use Flask's session, it is locked down
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    for module in (page, api, exports, stereo, batch, measure, line, live, openapi, health):
        app.register_blueprint(module.bp)
    i18n.init_app(app)
    video.init_app(app)
    videos_in_memory = in_memory(app.extensions["video_jobs"].root)  # the folder is fixed at start

    @app.context_processor
    def privacy() -> Dict[str, Any]:
        """What the footer says about where uploads rest: true to the store and folders this server
        runs with, not to the defaults."""
        return {"photos_in_memory": app.extensions["depth_service"].store.in_memory(),
                "videos_in_memory": videos_in_memory,
                "result_ttl": i18n.duration(app.config["RESULT_TTL"]),
                "video_ttl": i18n.duration(app.config["VIDEO_JOB_TTL"])}
