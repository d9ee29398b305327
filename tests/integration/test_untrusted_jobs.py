"""Video job records are data from a storage that others may be able to write to (a shared Redis, the
data folder's SQLite file): records and queue messages planted there, against a real `depthmap serve` on
each backend, can neither read, serve nor delete anything outside the jobs' folder, never get a 500, and
never stop the consumer. `depthmap worker` refuses a data folder or jobs' folder it does not own, as
`serve` does."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest
import requests
from huey.constants import EmptyData

from app.serving.jobs import DONE, Job, make_huey
from support.clips import moving_scene, write_clip
from support.servers import run_cli, running_server

SECRET = b"not for the studio's clients\n"
IDS = {name: f"{n:x}" * 32 for n, name in enumerate("abcdefgh", start=10)}


def record(job_id: str, **fields) -> bytes:
    """A record as a finished job writes it, with ``fields`` changed."""
    body = json.loads(Job(job_id, name="scene", state=DONE, finished=time.time(), files={"video": "x.mp4"},
                          spec={"options": {}, "video_options": {}}).to_json())
    return json.dumps({**body, **fields}).encode()


def plant(storage, root: Path) -> None:
    """What an attacker who can write to the queue's storage leaves there (the records of the issue,
    and more)."""
    old = time.time() - 7200  # ended two hours ago: the sweep deletes an expired job's folder
    planted = {
        IDS["a"]: record("../..", files={"video": "outside.txt"}),  # a path for an id
        IDS["b"]: record(IDS["b"], files={"video": "../../outside.txt"}),  # a path for a file name
        IDS["c"]: record(IDS["c"], files={"video": "link.mp4"}),  # a link in the job's folder, below
        "../../victim": record("../../victim", finished=old),  # a path for a key
        IDS["d"]: record("../../victim", finished=old),
        IDS["e"]: record(IDS["e"], created="yesterday", done=-1, error={"error": 3}),  # wrong types
        IDS["f"]: b"\x80\x04not json at all",
        IDS["g"]: record(IDS["g"], passes=7, pass_no=9, state="running"),
        IDS["h"]: record(IDS["h"], spec={"options": {"size": [1, 2]}, "video_options": {}}, state="queued"),
    }
    for key, body in planted.items():
        storage.put_data(f"job:{key}", body)
    (root / IDS["c"]).mkdir(parents=True, exist_ok=True)
    (root / IDS["c"] / "link.mp4").symlink_to(root.parent.parent / "outside.txt")
    # messages no job sent: junk, a task nobody registered, a video job for a path
    storage.enqueue(b"junk")
    storage.enqueue(json.dumps({"message": {"id": "1", "name": "not.a.task", "args": []}}).encode())
    storage.enqueue(json.dumps({"message": {"id": "2", "name": "app.serving.jobs.video_job",
                                            "args": [["../../victim"]], "kwargs": {}}}).encode())


@pytest.fixture(params=["sqlite", "redis"])
def studio(request, weights_path, tmp_path) -> Iterator[Tuple[str, Path, object]]:
    """A real server on each queue backend, its jobs' folder, and the queue's storage as a stranger
    with access to it sees it. Beside the data folder: a file and a folder that are not the studio's."""
    (tmp_path / "outside.txt").write_bytes(SECRET)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_bytes(SECRET)
    data = tmp_path / "data"
    redis_url: Optional[str] = request.getfixturevalue("redis_url") if request.param == "redis" else None
    env = {"DEPTHMAP_DATA_DIR": str(data), "DEPTHMAP_ENGINE": "eager", "DEPTHMAP_VIDEO_JOB_TTL": "60"}
    if redis_url:
        env["DEPTHMAP_REDIS_URL"] = redis_url
    with running_server(weights_path, tmp_path / "server.log", "--workers", "1", env=env) as (url, _):
        yield url, data / "jobs", make_huey(data, redis_url).storage


def get(url: str, path: str) -> requests.Response:
    return requests.get(url + path, timeout=30)


def test_planted_records_neither_read_serve_nor_delete_outside(studio, tmp_path) -> None:
    url, root, storage = studio
    plant(storage, root)
    for job_id in (i for name, i in IDS.items() if name != "c"):
        for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/result",
                     f"/api/v1/jobs/{job_id}/depth.zip"):
            r = get(url, path)
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert SECRET not in r.content and r.json()["error"] in ("no_job", "not_found")
    assert get(url, f"/api/v1/jobs/{IDS['c']}").json()["state"] == "done"  # a well-formed record: shown
    assert get(url, f"/api/v1/jobs/{IDS['c']}/result").json()["error"] == "not_found"  # its link: not
    assert requests.delete(f"{url}/api/v1/jobs/{IDS['d']}", timeout=30).status_code == 404

    # an upload sweeps every record (expiry, lost consumers) first; the consumer reads the junk messages;
    # the job still runs to its end
    clip = write_clip(tmp_path / "scene.mp4", moving_scene(6, 96, 64)).read_bytes()
    sent = requests.post(url + "/api/v1/video", files={"video": ("scene.mp4", clip, "video/mp4")},
                         data={"norm": "frame"}, timeout=60)
    assert sent.status_code == 202, sent.text
    deadline = time.monotonic() + 180
    while (body := get(url, f"/api/v1/jobs/{sent.json()['id']}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    assert body["state"] == "done", body
    assert (tmp_path / "outside.txt").read_bytes() == SECRET
    assert (tmp_path / "victim" / "keep.txt").read_bytes() == SECRET
    # the records no job could have written are gone from the storage; the well-formed one stays
    assert get(url, f"/api/v1/jobs/{IDS['c']}").ok
    for name in ("a", "b", "d", "e", "f", "g", "h"):
        assert storage.peek_data(f"job:{IDS[name]}") is EmptyData, name
    assert storage.peek_data("job:../../victim") is EmptyData


def chown_other(path: Path) -> None:
    path.mkdir(parents=True)
    os.chown(path, 12345, 12345)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
@pytest.mark.parametrize("command", ["worker", "serve"])
@pytest.mark.parametrize("whose", ["data", "jobs"])
def test_worker_and_serve_refuse_a_folder_of_another_user(weights_path, tmp_path, whose, command) -> None:
    data, jobs = tmp_path / "data", tmp_path / "jobs"
    chown_other(data if whose == "data" else jobs)
    env: Dict[str, str] = {"DEPTHMAP_DATA_DIR": str(data), "DEPTHMAP_VIDEO_DIR": str(jobs),
                           "MIDAS_WEIGHTS": str(weights_path)}  # serve finds the weights first
    done = run_cli([command], env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "belongs to another user" in done.stderr and "Traceback" not in done.stderr
