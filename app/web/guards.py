"""What every request must pass before its view runs: the ``Host`` it names must be this server's (a
DNS-rebinding page names its own), and a request that changes something (POST, DELETE) must not come
from another site's page (cross-site request forgery).

The cross-site rule is the one of Go's ``net/http.CrossOriginProtection``: a browser's
``Sec-Fetch-Site`` decides where it is sent (every current browser sends it); else its ``Origin`` must
name the same host as ``Host``; a request with neither is not a browser's (curl, scripts, the CLI) and
passes, as it carries no cookie or login of a victim. The scheme is not compared, so a proxy that ends
TLS in front of the server needs no setting.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Collection, Optional
from urllib.parse import urlsplit

from flask import Flask, request
from werkzeug.sansio.utils import host_is_trusted

from ..config import ANY_HOST, trusted_host_names
from .errors import ApiError

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# what Sec-Fetch-Site says of a request this site's own page made, or the user themselves (a bookmark)
OWN_FETCH_SITES = frozenset({"same-origin", "none"})
# names no other site can own, so never a rebinding: browsers resolve them to this machine themselves
LOCAL_NAMES = (".localhost",)  # localhost and its subdomains
HOST_PARTS = re.compile(r"(\[[^\]]*\]|[^:]*)(?::[0-9]*)?")  # name or [IPv6], then an optional port


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
        return True
    except ValueError:
        return False


def trusted_host(host: str, names: Collection[str]) -> bool:
    """Whether ``host`` (a ``Host`` header, ``name[:port]``) names this server: well formed, and an IP
    address or ``localhost`` (which no other site's page can name as its own, so no rebinding) or one
    of ``names`` (a leading dot takes the subdomains too; ``*`` any name)."""
    host = host.strip().lower()
    if not host_is_trusted(host):  # Werkzeug's check of the characters and the port
        return False
    parts = HOST_PARTS.fullmatch(host)
    if parts is not None and is_ip_literal(parts.group(1)):
        return True
    return ANY_HOST in names or host_is_trusted(host, (*LOCAL_NAMES, *names))


def without_default_port(authority: str) -> str:
    """``host:port`` without the port browsers leave out (80, 443): either side of a TLS proxy agrees."""
    for default in (":80", ":443"):
        if authority.endswith(default):
            return authority[: -len(default)]
    return authority


def origin_authority(origin: str) -> Optional[str]:
    """The ``host[:port]`` of an ``Origin`` header; None for ``null`` or anything that is not an origin."""
    try:
        parts = urlsplit(origin.strip().lower())
    except ValueError:  # an unclosed IPv6 bracket
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return without_default_port(parts.netloc)


def from_this_site(method: str, fetch_site: Optional[str], origin: Optional[str], host: str) -> bool:
    """Whether a request may change something here: a safe method, or not sent by another site's page."""
    if method in SAFE_METHODS:
        return True
    if fetch_site is not None:
        return fetch_site.strip().lower() in OWN_FETCH_SITES
    if origin is None:
        return True
    return origin_authority(origin) == without_default_port(host.strip().lower())


def init_app(app: Flask) -> None:
    """Both checks before every request, the host's first; the names are read once, at start."""
    names = trusted_host_names(str(app.config["TRUSTED_HOST_NAMES"]))

    @app.before_request
    def guard() -> None:
        host = request.headers.get("Host")
        if host is not None and not trusted_host(host, names):
            log.warning("refused Host %r (DEPTHMAP_TRUSTED_HOSTS)", host[:100])
            raise ApiError("bad_host", "This server does not answer to that host name. Its operator can "
                           "add it to DEPTHMAP_TRUSTED_HOSTS; IP addresses and localhost always work.")
        if not from_this_site(request.method, request.headers.get("Sec-Fetch-Site"),
                              request.headers.get("Origin"), host or ""):
            raise ApiError("cross_site", "A page of another site cannot send this request; use the studio's "
                           "own page, or a client that is not a browser (curl, a script).")
