"""The page in English and Simplified Chinese (Flask-Babel, catalogs in ``app/translations``).

The language is the user's choice if they made one (the ``lang`` cookie, set by ``/lang/<code>``),
else the browser's preference (``Accept-Language``), else English. Only the page is translated: the
API's error messages stay English, with stable codes, so scripts never depend on a language.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Dict

from flask import Blueprint, Flask, Response, redirect, request
from flask_babel import Babel, get_locale, gettext
from werkzeug.urls import iri_to_uri

from .errors import ApiError

LANGUAGES: Dict[str, str] = {"en": "English", "zh_Hans": "简体中文"}
HTML_LANG = {"en": "en", "zh_Hans": "zh-Hans"}
COOKIE = "lang"
COOKIE_AGE = 365 * 24 * 3600

bp = Blueprint("i18n", __name__)


def N_(text: str) -> str:  # noqa: N802  (the name pybabel looks for)
    """Marks a string for the catalog without translating it here."""
    return text


# what the page's scripts show; translated per request and handed to them in <body data-i18n>
JS_STRINGS = (
    N_("Generating depth map…"), N_("Rendering…"), N_("Apply"), N_("Depth map from cache"),
    N_("Depth map in {total} ms (decode {decode}, inference {infer})"), N_("{done} · shown in {ms} ms"),
    N_("Re-rendered from cache in {ms} ms"), N_("Choose a photo first."),
    N_("Could not reach the server. Is it still running?"), N_("The server answered {status}."),
    N_("That file is {size} MB; the limit is {limit} MB."),
    N_("This view could not be rendered: the result may have expired from the server's memory. "
       "Upload the photo again."),
    N_("near"), N_("far"), N_("Colour bar"), N_("relative values from {far} (far) to {near} (near)"),
    N_("Local contrast (CLAHE) is on: each area is stretched on its own, so a colour means nearer or "
       "farther only compared with its surroundings; no values are shown."),
    N_("{p}% photo, {q}% {view}"), N_("Loading the 3D view…"), N_("3D view ready."),
    N_("The 3D view could not be shown: {error}"), N_("Show in 3D"), N_("Hide 3D"),
    N_("Waiting in line: trying again in {s} s…"), N_("waiting in line: again in {s} s"),
    N_("Waiting in line: {n} ahead of you…"), N_("Waiting in line: you are next…"),
    N_("in line: {n} ahead"), N_("in line: next"),
    N_("waiting"), N_("uploading {p}%"), N_("computing…"), N_("done in {ms} ms"), N_("open"),
    N_("{ok} of {n} done"), N_("{failed} failed"),
    N_("relative depth {value}"), N_("≈ {m} m ({rel})"), N_("beyond the calibrated range ({rel})"),
    N_("Point {n} ({value}): distance in metres"), N_("fitted: RMSE {rmse} m at the {n} points"),
)


def duration(seconds: float) -> str:
    """``seconds`` in the largest whole unit, in the page's language: "1 h", "90 min", "45 s"."""
    n = round(seconds)
    if n >= 3600 and n % 3600 == 0:
        return gettext("%(n)s h", n=n // 3600)
    if n >= 60 and n % 60 == 0:
        return gettext("%(n)s min", n=n // 60)
    return gettext("%(n)s s", n=n)


def select_locale() -> str:
    chosen = request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    # Accept-Language "zh-CN", "zh-Hans", "zh" all match zh (Werkzeug falls back to the primary tag)
    best = request.accept_languages.best_match(["en", "zh-Hans", "zh"], default="en")
    return "zh_Hans" if best.startswith("zh") else "en"


def current() -> str:
    loc = get_locale()
    return "zh_Hans" if loc is not None and loc.language == "zh" else "en"


def local_target(target: str) -> str:
    """Where ``/lang/<code>`` goes back to: ``target`` if it is a path on this site (non-ASCII
    percent-encoded, as a header needs), else the page. A control character is a 400: browsers drop
    tabs and newlines from a URL, so ``/<tab>/evil.example`` would leave the site."""
    if any(unicodedata.category(ch) == "Cc" for ch in target):
        raise ApiError("bad_redirect", "The 'next' address holds a control character.")
    # "//host" and "/\\host" are other sites to a browser, as is anything with a scheme
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return iri_to_uri(target)


@bp.get("/lang/<code>")
def choose(code: str) -> Response:
    """Remembers the user's language (a cookie for a year) and goes back to the page they were on."""
    if code not in LANGUAGES:
        raise ApiError("not_found", f"Unknown language {code[:20]!r}; use one of {', '.join(LANGUAGES)}.")
    response = redirect(local_target(request.args.get("next", "/")), code=303)
    # nothing secret, but no script needs it either, so HttpOnly; Lax keeps it first-party
    response.set_cookie(COOKIE, code, max_age=COOKIE_AGE, samesite="Lax", httponly=True, path="/")
    return response


def _context() -> Dict[str, Any]:
    lang = current()
    return {"languages": LANGUAGES, "current_lang": lang, "html_lang": HTML_LANG[lang],
            "js_strings": {s: gettext(s) for s in JS_STRINGS} if lang != "en" else {}}


def init_app(app: Flask) -> None:
    Babel(app, locale_selector=select_locale, default_translation_directories="translations")
    app.register_blueprint(bp)
    app.context_processor(_context)
