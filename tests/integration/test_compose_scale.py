"""compose.scale.yaml and docker/nginx.conf wired together: the proxy's upstreams are the web services,
every studio container shares one Redis URL and one data volume, only the worker service runs videos.
(Started for real, with Docker, by scripts/docker-smoke's compose.scale.yaml step.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.web.errors import ERRORS

ROOT = Path(__file__).parents[2]


def test_the_scaled_compose_file_is_wired() -> None:
    compose = yaml.safe_load((ROOT / "compose.scale.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "web1", "web2", "worker", "proxy"}
    studio = [name for name, s in services.items() if s.get("image") == "depthmap-studio:latest"]
    assert sorted(studio) == ["web1", "web2", "worker"]
    urls = {services[n]["environment"]["DEPTHMAP_REDIS_URL"] for n in studio}
    assert len(urls) == 1 and "@redis:6379/" in urls.pop()
    for name in studio:
        env = services[name]["environment"]
        assert env["DEPTHMAP_EMBEDDED_WORKER"] == "false" and env["DEPTHMAP_DATA_DIR"] == "/data"
        assert "data:/data" in services[name]["volumes"]
    assert services["worker"]["command"] == ["worker"]
    assert all("command" not in services[n] for n in ("web1", "web2"))  # the image's default: serve
    # the password reaches Redis through its environment and a private file, never a command line
    redis = services["redis"]
    script = " ".join(redis["command"])
    assert "requirepass" in script and "--requirepass" not in script and "$$REDIS_PASSWORD" in script
    assert "--maxmemory-policy volatile-lru" in script
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    for name in ("redis", "proxy"):  # the helpers run as locked down as the studio
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in services[name]["security_opt"]
        assert "/tmp" in services[name]["tmpfs"]

    nginx = (ROOT / "docker" / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server (\w+):8000", nginx, re.M)
    assert sorted(upstreams) == ["web1", "web2"]
    assert services["proxy"]["ports"][0].endswith(":8080") and "listen 8080;" in nginx
    # slow clients stop at the proxy: whole requests before a replica sees them, short timeouts
    for directive in ("proxy_request_buffering on;", "client_header_timeout", "client_body_timeout",
                      "send_timeout", "limit_conn per_client"):
        assert directive in nginx, directive
    assert "proxy_request_buffering off" not in nginx
    # a replica that died mid-request: the studio's JSON error, with a code of its registry
    assert "error_page 502 504 = @unavailable;" in nginx
    code = re.search(r'return 503 \'\{"error": "(\w+)"', nginx)
    assert code and code.group(1) in ERRORS and ERRORS[code.group(1)].statuses == (503,)
    infra = (ROOT / "docker" / "infra.Dockerfile").read_text()
    for name in ("redis", "proxy"):
        assert services[name]["build"]["target"] == name and f"AS {name}" in infra
