"""The video job API with Flask's test client: upload -> 202 -> progress -> result (with Range), the zip,
cancel, delete, expiry, a full queue (503 + Retry-After), and every upload error as JSON, with nothing
left on disk after a refused upload."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from app.serving.jobs import VideoJobs
from support.clips import moving_scene, stream_info, write_clip, zero_frames
from support.forms import form_data
from support.holds import GatedModel
from support.images import truncated
from support.samples import SAMPLES


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("video-jobs")


@pytest.fixture(scope="module")
def vapp(weights_path, video_dir, tmp_path_factory):
    from app import create_app

    app = create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 2,
                      "DATA_DIR": str(tmp_path_factory.mktemp("data")), "VIDEO_DIR": str(video_dir),
                      "VIDEO_WORKERS": 1, "VIDEO_QUEUE": 1,
                      "VIDEO_JOB_TTL": 120, "VIDEO_MAX_SECONDS": 60, "VIDEO_MAX_FRAMES": 100})
    yield app
    app.extensions["video_jobs"].shutdown()


@pytest.fixture()
def vclient(vapp):
    return vapp.test_client()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    return write_clip(tmp_path_factory.mktemp("clip") / "scene.mp4", moving_scene(8, 96, 64)).read_bytes()


def post_video(client, data: bytes, filename: str = "scene.mp4", **fields: Any):
    return client.post("/api/v1/video", **form_data({"video": (data, filename), **fields}))


def wait_state(client, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 300) -> Dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if body["state"] in states:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def job_dirs(video_dir: Path) -> list:
    return sorted(p.name for p in video_dir.iterdir() if p.is_dir())


def test_config_reaches_the_job_manager(vapp, video_dir) -> None:
    manager: VideoJobs = vapp.extensions["video_jobs"]
    assert (manager.workers, manager.queue_size, manager.ttl_s, manager.root) == (1, 1, 120.0, video_dir)
    assert manager.timeout_s == 3600  # a default from app/config.py


def test_upload_progress_result_and_zip(vclient, clip, video_dir) -> None:
    r = post_video(vclient, clip, view="side", colormap="viridis", depth_zip="on", stride="1")
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert r.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["name"] == "scene"
    assert job["input"]["width"] == 96 and job["input"]["frames"] == 8 and job["input"]["codec"] == "h264"
    assert job["options"]["colormap"] == "viridis" and job["video_options"]["view"] == "side"
    assert job["video_options"]["depth_zip"] is True and job["video_options"]["norm"] == "clip"

    done = wait_state(vclient, job["id"])
    assert done["state"] == "done", done
    assert done["progress"]["frames_done"] == 8 and done["progress"]["passes"] == 2
    assert done["result"]["frames"] == 8 and done["result"]["width"] == 192 and done["result"]["fps"] == 10
    assert done["expires_in_s"] > 100
    files = done["result"]["files"]
    assert files == {"video": f"/api/v1/jobs/{job['id']}/result",
                     "depth_zip": f"/api/v1/jobs/{job['id']}/depth.zip"}

    video = vclient.get(files["video"])
    assert video.status_code == 200 and video.mimetype == "video/mp4"
    assert "attachment" not in video.headers.get("Content-Disposition", "")  # plays in the page
    path = video_dir / "got.mp4"
    path.write_bytes(video.data)
    try:
        info = stream_info(path)
    finally:
        path.unlink()
    assert (info["codec"], info["pix_fmt"], info["width"], info["frames"]) == ("h264", "yuv420p", 192, 8)
    part = vclient.get(files["video"], headers={"Range": "bytes=0-99"})  # a <video> seeking
    assert part.status_code == 206 and part.data == video.data[:100]
    attached = vclient.get(files["video"] + "?download=1")
    assert 'filename=scene.depth.mp4' in attached.headers["Content-Disposition"]
    video.close(), part.close(), attached.close()

    z = vclient.get(files["depth_zip"])
    assert z.status_code == 200 and z.mimetype == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(z.data)).namelist()
    assert len([n for n in names if n.endswith(".png")]) == 8 and "frames.csv" in names
    z.close()
    # only the results are kept; the upload was deleted when the job ended
    workdir = next(d for d in video_dir.iterdir() if (d / "scene.depth.mp4").exists())
    assert sorted(p.name for p in workdir.iterdir()) == ["scene.depth.mp4", "scene.depth.zip"]


def test_a_stereo_job_gives_a_3d_video(vclient, clip, video_dir) -> None:
    job = post_video(vclient, clip, view="stereo", layout="top-bottom", divergence="4", convergence="0.2",
                     norm="frame", ema="off")
    assert job.status_code == 202, job.get_json()
    done = wait_state(vclient, job.get_json()["id"])
    assert done["state"] == "done", done
    path = video_dir / "stereo.mp4"
    with vclient.get(done["result"]["files"]["video"]) as response:
        path.write_bytes(response.data)
    try:
        info = stream_info(path)
    finally:
        path.unlink()
    assert (info["codec"], info["width"], info["height"], info["frames"]) == ("h264", 96, 128, 8)
    bad = post_video(vclient, clip, view="stereo", divergence="20")
    assert bad.status_code == 422 and "divergence" in bad.get_json()["message"]


def test_no_zip_unless_asked(vclient, clip) -> None:
    job = post_video(vclient, clip, norm="frame", ema="off").get_json()
    done = wait_state(vclient, job["id"])
    assert list(done["result"]["files"]) == ["video"] and done["progress"]["passes"] == 1
    r = vclient.get(f"/api/v1/jobs/{job['id']}/depth.zip")
    assert r.status_code == 404 and "depth_zip=on" in r.get_json()["message"]


def test_full_queue_503_progress_and_cancel(vapp, vclient, clip, monkeypatch, video_dir) -> None:
    gate = threading.Event()
    monkeypatch.setitem(vapp.extensions["depth_models"], "midas-small",
                        GatedModel(vapp.extensions["depth_models"]["midas-small"], gate))
    first = post_video(vclient, clip).get_json()
    wait_state(vclient, first["id"], ("running",))
    second = post_video(vclient, clip).get_json()
    assert second["state"] == "queued"
    before = job_dirs(video_dir)
    full = post_video(vclient, clip)
    assert full.status_code == 503 and full.get_json()["error"] == "busy"
    assert 5 <= int(full.headers["Retry-After"]) <= 600
    assert job_dirs(video_dir) == before  # the refused upload is not kept

    # progress while running: frames done of total, pass 1 of 2, and a time left once a frame is done
    gate.set()
    deadline = time.monotonic() + 120
    while True:
        p = vclient.get(f"/api/v1/jobs/{first['id']}").get_json()["progress"]
        if p["frames_done"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    gate.clear()
    assert p["frames_total"] == 8 and p["passes"] == 2 and p["eta_s"] is not None and 0 < p["fraction"] < 1

    cancelled = vclient.delete(f"/api/v1/jobs/{second['id']}")  # queued: cancelled at once
    assert cancelled.status_code == 202 and cancelled.get_json()["state"] == "cancelled"
    stopping = vclient.delete(f"/api/v1/jobs/{first['id']}")  # running: at its next frame
    assert stopping.status_code == 202 and stopping.get_json()["cancel_requested"]
    gate.set()
    assert wait_state(vclient, first["id"])["state"] == "cancelled"
    r = vclient.get(f"/api/v1/jobs/{first['id']}/result")
    assert r.status_code == 409 and r.get_json()["error"] == "job_cancelled"
    for job_id in (first["id"], second["id"]):
        workdir = vapp.extensions["video_jobs"].workdir(job_id)
        assert list(workdir.iterdir()) == []  # upload and partial output deleted


def test_result_before_done_is_409(vapp, vclient, clip, monkeypatch) -> None:
    gate = threading.Event()
    monkeypatch.setitem(vapp.extensions["depth_models"], "midas-small",
                        GatedModel(vapp.extensions["depth_models"]["midas-small"], gate))
    job = post_video(vclient, clip).get_json()
    r = vclient.get(f"/api/v1/jobs/{job['id']}/result")
    assert r.status_code == 409 and r.get_json()["error"] == "not_ready"
    vclient.delete(f"/api/v1/jobs/{job['id']}")
    gate.set()
    wait_state(vclient, job["id"])


def test_damaged_video_fails_the_job_clearly(vclient, tmp_path) -> None:
    src = write_clip(tmp_path / "fast.mp4", moving_scene(4, 96, 64), faststart=True)
    job = post_video(vclient, zero_frames(src.read_bytes())).get_json()
    done = wait_state(vclient, job["id"])
    assert done["state"] == "failed" and done["error"]["error"] == "corrupt"
    r = vclient.get(f"/api/v1/jobs/{job['id']}/result")
    assert r.status_code == 409 and r.get_json()["error"] == "job_failed"


def test_delete_an_ended_job_deletes_its_files(vapp, vclient, clip) -> None:
    job = post_video(vclient, clip, norm="frame").get_json()
    wait_state(vclient, job["id"])
    workdir = vapp.extensions["video_jobs"].workdir(job["id"])
    assert (workdir / "scene.depth.mp4").is_file()
    r = vclient.delete(f"/api/v1/jobs/{job['id']}")
    assert r.status_code == 204 and not workdir.exists()
    assert vclient.get(f"/api/v1/jobs/{job['id']}").status_code == 404


def test_ended_jobs_expire(vapp, vclient, clip, monkeypatch) -> None:
    manager = vapp.extensions["video_jobs"]
    job = post_video(vclient, clip, norm="frame").get_json()
    wait_state(vclient, job["id"])
    workdir = manager.workdir(job["id"])
    monkeypatch.setattr(manager, "ttl_s", 0.2)
    time.sleep(0.3)
    r = vclient.get(f"/api/v1/jobs/{job['id']}")
    assert r.status_code == 404 and r.get_json()["error"] == "no_job" and not workdir.exists()


@pytest.fixture()
def refused(vapp, video_dir) -> Iterator[None]:
    """Asserts that a refused upload leaves no folder behind."""
    before = job_dirs(video_dir)
    yield
    assert job_dirs(video_dir) == before


@pytest.mark.parametrize("fields,status,code", [
    ({"video": (b"", "empty.mp4")}, 400, "empty"),
    ({"video": (b"hello, this is text" * 10, "notes.mp4")}, 415, "not_video"),
    ({"video": (SAMPLES["chelsea"].read_bytes(), "cat.png")}, 415, "not_video"),
    ({"video": "truncated"}, 400, "corrupt"),
    ({"image": "clip"}, 400, "missing_file"),
    ({"video": ["clip", "clip"]}, 400, "too_many_files"),
    ({"video": "clip", "stride": "0"}, 422, "bad_option"),
    ({"video": "clip", "view": "3d"}, 422, "bad_option"),
    ({"video": "clip", "colormap": "nope"}, 422, "bad_option"),
    ({"video": "clip", "sharpen": "on"}, 422, "bad_option"),
    ({"video": "long"}, 413, "too_long"),
])
def test_upload_errors(vclient, clip, tmp_path, refused, fields, status, code) -> None:
    made = {"clip": (clip, "scene.mp4"), "truncated": (truncated(clip), "cut.mp4"),
            "long": (write_clip(tmp_path / "long.mp4", moving_scene(101, 64, 48)).read_bytes(), "l.mp4")}
    values = {}
    for name, value in fields.items():
        if isinstance(value, list):
            values[name] = [made[v] for v in value]
        else:
            values[name] = made.get(value, value) if isinstance(value, str) and name in ("video", "image") \
                else value
    r = vclient.post("/api/v1/video", **form_data(values))
    assert r.status_code == status, r.get_json()
    body = r.get_json()
    assert body["error"] == code and body["message"]


def test_not_multipart_and_too_big(vapp, vclient, clip, refused, monkeypatch) -> None:
    r = vclient.post("/api/v1/video", data=clip, content_type="video/mp4")
    assert r.status_code == 415 and r.get_json()["error"] == "unsupported_type"
    monkeypatch.setitem(vapp.config, "VIDEO_MAX_CONTENT_LENGTH", 1000)
    r = post_video(vclient, clip)
    body = r.get_json()
    assert r.status_code == 413 and body["error"] == "too_large" and "video limit" in body["message"]


def test_videos_may_be_larger_than_photos(vapp, vclient, refused, monkeypatch) -> None:
    # the photo limit (MAX_CONTENT_LENGTH) does not apply to /api/v1/video, which has its own
    monkeypatch.setitem(vapp.config, "MAX_CONTENT_LENGTH", 1000)
    r = post_video(vclient, b"x" * 5000, "big.mp4")
    assert r.status_code == 415 and r.get_json()["error"] == "not_video"  # read in full, then judged


def test_unknown_job(vclient) -> None:
    for method in ("get", "delete"):
        r = getattr(vclient, method)("/api/v1/jobs/0123456789abcdef0123456789abcdef")
        assert r.status_code == 404 and r.get_json()["error"] == "no_job"
    assert vclient.get("/api/v1/jobs/nope/result").status_code == 404


def test_page_offers_videos(vclient) -> None:
    html = vclient.get("/").get_data(as_text=True)
    assert 'accept="image/*,video/*"' in html and 'id="video-options"' in html
    assert 'name="ema_alpha"' in html and 'name="norm"' in html and "video.js" in html
    assert 'id="video-progress"' in html and 'id="video-cancel"' in html


def test_the_queue_on_redis_stopped_and_back(weights_path, redis_server, redis_url, clip, tmp_path) -> None:
    from app import create_app

    app = create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 2,
                      "REDIS_URL": redis_url, "DATA_DIR": str(tmp_path / "data"),
                      "VIDEO_DIR": str(tmp_path / "jobs")})
    client = app.test_client()
    try:
        job = post_video(client, clip, norm="frame").get_json()
        assert wait_state(client, job["id"])["state"] == "done"
        redis_server.stop()
        for r in (client.get(f"/api/v1/jobs/{job['id']}"), post_video(client, clip, norm="frame")):
            body = r.get_json()
            assert r.status_code == 503 and body["error"] == "store_unavailable", body
            assert "try again" in body["message"] and int(r.headers["Retry-After"]) > 0
        assert job_dirs(tmp_path / "jobs") == [job["id"]]  # the refused upload is not kept
        redis_server.start()  # the same app, no restart: the next request connects again
        again = post_video(client, clip, norm="frame")
        assert again.status_code == 202, again.get_json()
        assert wait_state(client, again.get_json()["id"])["state"] == "done"
    finally:
        app.extensions["video_jobs"].shutdown()
