"""Faults of the result store under a real server: its disk fills up (a real small tmpfs mounted for the
test), its Redis stops for ten seconds (a real redis-server stopped and started on the same port). Each
gives a clear answer with a stable code at once, loses nothing already stored, and the same worker
serves again as soon as the fault is gone, without a restart."""

from __future__ import annotations

import errno
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from support.redis_servers import RedisServer
from support.samples import SAMPLES
from support.servers import running_server, worker_pid


def upload(url: str, name: str) -> requests.Response:
    photo = SAMPLES[name]
    return requests.post(url + "/api/v1/depth", files={"image": (photo.name, photo.read_bytes())},
                         data={"views": "none"}, timeout=120)


def depth_of(url: str, depth_id: str) -> requests.Response:
    return requests.get(f"{url}/api/v1/depth/{depth_id}.npy", timeout=60)


def assert_refused(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json") and r.json()["error"] == code
    assert int(r.headers["Retry-After"]) > 0


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs of the test's own: a data folder that can really fill up."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): the disk-full "
                    "test needs root (CI runs as root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_data_folder_answers_507_keeps_what_it_holds_and_recovers(weights_path, tmp_path,
                                                                          small_disk) -> None:
    data = small_disk / "data"
    with running_server(weights_path, tmp_path / "server.log", "--workers", "1",
                        env={"DEPTHMAP_DATA_DIR": str(data)}) as (url, _):
        pid = worker_pid(url)
        kept = upload(url, "chelsea").json()["depth_id"]
        before = depth_of(url, kept).content
        filler = fill(small_disk)
        # new results have no room: a clear 507, for an upload and for a new upsampling of a kept one
        assert_refused(upload(url, "rocket"), 507, "storage_full")
        assert "disk is full" in upload(url, "rocket").json()["message"]
        assert_refused(requests.post(url + "/api/v1/render", json={"depth_id": kept, "upsample": "guided"},
                                     timeout=120), 507, "storage_full")
        assert_refused(requests.post(url + "/api/v1/batch", files={"image": ("r.jpg", SAMPLES["rocket"]
                                                                             .read_bytes())},
                                     headers={"Accept": "application/zip"}, timeout=120), 507, "storage_full")
        # what the store holds is still served, and so is everything made from it
        assert depth_of(url, kept).content == before
        for path in (f"/api/v1/depth/{kept}/heatmap.png?colormap=jet", f"/api/v1/depth/{kept}.zip?grid=64",
                     f"/api/v1/batch.zip?depth_id={kept}", "/healthz", "/"):
            assert requests.get(url + path, timeout=120).status_code == 200, path
        assert not list((data / "results").glob(".*.tmp"))  # a write that failed left nothing behind
        filler.unlink()
        # room again: the same worker keeps new results, without a restart
        again = upload(url, "rocket")
        assert again.status_code == 200 and depth_of(url, again.json()["depth_id"]).status_code == 200
        assert depth_of(url, kept).content == before and worker_pid(url) == pid
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_redis_stopped_for_ten_seconds_answers_503_at_once_and_loses_nothing(weights_path, tmp_path) -> None:
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        with running_server(weights_path, tmp_path / "server.log", "--workers", "1",
                            env={"DEPTHMAP_REDIS_URL": redis.url}) as (url, _):
            pid = worker_pid(url)
            kept = upload(url, "chelsea").json()["depth_id"]
            before = depth_of(url, kept).content
            redis.stop(save=True)  # as a Redis that keeps its data (snapshot or append-only file)
            outage = time.monotonic()
            answered = 0
            while time.monotonic() - outage < 10:
                for send in (lambda: depth_of(url, kept), lambda: upload(url, "rocket"),
                             lambda: requests.get(f"{url}/api/v1/depth/{kept}/heatmap.png", timeout=60)):
                    t0 = time.monotonic()
                    assert_refused(send(), 503, "store_unavailable")
                    assert time.monotonic() - t0 < 5  # at once, not after a client's timeout
                    answered += 1
                health = requests.get(url + "/healthz", timeout=30)
                assert health.status_code == 200 and "Redis" in health.json()["store"]["error"]
                assert requests.get(url + "/", timeout=30).status_code == 200  # the page itself
                time.sleep(0.5)
            assert answered >= 6
            redis.start()  # the same port, its data loaded back
            assert depth_of(url, kept).content == before
            assert upload(url, "rocket").status_code == 200 and worker_pid(url) == pid
        assert "Traceback" not in (tmp_path / "server.log").read_text()
    finally:
        redis.stop()
