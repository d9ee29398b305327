"""The result store, both backends for real: the embedded files in a temp folder and Debian's
redis-server on a free loopback port. Two store objects on the same folder or Redis stand for two worker
processes (each has its own in-memory front); tests/integration/test_shared_store.py runs real server
processes."""

from __future__ import annotations

import io
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.options import Options
from app.serving.store import (SUFFIX, Entry, FileStore, RedisStore, StoreUnavailable, depth_id, open_store,
                               private_dir)


def entry(key: str, side: int = 10, data: bytes = b"x", name: str = "photo") -> Entry:
    rng = np.random.default_rng(side)
    return Entry(key, data, name, Options(size=384).depth_options(),
                 rng.integers(0, 255, (side, side + 1, 3), dtype=np.uint8),
                 rng.random((side, side + 1), dtype=np.float32), rng.random((4, 5), dtype=np.float32),
                 (1, 2, 3))


def twin(store):
    """A second store object on the same folder or Redis: another worker process's view."""
    if isinstance(store, FileStore):
        return FileStore(store.root.parent, store.max_bytes, store.ttl_s)
    return RedisStore(store.url, store.ttl_s)


def same(a: Entry, b: Entry) -> bool:
    return (a.id, a.data, a.name, dict(a.depth_opts), a.pad_box) == (b.id, b.data, b.name, dict(b.depth_opts),
                                                                    b.pad_box) and \
        all(np.array_equal(getattr(a, n), getattr(b, n)) and getattr(a, n).dtype == getattr(b, n).dtype
            for n in ("photo", "depth", "pred"))


def test_an_entry_comes_back_whole_on_another_worker(result_store) -> None:
    e = entry("a" * 32, side=30, data=os.urandom(1000))
    result_store.put(e)
    other = twin(result_store)
    got = other.get(e.id)
    assert got is not None and got is not e and same(got, e)
    with pytest.raises(ValueError):
        got.depth[0, 0] = 1.0  # shared arrays are read-only
    assert other.get("b" * 32) is None


def test_delete_is_at_once_on_every_worker(result_store) -> None:
    e = entry("c" * 32)
    result_store.put(e)
    other = twin(result_store)
    assert other.get(e.id) is not None  # now in the other worker's in-memory front too
    assert result_store.delete(e.id) and not result_store.delete(e.id)
    assert other.get(e.id) is None and result_store.get(e.id) is None


def test_a_replaced_entry_is_seen_by_every_worker(result_store) -> None:
    result_store.put(entry("d" * 32, name="first"))
    other = twin(result_store)
    assert other.get("d" * 32).name == "first"
    result_store.put(entry("d" * 32, name="second"))
    assert other.get("d" * 32).name == "second"


def test_entries_expire_after_their_ttl_since_last_use(result_store) -> None:
    result_store.ttl_s = 2
    result_store.put(entry("e" * 32))
    result_store.put(entry("f" * 32))
    for _ in range(3):  # used every second: kept past its TTL
        time.sleep(1)
        assert result_store.get("e" * 32) is not None
    assert result_store.get("f" * 32) is None  # unused for 3 s


def test_depth_id_is_keyed_with_the_deployments_secret(result_store) -> None:
    base = Options().depth_options()
    secret = result_store.secret()
    assert len(secret) == 32 and twin(result_store).secret() == secret  # the same on every worker
    variants = [dict(base), {**base, "size": 384}, {**base, "square": "pad"}, {**base, "flip": True},
                {**base, "upsample": "guided"}, {**base, "guided_eps": 0.01}]
    ids = {depth_id(secret, b"a", v) for v in variants} | {depth_id(secret, b"b", base)}
    assert len(ids) == len(variants) + 1 and all(len(i) == 32 for i in ids)
    assert depth_id(secret, b"a", base) == depth_id(secret, b"a", dict(reversed(list(base.items()))))
    # without the secret, nobody can work out the id of a photo from the photo
    assert depth_id(b"another deployment", b"a", base) != depth_id(secret, b"a", base)


def test_files_are_lru_and_bounded_in_bytes_across_workers(tmp_path: Path) -> None:
    one = (tmp_path / "probe")
    FileStore(one, 10**9, 3600).put(entry("0" * 32))
    size = next((one / "results").glob("*" + SUFFIX)).stat().st_size
    a = FileStore(tmp_path / "data", max_bytes=3 * size, ttl_s=3600)
    b = FileStore(tmp_path / "data", max_bytes=3 * size, ttl_s=3600)
    for key, store in zip("abc", (a, b, a), strict=True):
        store.put(entry(key * 32))
        time.sleep(0.02)  # distinct mtimes
    assert b.get("a" * 32) is not None  # a is now the most recent, b the oldest
    time.sleep(0.02)
    a.put(entry("d" * 32))
    assert a.get("b" * 32) is None and all(b.get(k * 32) for k in "acd")
    stats = a.stats()
    assert stats["entries"] == 3 and stats["bytes"] == 3 * size <= stats["max_bytes"]


def test_an_entry_larger_than_the_budget_is_not_kept(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_bytes=100, ttl_s=3600)
    store.put(entry("a" * 32))
    assert store.get("a" * 32) is None and store.stats()["entries"] == 0


def test_files_under_concurrent_workers_stay_within_budget(tmp_path: Path) -> None:
    size = len(b"x") + entry("x").photo.nbytes * 2  # about one entry's file, a little less
    budget = 5 * size
    stores = [FileStore(tmp_path, budget, 3600) for _ in range(4)]

    def work(n: int) -> None:
        for i in range(40):
            stores[n].put(entry(f"{n}{i % 7}".ljust(32, "0")))
            stores[n].get(f"{n}{(i * 3) % 7}".ljust(32, "0"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0 < stores[0].stats()["bytes"] <= budget
    assert not list((tmp_path / "results").glob("*.tmp"))


def test_the_data_folder_is_private_and_its_files_too(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    store = FileStore(folder, 10**9, 3600)
    store.put(entry("a" * 32))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert len(store.secret()) == 32 and stat.S_IMODE((folder / "secret").stat().st_mode) == 0o600
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (folder / "results").iterdir())


def test_an_unwritable_data_folder_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable, match="Cannot write the data folder .*DEPTHMAP_DATA_DIR"):
        private_dir(blocker / "data")
    with pytest.raises(StoreUnavailable, match="Cannot write the data folder .*file"):
        private_dir(blocker)


def test_a_damaged_or_pickled_entry_is_absent_not_an_error(tmp_path: Path) -> None:
    store = FileStore(tmp_path, 10**9, 3600)
    e = entry("a" * 32)
    store.put(e)
    path = store.root / ("a" * 32 + SUFFIX)
    raw = path.read_bytes()
    # the depth array swapped for a pickled object array of the same length: refused, never unpickled
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    npy = buf.getvalue()
    start = raw.index(b"\x93NUMPY", raw.index(b"\x93NUMPY") + 1)  # the second array: depth
    path.write_bytes(raw[:start] + npy + raw[start + len(npy):])
    assert FileStore(tmp_path, 10**9, 3600).get(e.id) is None and not path.exists()
    store.put(e)
    path.write_bytes(b"junk")
    assert FileStore(tmp_path, 10**9, 3600).get(e.id) is None


def test_redis_down_is_store_unavailable_then_recovers(redis_server, redis_url) -> None:
    store = RedisStore(redis_url, 3600)
    store.put(entry("a" * 32))
    redis_server.stop()
    try:
        for call in (lambda: store.get("a" * 32), lambda: store.put(entry("b" * 32)),
                     lambda: store.delete("a" * 32), store.stats):
            with pytest.raises(StoreUnavailable, match="cannot be reached") as info:
                call()
            assert info.value.retry_after > 0
    finally:
        redis_server.start()
    store.put(entry("b" * 32))  # the same client object: it reconnects by itself
    assert store.get("b" * 32) is not None


def test_a_full_redis_is_store_unavailable(redis_url) -> None:
    store = RedisStore(redis_url, 3600)
    store.client.config_set("maxmemory-policy", "noeviction")
    store.client.config_set("maxmemory", "2mb")
    try:
        with pytest.raises(StoreUnavailable, match="is full"):
            for i in range(20):
                store.put(entry(f"{i}".ljust(32, "0"), side=300))
    finally:
        store.client.config_set("maxmemory", "512mb")
        store.client.config_set("maxmemory-policy", "volatile-lru")


def test_redis_keys_expire_in_redis_itself(redis_url) -> None:
    store = RedisStore(redis_url, 600)
    store.put(entry("a" * 32))
    ttl = store.client.ttl(RedisStore.PREFIX + "a" * 32)
    assert 590 <= ttl <= 600  # Redis drops it by itself, even if no worker ever asks again


def test_open_store_picks_the_backend(tmp_path: Path, redis_url) -> None:
    assert isinstance(open_store(None, str(tmp_path), 10**6, 60), FileStore)
    assert isinstance(open_store(redis_url, None, 10**6, 60), RedisStore)
    with pytest.raises(StoreUnavailable, match="redis://"):
        open_store("http://example.org", None, 10**6, 60)


def test_a_store_folder_removed_under_the_server_is_made_again(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "data", 10**9, 3600)
    store.put(entry("a" * 32))
    shutil.rmtree(tmp_path / "data")  # what a cleaner of /tmp or /dev/shm does
    assert store.get("a" * 32) is None
    store.put(entry("b" * 32))
    assert twin(store).get("b" * 32) is not None
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
