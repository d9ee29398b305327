"""Redis over TLS: Debian's ``redis-server`` with a TLS port only (no plain port), a password and a
certificate from a CA the test makes (``openssl``). The studio, given ``rediss://:PASSWORD@HOST:PORT/0
?ssl_ca_certs=CA.pem``, keeps its results and runs its video job queue (Huey) through it; trusting
another CA, it answers 503 ``store_unavailable`` and keeps serving."""

from __future__ import annotations

import gc
import io
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import redis

from support.clips import moving_scene, write_clip
from support.forms import form_data, post_depth
from support.samples import SAMPLES


def make_app(weights_path: Path, tmp_path: Path, redis_url: str):
    from app import create_app

    return create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 2,
                       "REDIS_URL": redis_url, "DATA_DIR": str(tmp_path / "data"),
                       "VIDEO_DIR": str(tmp_path / "jobs"), "VIDEO_JOB_TTL": 120})


def close(app) -> None:
    """Stops the app's video consumer and closes its two Redis clients (results, job queue). A TLS socket
    left to the garbage collector warns, and pytest blames whichever test is running when it is
    collected: the app's model loading collects garbage. redis-py drops the socket of a connection its
    threads were using without closing it, so what is left is collected here, its warnings ignored."""
    app.extensions["video_jobs"].shutdown()
    app.extensions["depth_service"].store.client.close()
    app.extensions["video_jobs"].huey.storage.conn.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_plain_redis_is_refused_by_the_tls_only_server(tls_redis) -> None:
    # the URL below is the only way in: a client without TLS gets no answer from the port
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, password=tls_redis.password,
                        socket_connect_timeout=2, socket_timeout=2)
    with pytest.raises(redis.RedisError):
        plain.ping()
    plain.close()
    assert tls_redis.url.startswith("rediss://")
    with redis.Redis.from_url(tls_redis.url) as client:
        assert client.ping()


def test_results_and_video_jobs_over_tls(weights_path: Path, tls_redis, tmp_path: Path) -> None:
    direct = redis.Redis.from_url(tls_redis.url)
    direct.flushall()
    app = make_app(weights_path, tmp_path, tls_redis.url)
    client = app.test_client()
    try:
        r = post_depth(client, SAMPLES["chelsea"].read_bytes(), "chelsea.png", views="none")
        assert r.status_code == 200, r.get_json()
        depth_id = r.get_json()["depth_id"]
        assert direct.exists(f"depthmap:result:{depth_id}")  # the result lives in the TLS Redis
        depth = np.load(io.BytesIO(client.get(f"/api/v1/depth/{depth_id}.npy").data), allow_pickle=False)
        assert depth.shape == (r.get_json()["height"], r.get_json()["width"])
        assert client.get(f"/api/v1/depth/{depth_id}/heatmap.png").status_code == 200

        clip = write_clip(tmp_path / "scene.mp4", moving_scene(8, 96, 64)).read_bytes()
        r = client.post("/api/v1/video", **form_data({"video": (clip, "scene.mp4"), "norm": "frame"}))
        assert r.status_code == 202, r.get_json()
        job_id = r.get_json()["id"]
        assert direct.hexists("huey.results.depthmapvideo", f"job:{job_id}")  # the job record, over TLS
        deadline = time.monotonic() + 300
        while (body := client.get(f"/api/v1/jobs/{job_id}").get_json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert body["state"] == "done", body
        with client.get(f"/api/v1/jobs/{job_id}/result") as video:  # the file, from the job's folder
            assert video.status_code == 200 and len(video.get_data()) > 1000
    finally:
        close(app)
        direct.close()


def test_a_wrong_ca_is_a_clear_503_and_the_server_goes_on(weights_path: Path, tls_redis,
                                                           tmp_path: Path) -> None:
    app = make_app(weights_path, tmp_path, tls_redis.tls_url(tls_redis.tls["other_ca"]))
    client = app.test_client()
    try:
        photo = SAMPLES["rocket"].read_bytes()
        clip = write_clip(tmp_path / "scene.mp4", moving_scene(4, 64, 48)).read_bytes()
        for r in (post_depth(client, photo, "rocket.jpg", views="none"),
                  client.post("/api/v1/video", **form_data({"video": (clip, "scene.mp4")})),
                  client.get("/api/v1/jobs/0123456789abcdef0123456789abcdef")):
            body = r.get_json()
            assert r.status_code == 503 and body["error"] == "store_unavailable", (r.status_code, body)
            assert "try again" in body["message"] and int(r.headers["Retry-After"]) > 0
        assert not any((tmp_path / "jobs").iterdir())  # the refused video is not kept
        health = client.get("/healthz")
        assert health.status_code == 200 and "error" in str(health.get_json()["store"])
    finally:
        close(app)
