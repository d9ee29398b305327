"""Stored results are untrusted too: an entry planted or damaged in the result store (a file in the data
folder, a hash in Redis) reads as "not cached" (404) on a real `depthmap serve` of each backend, never a
500 and never a read outside the store's folder; and an id that is not one never becomes a path."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple

import numpy as np
import pytest
import requests

from app.options import Options
from app.serving.store import MAGIC, Entry, FileStore
from support.samples import SAMPLES
from support.servers import running_server

Meta = Dict[str, object]


def swap_arrays(meta: Meta) -> Meta:
    """The file's parts named the other way round: the depth gets the network output's bytes."""
    names = {"depth": "pred", "pred": "depth"}
    return {**meta, "parts": [[names.get(n, n), size] for n, size in meta["parts"]]}


TAMPERED: Dict[str, Callable[[Meta], Meta]] = {
    "foreign_id": lambda meta: {**meta, "id": "0" * 32},
    "path_as_name": lambda meta: {**meta, "name": "../../etc/passwd\r\nX-Evil: 1"},
    "unknown_options": lambda meta: {**meta, "depth_opts": {"size": [256]}},
    "bad_pad_box": lambda meta: {**meta, "pad_box": ["a", None]},
    "swapped_arrays": swap_arrays,
}
IDS = {name: f"{n:x}" * 32 for n, name in enumerate([*TAMPERED, "junk", "link"], start=1)}


def read_file_entry(path: Path) -> Tuple[Meta, bytes]:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[len(MAGIC):len(MAGIC) + 8])
    start = len(MAGIC) + 8
    return json.loads(raw[start:start + size]), raw[start + size:]


def write_file_entry(path: Path, meta: Meta, rest: bytes) -> None:
    head = json.dumps(meta).encode()
    path.write_bytes(MAGIC + struct.pack("<Q", len(head)) + head + rest)


def plant_files(data: Path, real: str, outside: Path) -> None:
    results = data / "results"
    meta, rest = read_file_entry(results / f"{real}.result")
    for name, change in TAMPERED.items():
        write_file_entry(results / f"{IDS[name]}.result", change({**meta, "id": IDS[name]}), rest)
    (results / f"{IDS['junk']}.result").write_bytes(MAGIC + struct.pack("<Q", 10**9) + b"{")
    # a whole, valid entry, but outside the folder: a link to it must not be followed (nor touched)
    write_file_entry(outside, {**meta, "id": IDS["link"]}, rest)
    os.utime(outside, (1_000_000_000, 1_000_000_000))
    (results / f"{IDS['link']}.result").symlink_to(outside)


def plant_redis(redis_url: str, real: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    fields = client.hgetall(f"depthmap:result:{real}")
    meta = json.loads(fields[b"meta"])
    for name, change in TAMPERED.items():
        planted = dict(fields)
        if name == "swapped_arrays":  # a hash has a field per array: swapped by their names
            planted[b"depth"], planted[b"pred"] = fields[b"pred"], fields[b"depth"]
            change = dict  # noqa: PLW2901 - the meta stays as it is
        planted[b"meta"] = json.dumps(change({**meta, "id": IDS[name]})).encode()
        client.hset(f"depthmap:result:{IDS[name]}", mapping=planted)
    client.hset(f"depthmap:result:{IDS['junk']}", mapping={**fields, b"meta": b"\xff{not json"})
    client.close()


@pytest.fixture(params=["files", "redis"])
def studio(request, weights_path, tmp_path) -> Iterator[Tuple[str, str, Path]]:
    """A real server on each store backend with one real result in it: (URL, backend, data folder)."""
    env = {"DEPTHMAP_DATA_DIR": str(tmp_path / "data"), "DEPTHMAP_ENGINE": "eager"}
    if request.param == "redis":
        env["DEPTHMAP_REDIS_URL"] = request.getfixturevalue("redis_url")
    with running_server(weights_path, tmp_path / "server.log", "--workers", "1", env=env) as (url, _):
        yield url, env.get("DEPTHMAP_REDIS_URL", ""), tmp_path / "data"


def test_planted_entries_read_as_not_cached(studio, tmp_path) -> None:
    url, redis_url, data = studio
    photo = SAMPLES["chelsea"].read_bytes()
    made = requests.post(url + "/api/v1/depth", files={"image": ("cat.png", photo)}, data={"views": "gray"},
                         timeout=120)
    assert made.status_code == 200, made.text
    real = made.json()["depth_id"]
    outside = tmp_path / "outside.result"
    if redis_url:
        plant_redis(redis_url, real)
        planted = [IDS[n] for n in (*TAMPERED, "junk")]
    else:
        plant_files(data, real, outside)
        planted = list(IDS.values())
    for depth_id in planted:
        for r in (requests.get(f"{url}/api/v1/depth/{depth_id}.npy", timeout=30),
                  requests.get(f"{url}/api/v1/depth/{depth_id}.png", timeout=30),
                  requests.get(f"{url}/api/v1/depth/{depth_id}/heatmap.png", timeout=30),
                  requests.post(f"{url}/api/v1/render", json={"depth_id": depth_id}, timeout=30)):
            assert r.status_code == 404 and r.json()["error"] == "not_cached", (depth_id, r.text)
    if not redis_url:
        assert outside.stat().st_mtime == 1_000_000_000  # the link's target was neither read nor touched
    again = requests.get(f"{url}/api/v1/depth/{real}.npy", timeout=30)
    assert again.status_code == 200 and again.content.startswith(b"\x93NUMPY")


def test_an_id_that_is_not_one_never_becomes_a_path(result_store) -> None:
    key = "a" * 32
    result_store.put(Entry(key, b"x", "photo", Options().depth_options(), np.zeros((4, 5, 3), np.uint8),
                           np.zeros((4, 5), np.float32), np.zeros((2, 2), np.float32)))
    if isinstance(result_store, FileStore):  # the same entry where a path of an id would lead
        shutil.copy(result_store.root / f"{key}.result", result_store.root.parent / "x.result")
    for bad in ("../x", "../../x", "A" * 32, "a" * 31, "", f"{key}/..", key + "\n"):
        assert result_store.get(bad) is None and result_store.delete(bad) is False, bad
    if isinstance(result_store, FileStore):
        assert (result_store.root.parent / "x.result").is_file()
    assert result_store.get(key) is not None
