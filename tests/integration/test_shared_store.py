"""Two real server processes (``depthmap serve``) sharing one result store: a photo uploaded on A, every
follow-up route answered by B the same as by A, first with the embedded store (one DATA_DIR), then with
a real Redis; results that survive a restart; Redis stopped mid-run and back."""

from __future__ import annotations

import io
import zipfile
from typing import Dict, Tuple

import numpy as np
import pytest
import requests

from support.samples import SAMPLES
from support.servers import run_cli, running_server



def points(depth: np.ndarray) -> Dict[str, object]:
    """Two calibration points, the nearer (larger relative inverse depth) at 2 m, the other at 5 m."""
    h, w = depth.shape
    left, right = depth[h // 2, w // 4], depth[h // 2, 3 * w // 4]
    return {"points": [{"u": 0.25, "v": 0.5, "metres": 2.0 if left > right else 5.0},
                       {"u": 0.75, "v": 0.5, "metres": 5.0 if left > right else 2.0}]}


def upload(url: str, name: str) -> Tuple[str, str]:
    """The depth_id and owner token of a sample uploaded to ``url``."""
    r = requests.post(url + "/api/v1/depth", files={"image": (f"{name}.png", SAMPLES[name].read_bytes())},
                      data={"views": "none"}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["depth_id"], r.json()["owner_token"]


def zip_contents(data: bytes) -> Dict[str, bytes]:
    """A zip's files by name (the zip's own bytes carry the time each was written)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def answer(r: requests.Response) -> Tuple[int, object]:
    """What must be equal on both servers: the status and the content (JSON without its timings)."""
    kind = r.headers.get("Content-Type", "")
    if "zip" in kind:
        return r.status_code, zip_contents(r.content)
    if "json" in kind:
        body = r.json()
        if isinstance(body, dict):
            body.pop("timings_ms", None)
            body.pop("cached", None)  # the server that made a result says False, the other True
        return r.status_code, body
    return r.status_code, r.content


def follow_ups(url: str, i: str, j: str) -> Dict[str, Tuple[int, object]]:
    """Every route that reads an earlier result, on one server."""
    gets = [f"/api/v1/depth/{i}.npy", f"/api/v1/depth/{i}/heatmap.png?colormap=jet",
            f"/api/v1/depth/{i}/overlay.png?alpha=0.3&max_side=128", f"/api/v1/depth/{i}/gray.png",
            f"/api/v1/depth/{i}/photo.png?max_side=64", f"/api/v1/depth/{i}.png", f"/api/v1/depth/{i}.pfm",
            f"/api/v1/depth/{i}.ply?grid=64", f"/api/v1/depth/{i}.glb?grid=64", f"/api/v1/depth/{i}.zip",
            f"/api/v1/depth/{i}/legend.json?colormap=magma", f"/api/v1/depth/{i}/preview.npy?max_side=64",
            f"/api/v1/depth/{i}/metric.npy?scale=0.5&shift=0.1",
            f"/api/v1/batch.zip?depth_id={i}&depth_id={j}&views=heatmap"]
    out = {path: answer(requests.get(url + path, timeout=120)) for path in gets}
    for body in ({"depth_id": i, "colormap": "jet", "views": "heatmap,gray"},
                 {"depth_id": j, "upsample": "guided", "guided_radius": 2, "views": "gray"},
                 {"depth_id": i, "size": 384, "views": "heatmap"}):
        out[f"render {body}"] = answer(requests.post(url + "/api/v1/render", json=body, timeout=120))
    depth = np.load(io.BytesIO(requests.get(f"{url}/api/v1/depth/{i}.npy", timeout=60).content))
    out["calibrate"] = answer(requests.post(f"{url}/api/v1/depth/{i}/calibrate", json=points(depth),
                                            timeout=60))
    page = requests.post(url + "/", data={"depth_id": i, "colormap": "jet"}, timeout=120)
    out["page re-render"] = (page.status_code, "not_cached" not in page.text)
    return out


def check_shared(a: str, b: str) -> None:
    """A photo uploaded on ``a``: every follow-up gives the same answer on ``b``; a result made on ``b``
    by a re-render is there on ``a``; a DELETE on ``b`` is gone on ``a`` at once."""
    (i, token), (j, _) = upload(a, "chelsea"), upload(a, "rocket")
    on_b = follow_ups(b, i, j)
    on_a = follow_ups(a, i, j)
    assert {k: v[0] for k, v in on_b.items()} == dict.fromkeys(on_b, 200)
    for key in on_a:
        assert on_a[key] == on_b[key], key
    guided = on_b[f"render {{'depth_id': '{j}', 'upsample': 'guided', 'guided_radius': 2, 'views': 'gray'}}"]
    new_id = guided[1]["depth_id"]  # made on b (on its own first call), read on a
    depth = np.load(io.BytesIO(requests.get(f"{a}/api/v1/depth/{new_id}.npy", timeout=60).content))
    assert depth.dtype == np.float32 and depth.ndim == 2
    # the same photo uploaded on b with its owner token is recognised: the id is the deployment's, not
    # the process's
    owner = {"X-Owner-Token": token}
    again = requests.post(b + "/api/v1/depth", files={"image": ("x.png", SAMPLES["chelsea"].read_bytes())},
                          data={"views": "none"}, headers=owner, timeout=120).json()
    assert again["depth_id"] == i and again["cached"]
    # deleted on b: gone everywhere at once
    assert requests.delete(f"{b}/api/v1/depth/{i}", headers=owner, timeout=30).status_code == 204
    for url in (a, b):
        r = requests.get(f"{url}/api/v1/depth/{i}/heatmap.png", timeout=30)
        assert r.status_code == 404 and r.json()["error"] == "not_cached"
    assert requests.delete(f"{a}/api/v1/depth/{i}", headers=owner, timeout=30).status_code == 404


def test_two_servers_share_the_embedded_store_and_it_survives_a_restart(weights_path, tmp_path) -> None:
    env = {"DEPTHMAP_DATA_DIR": str(tmp_path / "shared")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_server(weights_path, tmp_path / "a" / "server.log", env=env) as (a, _), \
            running_server(weights_path, tmp_path / "b" / "server.log", env=env) as (b, _):
        assert requests.get(a + "/healthz", timeout=10).json()["pid"] != \
            requests.get(b + "/healthz", timeout=10).json()["pid"]
        check_shared(a, b)
        kept, _ = upload(a, "coffee")
        before = requests.get(f"{b}/api/v1/depth/{kept}.npy", timeout=30).content
        assert requests.get(a + "/healthz", timeout=10).json()["store"]["entries"] >= 3
    (tmp_path / "c").mkdir()
    with running_server(weights_path, tmp_path / "c" / "server.log", env=env) as (c, _):
        assert requests.get(f"{c}/api/v1/depth/{kept}.npy", timeout=30).content == before


def test_two_servers_share_redis_and_recover_when_it_comes_back(weights_path, tmp_path, redis_server,
                                                                 redis_url) -> None:
    env = {"DEPTHMAP_REDIS_URL": redis_url}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_server(weights_path, tmp_path / "a" / "server.log", env=env) as (a, _), \
            running_server(weights_path, tmp_path / "b" / "server.log", env=env) as (b, _):
        check_shared(a, b)
        kept, _ = upload(a, "coffee")
        redis_server.stop()
        try:
            for r in (requests.get(f"{b}/api/v1/depth/{kept}.npy", timeout=60),
                      requests.post(a + "/api/v1/depth", timeout=60,
                                    files={"image": ("p.png", SAMPLES["rocket"].read_bytes())})):
                assert r.status_code == 503 and r.json()["error"] == "store_unavailable"
                assert "Redis" in r.json()["message"] and int(r.headers["Retry-After"]) > 0
            health = requests.get(a + "/healthz", timeout=30)
            assert health.status_code == 200 and "error" in health.json()["store"]
        finally:
            redis_server.start()  # an empty Redis: what was kept is gone, new work goes on
        assert requests.get(f"{b}/api/v1/depth/{kept}.npy", timeout=60).status_code == 404
        i, _ = upload(b, "rocket")
        assert requests.get(f"{a}/api/v1/depth/{i}.npy", timeout=60).status_code == 200
        assert "Traceback" not in (tmp_path / "a" / "server.log").read_text()


def test_serve_refuses_an_unwritable_data_folder_with_one_line(weights_path, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    r = run_cli(["serve", "--bind", "127.0.0.1:1"], env={"MIDAS_WEIGHTS": str(weights_path),
                                                        "DEPTHMAP_DATA_DIR": str(blocker / "data")})
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Cannot write the data folder" in lines[0] and "DEPTHMAP_DATA_DIR" in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost"])
def test_serve_refuses_a_redis_url_of_another_scheme(weights_path, url) -> None:
    r = run_cli(["serve"], env={"MIDAS_WEIGHTS": str(weights_path), "DEPTHMAP_REDIS_URL": url})
    assert r.returncode == 2 and "redis://" in r.stderr and "Traceback" not in r.stderr
