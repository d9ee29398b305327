"""Video jobs across real processes: two `depthmap serve` servers and `depthmap worker` consumers sharing
one data dir. A job sent to one server is followed, fetched and deleted on the other; a consumer killed
mid-job (SIGKILL) gets its job run again by the next consumer, a second loss fails the job with a clear
error, and the other jobs go on; `serve` alone runs its embedded consumer once for several workers."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
import requests

from support.clips import moving_scene, write_clip
from support.servers import running_server, running_worker

LOST_S = 3  # DEPTHMAP_VIDEO_WORKER_LOST for these processes: a killed consumer counts as gone after it


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared-data")


@pytest.fixture(scope="module")
def env(shared) -> Dict[str, str]:
    return {"DEPTHMAP_DATA_DIR": str(shared), "DEPTHMAP_EMBEDDED_WORKER": "false",
            "DEPTHMAP_VIDEO_WORKER_LOST": str(LOST_S), "DEPTHMAP_ENGINE": "eager"}


@pytest.fixture(scope="module")
def servers(weights_path, tmp_path_factory, env) -> Iterator[Tuple[str, str]]:
    logs = tmp_path_factory.mktemp("servers")
    with running_server(weights_path, logs / "a.log", "--workers", "1", env=env) as (a, _), \
            running_server(weights_path, logs / "b.log", "--workers", "1", env=env) as (b, _):
        yield a, b


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Dict[str, bytes]:
    folder = tmp_path_factory.mktemp("clips")
    return {"short": write_clip(folder / "short.mp4", moving_scene(6, 96, 64)).read_bytes(),
            "medium": write_clip(folder / "medium.mp4", moving_scene(30, 96, 64)).read_bytes(),
            "long": write_clip(folder / "long.mp4", moving_scene(150, 160, 120)).read_bytes()}


def send(url: str, data: bytes, **fields: str) -> Dict:
    r = requests.post(url + "/api/v1/video", files={"video": ("scene.mp4", data, "video/mp4")}, data=fields,
                      timeout=60)
    assert r.status_code == 202, r.text
    return r.json()


def status(url: str, job_id: str) -> Dict:
    r = requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait(url: str, job_id: str, check, timeout: float = 180) -> Dict:
    deadline = time.monotonic() + timeout
    while True:
        body = status(url, job_id)
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_a_job_sent_to_one_server_is_served_by_the_other(servers, clips, weights_path, env, tmp_path) -> None:
    a, b = servers
    with running_worker(weights_path, tmp_path / "worker.log", env):
        job = send(a, clips["short"], norm="frame")
        done = wait(b, job["id"], lambda j: j["state"] in ("done", "failed", "cancelled"))
        assert done["state"] == "done" and done["result"]["frames"] == 6
        video = requests.get(b + done["result"]["files"]["video"], timeout=30)
        assert video.status_code == 200 and video.headers["Content-Type"] == "video/mp4"
        assert video.content == requests.get(a + done["result"]["files"]["video"], timeout=30).content
        assert requests.delete(f"{b}/api/v1/jobs/{job['id']}", timeout=30).status_code == 204
        gone = requests.get(f"{a}/api/v1/jobs/{job['id']}", timeout=30)
        assert gone.status_code == 404 and gone.json()["error"] == "no_job"


def test_a_killed_consumer_s_job_runs_again_then_fails_and_the_others_go_on(servers, clips, weights_path,
                                                                            env, tmp_path) -> None:
    a, b = servers
    first = send(a, clips["long"], norm="frame")
    second = send(a, clips["short"], norm="frame")
    log = tmp_path / "workers.log"
    for attempt in (1, 2):
        with running_worker(weights_path, log, env) as worker:
            wait(b, first["id"], lambda j: j["state"] == "running" and j["progress"]["frames_done"] >= 1)
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            killed = time.monotonic()
            # never stuck "running": within the heartbeat limit (and a poll) it is queued again or failed
            after = wait(b, first["id"], lambda j: j["state"] != "running", timeout=LOST_S + 10)
            assert time.monotonic() - killed < LOST_S + 10
        if attempt == 1:
            assert after["state"] == "queued" and after["error"] is None
    assert after["state"] == "failed" and after["error"]["error"] == "worker_lost"
    assert "stopped" in after["error"]["message"]
    r = requests.get(f"{a}/api/v1/jobs/{first['id']}/result", timeout=30)
    assert r.status_code == 409 and r.json()["error"] == "job_failed"
    with running_worker(weights_path, log, env):  # the job behind it was not lost
        done = wait(a, second["id"], lambda j: j["state"] in ("done", "failed", "cancelled"))
    assert done["state"] == "done"


def test_sigterm_puts_the_running_job_back_in_the_queue(servers, clips, weights_path, env, tmp_path) -> None:
    a, _ = servers
    log = tmp_path / "worker.log"
    job = send(a, clips["medium"], norm="frame")
    with running_worker(weights_path, log, env) as worker:
        wait(a, job["id"], lambda j: j["state"] == "running" and j["progress"]["frames_done"] >= 1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    assert status(a, job["id"])["state"] == "queued"
    with running_worker(weights_path, log, env):
        done = wait(a, job["id"], lambda j: j["state"] in ("done", "failed", "cancelled"))
    assert done["state"] == "done" and done["progress"]["frames_done"] == 30


def test_serve_with_two_workers_runs_one_embedded_consumer(weights_path, clips, tmp_path) -> None:
    env = {"DEPTHMAP_DATA_DIR": str(tmp_path / "data"), "DEPTHMAP_ENGINE": "eager"}
    log = tmp_path / "serve.log"
    with running_server(weights_path, log, "--workers", "2", env=env) as (url, _):
        job = send(url, clips["short"], norm="frame")
        done = wait(url, job["id"], lambda j: j["state"] in ("done", "failed", "cancelled"))
        assert done["state"] == "done"
    assert log.read_text().count("video job consumer started in this process") == 1
