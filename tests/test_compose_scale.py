"""compose.scale.yaml and docker/nginx.conf wired together: the proxy's upstreams are the web services,
every studio container shares one Redis URL and one data volume, only the worker service runs videos.
(Started for real, with Docker, by scripts/docker-smoke's compose.scale.yaml step.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]


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
    redis_cmd = services["redis"]["command"]
    assert "--requirepass" in redis_cmd
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "volatile-lru"

    nginx = (ROOT / "docker" / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server (\w+):8000", nginx, re.M)
    assert sorted(upstreams) == ["web1", "web2"]
    assert services["proxy"]["ports"][0].endswith(":8080") and "listen 8080;" in nginx
    infra = (ROOT / "docker" / "infra.Dockerfile").read_text()
    for name in ("redis", "proxy"):
        assert services[name]["build"]["target"] == name and f"AS {name}" in infra
