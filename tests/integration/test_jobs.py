"""The video job queue (app/serving/jobs.py) on a real SQLite Huey in a temp dir, with the synthetic-weights
model and real clips: states, progress and time left, the bounded queue, cancelling queued and running jobs,
failures, time limits, expiry and its file cleanup, JSON (never pickle) in the storage, one embedded
consumer per host, and a second ``VideoJobs`` on the same storage seeing the same jobs."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Callable, Iterator

import numpy as np
import pytest

from app.serving.jobs import (CANCELLED, DONE, FAILED, QUEUED, RUNNING, UPLOAD, Job, JsonSerializer,
                              QueueFull, VideoJobs, make_huey)
from app.options import Options, VideoOptions
from support.clips import moving_scene, write_clip, zero_frames
from support.holds import GatedModel as Gated


def wait_for(check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


class Broken:
    """A model with a bug: what a job does when the code under it raises something unexpected."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError("a bug")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    return write_clip(tmp_path_factory.mktemp("clip") / "scene.mp4", moving_scene(8, 96, 64)).read_bytes()


@pytest.fixture()
def make(tmp_path, model) -> Iterator[Callable[..., VideoJobs]]:
    """``make(**kw)``: a ``VideoJobs`` on one SQLite queue in ``tmp_path`` (several share it, as the
    processes of one host do); each is shut down after the test."""
    made = []
    current = {"model": model}

    def build(**kw) -> VideoJobs:
        kw = {"workers": 1, "queue_size": 1, "ttl_s": 60, **kw}
        jobs = VideoJobs(make_huey(tmp_path / "data"), tmp_path / "jobs",
                         lambda: {"midas-small": current["model"]},
                         lock_path=tmp_path / "data" / "consumer.lock", **kw)
        made.append(jobs)
        return jobs

    build.model = current  # type: ignore[attr-defined]  # a test swaps the model here
    yield build
    for jobs in made:
        jobs.shutdown()


def submit(jobs: VideoJobs, data: bytes, **video: str) -> Job:
    job_id, workdir = jobs.new_workdir()
    (workdir / UPLOAD).write_bytes(data)
    spec = {"options": Options().as_dict(), "video_options": VideoOptions.from_strings(video).as_dict()}
    return jobs.submit(job_id, "scene", spec, {"name": "scene"})


def state(jobs: VideoJobs, job_id: str) -> str:
    job = jobs.get(job_id)
    return job.state if job else "gone"


def test_a_job_runs_and_keeps_only_its_result_as_json_in_the_storage(make, clip, tmp_path) -> None:
    jobs = make()
    assert jobs.start_embedded()
    job = submit(jobs, clip, norm="frame", depth_zip="on")
    wait_for(lambda: state(jobs, job.id) == DONE)
    done = jobs.get(job.id)
    body = done.as_dict()
    assert body["state"] == "done" and body["result"]["frames"] == 8 and body["name"] == "scene"
    assert body["progress"]["frames_done"] == 8 and body["progress"]["fraction"] == 1.0
    assert body["progress"]["elapsed_s"] >= 0 and body["error"] is None
    assert sorted(p.name for p in jobs.workdir(job.id).iterdir()) == ["scene.depth.mp4", "scene.depth.zip"]
    assert jobs.path(done, "video") == jobs.workdir(job.id) / "scene.depth.mp4"
    assert jobs.counts()[DONE] == 1 and 50 < jobs.expires_in(done) <= 60

    # what the storage holds is JSON, readable without Huey (and never unpickled)
    db = sqlite3.connect(tmp_path / "data" / "queue.sqlite3")
    rows = dict(db.execute("select key, value from kv"))
    record = json.loads(rows[f"job:{job.id}"])
    assert record["state"] == "done" and record["files"] == {"video": "scene.depth.mp4",
                                                             "depth_zip": "scene.depth.zip"}
    db.close()


def test_queue_messages_are_json(make, tmp_path, clip) -> None:
    jobs = make(queue_size=5)  # no consumer: the message stays in the queue
    job = submit(jobs, clip)
    db = sqlite3.connect(tmp_path / "data" / "queue.sqlite3")
    (data,), = db.execute("select data from task").fetchall()
    db.close()
    message = json.loads(bytes(data))["message"]
    assert message["args"] == [job.id] and message["name"].endswith("video_job")
    back = JsonSerializer().deserialize(bytes(data))
    assert back.args == (job.id,) and back.id == message["id"]
    with pytest.raises(ValueError):  # a pickle is not read as one
        JsonSerializer().deserialize(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")


def test_progress_fraction_and_time_left() -> None:
    job = Job("a" * 32, state=RUNNING, started=time.time(), spec={"options": {}, "video_options": {}})
    assert job.eta_s() is None  # nothing done yet: no guess
    now = time.time()
    job.note_progress(1, 2, 0, 10, now - 2.0)
    job.note_progress(1, 2, 4, 10, now)  # two seconds for the first four frames
    # six frames left at 0.5 s, plus pass 2 at 30% of pass 1's rate for ten frames
    assert job.eta_s(now) == pytest.approx(6 * 0.5 + 10 * 0.5 * 0.3, rel=0.01)
    assert job.fraction() == pytest.approx(0.4 / 1.3, rel=1e-3)
    job.note_progress(2, 2, 5, 10, now + 1)
    assert job.first_pass_rate == pytest.approx(3.0 / 4)  # pass 1 ended one second later
    assert job.fraction() == pytest.approx((1 + 0.3 * 0.5) / 1.3, rel=1e-3)
    assert Job.from_json(job.to_json(), job.id) == job


def test_full_queue_cancel_queued_at_once_and_running_at_its_next_frame(make, model, clip) -> None:
    gate = threading.Event()
    jobs = make()
    make.model["model"] = Gated(model, gate)
    jobs.start_embedded()
    running = submit(jobs, clip)
    wait_for(lambda: state(jobs, running.id) == RUNNING)
    waiting = submit(jobs, clip)
    assert state(jobs, waiting.id) == QUEUED
    with pytest.raises(QueueFull) as full:
        submit(jobs, clip)
    assert 5 <= full.value.retry_after <= 600

    cancelled = jobs.cancel(waiting.id)
    assert cancelled.state == CANCELLED and cancelled.cancel_requested
    assert list(jobs.workdir(waiting.id).iterdir()) == []  # its upload is deleted at once
    stopping = jobs.cancel(running.id)
    assert stopping.state == RUNNING and stopping.as_dict()["cancel_requested"]
    gate.set()
    wait_for(lambda: state(jobs, running.id) == CANCELLED)
    ended = jobs.get(running.id)
    assert ended.done < 8 and ended.files == {} and list(jobs.workdir(running.id).iterdir()) == []
    assert jobs.cancel("no-such-job") is None
    submit(jobs, clip)  # room again


def test_failures_are_reported_not_raised(make, model, clip, tmp_path) -> None:
    jobs = make(queue_size=3)
    jobs.start_embedded()
    damaged = write_clip(tmp_path / "fast.mp4", moving_scene(4, 96, 64), faststart=True).read_bytes()
    a = submit(jobs, zero_frames(damaged))
    wait_for(lambda: state(jobs, a.id) == FAILED)
    assert jobs.get(a.id).error["error"] == "corrupt"
    make.model["model"] = Broken()
    b = submit(jobs, clip)
    wait_for(lambda: state(jobs, b.id) == FAILED)
    error = jobs.get(b.id).error
    assert error["error"] == "internal_error" and "a bug" not in error["message"]
    assert list(jobs.workdir(b.id).iterdir()) == []
    make.model["model"] = model
    ok = submit(jobs, clip)  # the worker survived
    wait_for(lambda: state(jobs, ok.id) == DONE)


def test_a_job_past_its_time_limit_fails(make, model, clip) -> None:
    gate = threading.Event()
    jobs = make(timeout_s=0.3)
    make.model["model"] = Gated(model, gate)
    jobs.start_embedded()
    job = submit(jobs, clip)
    wait_for(lambda: state(jobs, job.id) == RUNNING)
    time.sleep(0.4)
    gate.set()
    wait_for(lambda: state(jobs, job.id) == FAILED)
    error = jobs.get(job.id).error
    assert error["error"] == "timeout" and "0.3 s" in error["message"]


def test_ended_jobs_expire_with_their_files_in_the_periodic_sweep(make, clip) -> None:
    jobs = make(ttl_s=0.5)
    jobs.start_embedded()
    job = submit(jobs, clip, norm="frame")
    wait_for(lambda: state(jobs, job.id) == DONE)
    workdir = jobs.workdir(job.id)
    assert (workdir / "scene.depth.mp4").is_file()
    time.sleep(0.6)
    # the consumer runs the sweep every minute; here it is called as the consumer calls it
    periodic = [t.__name__ for t in jobs.huey._registry._periodic_tasks]
    assert periodic == ["sweep"]
    assert jobs.sweep() == [] and not workdir.exists()
    assert jobs.get(job.id) is None and jobs.counts()[DONE] == 0


def test_remove_deletes_an_ended_job_at_once(make, clip) -> None:
    jobs = make()
    jobs.start_embedded()
    job = submit(jobs, clip, norm="frame")
    wait_for(lambda: state(jobs, job.id) == DONE)
    assert not jobs.remove("nope")
    assert jobs.remove(job.id) and not jobs.workdir(job.id).exists() and jobs.get(job.id) is None
    assert jobs.huey.storage.result_items() == {}  # nothing of it is left in the storage


def test_another_process_sees_the_same_jobs_and_one_consumer_runs_per_host(make, model, clip) -> None:
    gate = threading.Event()
    make.model["model"] = Gated(model, gate)
    a, b = make(), make()  # two web processes of one host: one queue file, one lock file
    assert a.start_embedded() and not b.start_embedded()  # the lock is taken
    job = submit(b, clip)
    wait_for(lambda: state(b, job.id) == RUNNING)  # run by a's consumer, seen from b
    assert b.get(job.id).worker == a.me
    b.cancel(job.id)  # cancelled from b: a's task reads the flag
    gate.set()
    wait_for(lambda: state(a, job.id) == CANCELLED)
    a.shutdown()  # the holder goes: its lock is free for the next one that asks
    assert b.start_embedded()
    done = submit(a, clip, norm="frame")
    wait_for(lambda: state(a, done.id) == DONE)


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError):
        VideoJobs(make_huey(tmp_path), tmp_path, lambda: None, workers=0)  # type: ignore[arg-type,return-value]


def test_the_same_jobs_through_a_real_redis(redis_url, model, clip, tmp_path) -> None:
    import redis

    def build() -> VideoJobs:
        return VideoJobs(make_huey(tmp_path / "unused", redis_url), tmp_path / "jobs",
                         lambda: {"midas-small": model}, queue_size=2, ttl_s=60, lock_path=tmp_path / "lock")

    a, b = build(), build()  # two processes (of two hosts: the lock path is per host, here shared)
    try:
        job = submit(b, clip, norm="frame")
        client = redis.Redis.from_url(redis_url)
        (message,) = client.lrange("huey.redis.depthmapvideo", 0, -1)
        assert json.loads(message)["message"]["args"] == [job.id]  # the queue holds JSON
        assert a.start_embedded()
        wait_for(lambda: state(b, job.id) == DONE)
        record = json.loads(client.hget("huey.results.depthmapvideo", f"job:{job.id}"))
        assert record["state"] == "done" and record["worker"] == a.me
        assert b.path(b.get(job.id), "video").is_file()
        assert b.remove(job.id) and a.get(job.id) is None
        assert not client.hexists("huey.results.depthmapvideo", f"job:{job.id}")
        client.close()
    finally:
        a.shutdown()
        b.shutdown()


def test_a_waiting_job_whose_message_was_lost_is_queued_again(make, clip, tmp_path) -> None:
    jobs = make()
    job = submit(jobs, clip, norm="frame")  # no consumer yet: it waits
    jobs.huey.storage.flush_queue()  # as a consumer killed right after taking the message would leave it
    assert jobs.huey.pending_count() == 0
    jobs.grace_s = 0.1
    time.sleep(0.2)
    jobs.sweep()
    assert jobs.huey.pending_count() == 1
    jobs.start_embedded()
    wait_for(lambda: state(jobs, job.id) == DONE)


def test_a_job_folder_without_a_record_is_deleted_once_old(make, tmp_path) -> None:
    jobs = make(ttl_s=1)
    _, kept = jobs.new_workdir()  # an upload arriving: no record yet, and new
    _, orphan = jobs.new_workdir()
    old = time.time() - 700
    os.utime(orphan, (old, old))
    jobs.sweep()
    assert kept.is_dir() and not orphan.exists()
