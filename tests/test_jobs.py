"""The job machinery (app/jobs.py) with small work functions: states, progress and time left, the
bounded queue, cancelling queued and running jobs, failures, time limits, expiry and its file cleanup."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

from app.jobs import (CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobError, JobManager, QueueFull)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


@pytest.fixture()
def manager(tmp_path) -> Iterator[JobManager]:
    m = JobManager(workers=1, queue_size=1, ttl_s=60, root=tmp_path / "jobs")
    yield m
    m.shutdown()


def frames_work(n: int, gate: threading.Event | None = None) -> Callable[[Job], Dict[str, Any]]:
    """Work that writes an input and a result into its folder and reports ``n`` frames."""
    def work(job: Job) -> Dict[str, Any]:
        (job.workdir / "upload").write_bytes(b"input")
        for i in range(n):
            if gate is not None:
                gate.wait(10)
            job.progress(1, 1, i + 1, n)
        result = job.workdir / "out.mp4"
        result.write_bytes(b"result")
        job.files["video"] = result
        return {"frames": n}
    return work


def test_a_job_runs_and_keeps_only_its_result(manager) -> None:
    workdir = manager.new_workdir()
    job = manager.submit(frames_work(5), workdir, {"name": "clip"})
    wait_for(lambda: job.state == DONE)
    body = job.as_dict()
    assert body["state"] == "done" and body["result"] == {"frames": 5} and body["name"] == "clip"
    assert body["progress"]["frames_done"] == 5 and body["progress"]["fraction"] == 1.0
    assert body["progress"]["elapsed_s"] >= 0 and body["error"] is None
    assert sorted(p.name for p in workdir.iterdir()) == ["out.mp4"]  # the upload is gone
    assert manager.get(job.id) is job and manager.counts()[DONE] == 1


def test_progress_fraction_and_time_left(manager) -> None:
    job = Job("x", Path("."), frames_work(0), state=RUNNING)
    job.started = time.monotonic()
    assert job.eta_s() is None  # nothing done yet: no guess
    job.progress(1, 2, 0, 10)
    job.pass_started = time.monotonic() - 2.0  # two seconds for the first four frames
    job.progress(1, 2, 4, 10)
    # six frames left at 0.5 s, plus pass 2 at 30% of pass 1's rate for ten frames
    assert job.eta_s() == pytest.approx(6 * 0.5 + 10 * 0.5 * 0.3, rel=0.05)
    assert job.fraction() == pytest.approx(0.4 / 1.3, rel=1e-3)
    job.progress(2, 2, 5, 10)
    assert job.first_pass_rate is not None
    assert job.fraction() == pytest.approx((1 + 0.3 * 0.5) / 1.3, rel=1e-3)


def test_a_full_queue_is_refused_with_a_retry_time(manager) -> None:
    gate = threading.Event()
    running = manager.submit(frames_work(3, gate), manager.new_workdir())
    wait_for(lambda: running.state == RUNNING)
    waiting = manager.submit(frames_work(3, gate), manager.new_workdir())
    assert waiting.state == QUEUED
    with pytest.raises(QueueFull) as full:
        manager.submit(frames_work(1), manager.new_workdir())
    assert 5 <= full.value.retry_after <= 600
    gate.set()
    wait_for(lambda: waiting.state == DONE)
    assert running.state == DONE
    manager.submit(frames_work(1), manager.new_workdir())  # room again


def test_cancel_a_queued_job_at_once_and_a_running_one_at_its_next_frame(manager) -> None:
    gate = threading.Event()
    running = manager.submit(frames_work(50, gate), manager.new_workdir())
    wait_for(lambda: running.state == RUNNING)
    queued_dir = manager.new_workdir()
    (queued_dir / "upload-1").write_bytes(b"a video")
    queued = manager.submit(frames_work(5), queued_dir)
    assert manager.cancel(queued.id).state == CANCELLED
    assert list(queued_dir.iterdir()) == []  # its upload is deleted at once
    manager.cancel(running.id)
    assert running.state == RUNNING and running.as_dict()["cancel_requested"]
    gate.set()
    wait_for(lambda: running.state == CANCELLED)
    assert running.done < 50 and running.files == {} and list(running.workdir.iterdir()) == []
    assert manager.cancel("no-such-job") is None


def test_failures_are_reported_not_raised(manager) -> None:
    def user_error(job: Job) -> Dict[str, Any]:
        raise JobError("corrupt", "No frame of the video could be decoded.")

    def bug(job: Job) -> Dict[str, Any]:
        (job.workdir / "half.mp4").write_bytes(b"...")
        raise ZeroDivisionError("a bug")

    a = manager.submit(user_error, manager.new_workdir())
    wait_for(lambda: a.state == FAILED)
    assert a.error == {"error": "corrupt", "message": "No frame of the video could be decoded."}
    b = manager.submit(bug, manager.new_workdir())
    wait_for(lambda: b.state == FAILED)
    assert b.error["error"] == "internal_error" and "a bug" not in b.error["message"]
    assert list(b.workdir.iterdir()) == []
    ok = manager.submit(frames_work(2), manager.new_workdir())  # the worker survived
    wait_for(lambda: ok.state == DONE)


def test_a_job_past_its_time_limit_fails(tmp_path) -> None:
    m = JobManager(workers=1, queue_size=1, ttl_s=60, timeout_s=0.2, root=tmp_path)
    try:
        def slow(job: Job) -> Dict[str, Any]:
            for i in range(100):
                time.sleep(0.01)
                job.progress(1, 1, i, 100)
            return {}

        job = m.submit(slow, m.new_workdir())
        wait_for(lambda: job.state == FAILED)
        assert job.error["error"] == "timeout" and "0.2 s" in job.error["message"]
    finally:
        m.shutdown()


def test_ended_jobs_expire_with_their_files_without_any_request(tmp_path) -> None:
    m = JobManager(workers=1, queue_size=1, ttl_s=0.6, root=tmp_path)
    try:
        job = m.submit(frames_work(1), m.new_workdir())
        wait_for(lambda: job.state == DONE)
        assert (job.workdir / "out.mp4").is_file()
        # the janitor thread sweeps on its own; nobody calls get() meanwhile
        wait_for(lambda: not job.workdir.exists(), timeout=5)
        assert m.get(job.id) is None and m.counts()[DONE] == 0
    finally:
        m.shutdown()


def test_remove_and_shutdown_delete_files(tmp_path) -> None:
    m = JobManager(workers=1, queue_size=2, ttl_s=60, root=tmp_path)
    done = m.submit(frames_work(1), m.new_workdir())
    wait_for(lambda: done.state == DONE)
    assert not m.remove("nope")
    assert m.remove(done.id) and not done.workdir.exists() and m.get(done.id) is None
    gate = threading.Event()
    running = m.submit(frames_work(10, gate), m.new_workdir())
    wait_for(lambda: running.state == RUNNING)
    assert not m.remove(running.id)  # a running job is cancelled, not removed
    gate.set()
    m.shutdown()
    assert list(tmp_path.iterdir()) == []


def test_workers_start_with_the_first_job(tmp_path) -> None:
    before = threading.active_count()
    m = JobManager(workers=2, queue_size=1, root=tmp_path)
    assert threading.active_count() == before
    m.submit(frames_work(1), m.new_workdir())
    assert threading.active_count() == before + 3  # two workers and the janitor
    m.shutdown()
    with pytest.raises(ValueError):
        JobManager(workers=0)


def test_dropped_managers_leave_no_exit_hook_and_exit_still_stops_the_workers(tmp_path) -> None:
    hooks = []
    for _ in range(3):  # as create_app does once per test
        m = JobManager(workers=1, queue_size=1, root=tmp_path)
        hooks.append((weakref.ref(m), m._finalizer))
        del m
    gc.collect()
    assert all(ref() is None and not hook.alive for ref, hook in hooks)

    def slow(job: Job) -> Dict[str, Any]:
        for i in range(1000):
            time.sleep(0.01)
            job.progress(1, 1, i + 1, 1000)
        return {}

    m = JobManager(workers=1, queue_size=1, root=tmp_path)
    job = m.submit(slow, m.new_workdir())
    wait_for(lambda: job.done > 0)
    threads = list(m._threads)
    assert m._finalizer.alive and m._finalizer.atexit  # what the interpreter runs at exit
    m._finalizer()
    assert not any(t.is_alive() for t in threads) and job.state == CANCELLED
    assert list(tmp_path.iterdir()) == []
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None  # stopped workers no longer hold it

