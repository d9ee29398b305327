"""A video folder whose file system fills up, for real: a small tmpfs mounted as DEPTHMAP_VIDEO_DIR
under a real `depthmap serve` (no byte budget, so the disk is the limit). A job that fills it fails with
`storage_full` and leaves nothing half-written; an upload it has no room for (bytes, or inodes for the
job's folder) gets 507 and nothing of it is kept; what was stored before stays whole; and once room is
made the same server takes uploads again. Mounting needs root (CI runs the tests as root); elsewhere the
module is skipped, saying so."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import requests

from app.options import Options, VideoOptions
from app.imaging.video import process_video
from support.clips import moving_scene, noise_clip, write_clip
from support.servers import running_server
from support.video_jobs import send, wait

KB = 1024


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                          text=True, timeout=30)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): the disk-full "
                    "tests need root (CI runs them as root)")


def unmount(path: Path) -> None:
    subprocess.run(["umount", "--lazy", str(path)], check=True, timeout=30)


@pytest.fixture()
def small_disk(tmp_path) -> Iterator[Path]:
    """A 2 MB file system with 40 inodes, mounted for the test."""
    path = tmp_path / "small"
    mount_tmpfs(path, "size=2m,nr_inodes=40,mode=0700")
    yield path
    unmount(path)


def fill(path: Path, leave: int) -> Path:
    """A file that takes all of ``path``'s file system but ``leave`` bytes."""
    filler = path / "filler.bin"
    info = os.statvfs(path)
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(bytes(info.f_bavail * info.f_frsize - leave))
    return filler


def test_process_video_on_a_full_disk_leaves_no_file(model, tmp_path) -> None:
    src = noise_clip(tmp_path / "noise.mp4", 40, 160, 120)  # a depth zip of 1.3 MB, a spool of 7.7 MB
    disk = tmp_path / "tiny"
    mount_tmpfs(disk, "size=1m,mode=0700")
    try:
        for norm in ("clip", "frame"):
            with pytest.raises(OSError) as full:
                process_video(src, disk / "noise.depth.mp4", model, Options(),
                              VideoOptions.from_strings({"norm": norm, "depth_zip": "on"}))
            assert full.value.errno == 28
            assert list(disk.iterdir()) == []  # no part file, spool or frames.csv
    finally:
        unmount(disk)


def test_a_video_folder_that_fills_up(small_disk, weights_path, tmp_path) -> None:
    clips = {"small": write_clip(tmp_path / "small.mp4", moving_scene(6, 96, 64)).read_bytes(),
             "noise": noise_clip(tmp_path / "noise.mp4", 40, 160, 120).read_bytes()}
    clips["padded"] = clips["small"] + bytes(300 * KB)
    env = {"DEPTHMAP_VIDEO_DIR": str(small_disk), "DEPTHMAP_VIDEO_BYTES": "0", "DEPTHMAP_ENGINE": "eager"}
    with running_server(weights_path, tmp_path / "server.log", "--workers", "1", env=env) as (url, _):
        kept = wait(url, send(url, clips["small"], norm="frame").json()["id"])
        assert kept["state"] == "done"
        result = f"{url}/api/v1/jobs/{kept['id']}/result"
        video = requests.get(result, timeout=30).content

        # a job that fills the disk: failed with a clear code, its partial files gone
        job = send(url, clips["noise"], norm="frame", depth_zip="on")
        assert job.status_code == 202, job.text
        failed = wait(url, job.json()["id"])
        assert failed["state"] == "failed" and failed["error"]["error"] == "storage_full", failed
        assert list((small_disk / failed["id"]).iterdir()) == []
        assert requests.get(result, timeout=30).content == video

        # no room for the upload's bytes: 507 before it is written
        filler = fill(small_disk, 64 * KB)
        before = sorted(p.name for p in small_disk.iterdir())
        full = send(url, clips["padded"])
        assert full.status_code == 507 and full.json()["error"] == "storage_full", full.text
        assert "disk is full" in full.json()["message"] and int(full.headers["Retry-After"]) > 0
        assert sorted(p.name for p in small_disk.iterdir()) == before
        filler.unlink()

        # no inode left for the job's folder: 507 too, never a 500
        spare = []
        try:
            while True:
                spare.append(small_disk / f"spare-{len(spare)}")
                spare[-1].touch()
        except OSError as exc:
            assert exc.errno == 28
        full = send(url, clips["small"])
        assert full.status_code == 507 and full.json()["error"] == "storage_full", full.text
        for path in spare:
            path.unlink(missing_ok=True)

        # room again, no restart: the same server takes the upload it refused, and what it kept is whole
        taken = send(url, clips["padded"], norm="frame")
        assert taken.status_code == 202, taken.text
        assert wait(url, taken.json()["id"])["state"] == "done"
        assert requests.get(result, timeout=30).content == video
