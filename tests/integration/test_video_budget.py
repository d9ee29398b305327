"""The video jobs' byte budget (DEPTHMAP_VIDEO_BYTES) and the queue's bound, against real `depthmap serve`
processes: an upload is refused before anything of it is written (the jobs' folder does not even change)
when the queue is full (503) or the budget has no room for it (507, or 413 when it could never fit); a job
whose files grow past the budget fails with `storage_full` and leaves nothing, the results already kept
stay whole, and once room is made the same server takes the next upload. A stream that grows past
`VIDEO_MAX_PIXELS` after its first frames fails its job with `too_large`."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
import requests

from support.clips import moving_scene, noise_clip, size_change_ts, write_clip
from support.servers import running_server
from support.video_jobs import send, wait

KB = 1024
BUDGET = 1500 * KB


def snapshot(root: Path) -> Tuple[int, list]:
    """The folder's modification time and its entries: creating and deleting anything in it changes the
    first, so an unchanged snapshot means nothing was written there, not even for a moment."""
    return root.stat().st_mtime_ns, sorted(p.name for p in root.iterdir())


def job_bytes(root: Path, job_id: str) -> int:
    return sum(p.stat().st_size for p in (root / job_id).iterdir())


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Dict[str, bytes]:
    folder = tmp_path_factory.mktemp("clips")
    small = write_clip(folder / "small.mp4", moving_scene(6, 96, 64)).read_bytes()
    return {"small": small,
            "noise16": noise_clip(folder / "n16.mp4", 16, 160, 120).read_bytes(),
            "noise40": noise_clip(folder / "n40.mp4", 40, 160, 120, seed=1).read_bytes(),
            # a real clip that takes 1000 KB: FFmpeg reads an MP4 up to its index and ignores the rest
            "padded": small + bytes(1000 * KB - len(small)),
            "grows": size_change_ts(folder / "grows.ts", (10, 160, 120), (4, 640, 480)).read_bytes()}


@pytest.fixture(scope="module")
def server(weights_path, tmp_path_factory) -> Iterator[Tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("budget")
    root = folder / "jobs"
    env = {"DEPTHMAP_VIDEO_DIR": str(root), "DEPTHMAP_VIDEO_BYTES": str(BUDGET),
           "DEPTHMAP_VIDEO_MAX_PIXELS": str(160 * 120), "DEPTHMAP_VIDEO_JOB_TTL": "600",
           "DEPTHMAP_ENGINE": "eager"}
    with running_server(weights_path, folder / "server.log", "--workers", "1", env=env) as (url, _):
        yield url, root


def test_the_budget_holds_before_and_while_jobs_run_and_room_comes_back(server, clips) -> None:
    url, root = server
    kept = send(url, clips["noise16"], norm="frame", depth_zip="on").json()
    assert wait(url, kept["id"])["state"] == "done"
    before = requests.get(f"{url}/api/v1/jobs/{kept['id']}/depth.zip", timeout=30).content
    held = job_bytes(root, kept["id"])  # its results: the upload went when it ended
    assert 400 * KB < held < BUDGET - 600 * KB

    # a job whose files grow past what is left stops with a clear code and keeps nothing
    grown = send(url, clips["noise40"], norm="clip", depth_zip="on")
    assert grown.status_code == 202, grown.text
    failed = wait(url, grown.json()["id"])
    assert failed["state"] == "failed" and failed["error"]["error"] == "storage_full", failed
    assert "DEPTHMAP_VIDEO_BYTES" in failed["error"]["message"]
    assert list((root / grown.json()["id"]).iterdir()) == []
    again = requests.get(f"{url}/api/v1/jobs/{kept['id']}/depth.zip", timeout=30)
    assert again.status_code == 200 and again.content == before  # what was kept is whole

    # an upload the budget has no room for now: 507 with Retry-After, and nothing of it written
    was = snapshot(root)
    full = send(url, clips["padded"])
    body = full.json()
    assert full.status_code == 507 and body["error"] == "storage_full", body
    assert 5 <= int(full.headers["Retry-After"]) <= 600 and "DEPTHMAP_VIDEO_BYTES" in body["message"]
    never = send(url, bytes(BUDGET + KB))  # more than the whole budget: no use trying again
    assert never.status_code == 413 and never.json()["error"] == "too_large"
    assert snapshot(root) == was

    # room made (the kept job deleted): the same server takes the same upload
    assert requests.delete(f"{url}/api/v1/jobs/{kept['id']}", timeout=30).status_code == 204
    taken = send(url, clips["padded"], norm="frame")
    assert taken.status_code == 202, taken.text
    assert wait(url, taken.json()["id"])["state"] == "done"


def test_a_stream_that_grows_past_the_pixel_limit_fails_its_job(server, clips) -> None:
    url, root = server
    job = send(url, clips["grows"], "grows.ts", norm="frame")
    assert job.status_code == 202, job.text  # its headers show 160x120
    assert job.json()["input"]["width"] == 160
    done = wait(url, job.json()["id"])
    assert done["state"] == "failed" and done["error"]["error"] == "too_large", done
    assert "640x480" in done["error"]["message"] and list((root / done["id"]).iterdir()) == []


def test_a_full_queue_refuses_an_upload_before_writing_it(weights_path, clips, tmp_path) -> None:
    root = tmp_path / "jobs"
    env = {"DEPTHMAP_VIDEO_DIR": str(root), "DEPTHMAP_VIDEO_QUEUE": "1",
           "DEPTHMAP_EMBEDDED_WORKER": "false", "DEPTHMAP_ENGINE": "eager"}  # no consumer: jobs wait
    with running_server(weights_path, tmp_path / "server.log", "--workers", "1", env=env) as (url, _):
        waiting = send(url, clips["small"])
        assert waiting.status_code == 202 and waiting.json()["state"] == "queued"
        was = snapshot(root)
        for _ in range(3):
            refused = send(url, clips["noise16"])
            assert refused.status_code == 503 and refused.json()["error"] == "busy"
            assert int(refused.headers["Retry-After"]) >= 5
        assert snapshot(root) == was
        assert requests.delete(f"{url}/api/v1/jobs/{waiting.json()['id']}", timeout=30).status_code == 202
        assert send(url, clips["small"]).status_code == 202  # a place again
