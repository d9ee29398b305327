"""The page's privacy note is true to the configuration the server runs under: where photos and videos
rest (in memory on a tmpfs or ramfs, or on a disk; in a Redis that saves to disk or not) and for how
long (the TTL settings), in English and Chinese. The file system type is checked against ``stat -f``,
which reads it from the kernel (statfs), not from the mount table the code reads."""

from __future__ import annotations

import html
import subprocess
from pathlib import Path

import pytest
import redis

from app.serving.store import RedisStore, in_memory

MEMORY = "Photos are kept in memory, never on a disk, for up to {ttl} after their last use."
DISK = "Photos are kept on this server's disk for up to {ttl} after their last use."
VIDEO_MEMORY = "Videos are kept in memory, never on a disk, until {ttl} after their job ends."
VIDEO_DISK = "Videos are kept on this server's disk until {ttl} after their job ends."


def kernel_says_memory(path: Path) -> bool:
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()
    return kind in ("tmpfs", "ramfs")


def footer(app, lang: str = "en") -> str:
    page = app.test_client().get("/", headers={"Accept-Language": lang}).get_data(as_text=True)
    start = page.index('<footer class="bottom">')
    return " ".join(html.unescape(page[start:page.index("</footer>", start)]).split())


def test_in_memory_reads_the_mount_table(tmp_path: Path) -> None:
    table = tmp_path / "mounts"
    table.write_text("/dev/vda / ext4 rw 0 0\n"
                     "tmpfs /dev/shm tmpfs rw 0 0\n"
                     "/dev/vdb /dev/shm/disk ext4 rw 0 0\n"  # a disk mounted inside the tmpfs
                     "tmpfs /srv/my\\040data tmpfs rw 0 0\n"  # a space, as the kernel writes it
                     "tmpfs /srv/café tmpfs rw 0 0\n"
                     "tmpfs /mnt tmpfs rw 0 0\n"
                     "/dev/vdc /mnt xfs rw 0 0\n")  # mounted over the tmpfs: the later one is seen
    assert in_memory(Path("/dev/shm/depthmap-0"), table)
    assert not in_memory(Path("/dev/shm/disk/depthmap-0"), table)
    assert not in_memory(Path("/dev/shmx"), table)  # a prefix of a name is not a mount point
    assert in_memory(Path("/srv/my data/x"), table) and not in_memory(Path("/srv/my"), table)
    assert in_memory(Path("/srv/café/x"), table)
    assert not in_memory(Path("/mnt/x"), table)
    assert not in_memory(Path("/var/tmp"), table)
    assert not in_memory(Path("/dev/shm"), tmp_path / "missing")  # unknown: never promise memory


def test_the_footer_follows_the_data_dir(weights_path: Path, tmp_path: Path) -> None:
    from app import create_app

    folders = [Path("/dev/shm") / f"depthmap-test-{tmp_path.name}", tmp_path / "data"]
    seen = set()
    try:
        for folder in folders:
            if not folder.parent.is_dir():
                continue
            app = create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 1,
                              "DATA_DIR": str(folder), "RESULT_TTL": 5400, "VIDEO_JOB_TTL": 600})
            try:
                memory = kernel_says_memory(folder)
                seen.add(memory)
                text = footer(app)
                assert (MEMORY if memory else DISK).format(ttl="90 min") in text, text
                assert (VIDEO_MEMORY if memory else VIDEO_DISK).format(ttl="10 min") in text, text
                assert (DISK if memory else MEMORY).format(ttl="90 min") not in text
                assert app.test_client().get("/healthz").get_json()["store"]["in_memory"] is memory
                zh = footer(app, "zh-CN")
                expected = "照片只保存在内存中" if memory else "照片保存在本服务器的磁盘上"
                assert expected in zh and "90 分钟" in zh, zh
            finally:
                app.extensions["video_jobs"].shutdown()
    finally:
        subprocess.run(["rm", "-rf", str(folders[0])], check=True)
    if seen != {True, False}:
        pytest.skip(f"only {'memory' if True in seen else 'disk'} folders here: the other case was not seen")


def test_a_redis_that_saves_to_disk_is_not_called_memory(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.config_get("save")["save"] == "" and client.config_get("appendonly")["appendonly"] == "no"
    assert RedisStore(redis_url, ttl_s=60).in_memory()
    client.config_set("appendonly", "yes")
    try:
        assert not RedisStore(redis_url, ttl_s=60).in_memory()
    finally:
        client.config_set("appendonly", "no")
        client.close()
    assert not RedisStore("redis://127.0.0.1:1/0", ttl_s=60).in_memory()  # no answer: not promised
