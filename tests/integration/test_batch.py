"""Batch: several photos in one request, each with its own result or error, as JSON or a zip; the zip
of earlier results by id."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from support.forms import form_data
from support.servers import running_server


def test_batch_answers_one_result_per_photo_and_one_bad_photo_fails_alone(client, samples) -> None:
    photos = [(samples["rocket"], "rocket.jpg"), (b"not a photo", "notes.jpg"),
              (samples["coffee"], "coffee.png"), (samples["chelsea"], "chelsea.png")]
    r = client.post("/api/v1/batch", **form_data({"image": photos, "colormap": "viridis"}))
    assert r.status_code == 200
    results = r.json["results"]
    assert [x["name"] for x in results] == ["rocket.jpg", "notes.jpg", "coffee.png", "chelsea.png"]
    assert results[1]["error"] == "not_image" and "depth_id" not in results[1]
    good = [results[0], results[2], results[3]]
    for x, (data, _) in zip(good, [photos[0], photos[2], photos[3]], strict=True):
        with Image.open(io.BytesIO(data)) as im:
            assert (x["width"], x["height"]) == im.size
        assert client.get(f"/api/v1/depth/{x['depth_id']}.npy").status_code == 200  # cached like one upload
    assert r.json["options"]["colormap"] == "viridis"


def test_batch_as_zip_has_a_folder_per_photo(client, samples) -> None:
    photos = [(samples["rocket"], "same.jpg"), (samples["coffee"], "same.png"), (samples["chelsea"], "c.png")]
    r = client.post("/api/v1/batch", headers={"Accept": "application/zip"},
                    **form_data({"image": photos, "views": "heatmap,gray"}))
    assert r.status_code == 200 and r.mimetype == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.data))
    names = set(zf.namelist())
    # two uploads with the same stem get their own folders
    for folder in ("same", "same-2", "c"):
        assert {f"{folder}/heatmap.png", f"{folder}/gray.png", f"{folder}/depth.npy",
                f"{folder}/depth16.png"} <= names
        assert f"{folder}/overlay.png" not in names
    report = json.loads(zf.read("results.json"))["results"]
    assert [x["folder"] for x in report] == ["same", "same-2", "c"]
    depth = np.load(io.BytesIO(zf.read("c/depth.npy")))
    with Image.open(io.BytesIO(zf.read("c/heatmap.png"))) as im:
        assert im.size == (depth.shape[1], depth.shape[0])


def test_zip_of_earlier_results_by_id(client, samples) -> None:
    ids = [client.post("/api/v1/depth", **form_data({"image": (samples[n], f"{n}.png"), "views": "none"}))
           .json["depth_id"] for n in ("rocket", "coffee")]
    r = client.get("/api/v1/batch.zip", query_string=[("depth_id", ids[0]), ("depth_id", ids[1]),
                                                       ("colormap", "jet")])
    assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.data))
    info = json.loads(zf.read("results.json"))
    assert [x["depth_id"] for x in info["results"]] == ids and info["options"]["colormap"] == "jet"


@pytest.mark.parametrize("fields, status, code", [
    ({}, 400, "missing_file"),
    ({"image": [(b"x", f"{i}.jpg") for i in range(21)]}, 413, "too_many_files"),
    ({"image": (b"x", "a.jpg"), "colormap": "rainbow"}, 422, "bad_option"),
])
def test_bad_batches_get_a_clear_4xx(client, fields, status, code) -> None:
    r = client.post("/api/v1/batch", **form_data({"views": "none", **fields}))
    assert r.status_code == status and r.json["error"] == code


@pytest.mark.parametrize("query, status, code", [
    ("", 400, "missing_depth_id"),
    ("depth_id=0123456789abcdef0123456789abcdef", 404, "not_cached"),
])
def test_bad_batch_zip_requests(client, query, status, code) -> None:
    r = client.get(f"/api/v1/batch.zip?{query}")
    assert r.status_code == status and r.json["error"] == code


def test_batch_that_is_not_multipart_is_a_415(client) -> None:
    assert client.post("/api/v1/batch", json={"image": "x"}).json["error"] == "unsupported_type"


def upload_id(client, data: bytes, name: str) -> str:
    r = client.post("/api/v1/depth", **form_data({"image": (data, name), "views": "none"}))
    assert r.status_code == 200, r.json
    return r.json["depth_id"]


def test_batch_zip_counts_a_repeated_id_once(client, samples) -> None:
    rocket = upload_id(client, samples["rocket"], "rocket.jpg")
    coffee = upload_id(client, samples["coffee"], "c.png")
    r = client.get("/api/v1/batch.zip", query_string=[("depth_id", rocket)] * 20 + [("depth_id", coffee),
                                                                                       ("depth_id", rocket)])
    assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.data))
    assert [x["depth_id"] for x in json.loads(zf.read("results.json"))["results"]] == [rocket, coffee]
    assert sorted({name.split("/")[0] for name in zf.namelist()}) == ["c", "results.json", "rocket"]
    # more distinct ids than a batch takes: refused before anything is read
    many = [("depth_id", f"{i:032x}") for i in range(21)]
    r = client.get("/api/v1/batch.zip", query_string=many)
    assert r.status_code == 413 and r.json["error"] == "too_many_files"


def test_batch_zip_past_the_pixel_budget_is_a_413(app, client, samples, monkeypatch) -> None:
    ids = [upload_id(client, samples[n], f"{n}.png") for n in ("rocket", "coffee")]
    sizes = [Image.open(io.BytesIO(samples[n])).size for n in ("rocket", "coffee")]
    both = sum(w * h for w, h in sizes)
    monkeypatch.setitem(app.config, "BATCH_MAX_PIXELS", both - 1)
    r = client.get("/api/v1/batch.zip", query_string=[("depth_id", i) for i in ids])
    assert r.status_code == 413 and r.json["error"] == "too_large"
    assert "DEPTHMAP_BATCH_MAX_PIXELS" in r.json["message"]
    monkeypatch.setitem(app.config, "BATCH_MAX_PIXELS", both)  # exactly the budget: served
    assert client.get("/api/v1/batch.zip", query_string=[("depth_id", i) for i in ids]).status_code == 200


@pytest.mark.parametrize("accept", ["application/json", "application/zip"])
def test_batch_photos_past_the_pixel_budget_get_their_own_error(app, client, samples, monkeypatch,
                                                                   accept) -> None:
    names = ("rocket", "coffee", "chelsea")
    pixels = [np.prod(Image.open(io.BytesIO(samples[n])).size) for n in names]
    # room for the first and the third, not the second as well
    monkeypatch.setitem(app.config, "BATCH_MAX_PIXELS", int(pixels[0] + max(pixels[1] - 1, pixels[2])))
    assert pixels[0] + pixels[1] > pixels[0] + max(pixels[1] - 1, pixels[2]) >= pixels[0] + pixels[2]
    r = client.post("/api/v1/batch", headers={"Accept": accept},
                    **form_data({"image": [(samples[n], f"{n}.png") for n in names], "views": "gray"}))
    assert r.status_code == 200
    rows = (json.loads(zipfile.ZipFile(io.BytesIO(r.data)).read("results.json")) if accept.endswith("zip")
            else r.json)["results"]
    assert [row.get("error") for row in rows] == [None, "too_large", None]
    assert "DEPTHMAP_BATCH_MAX_PIXELS" in rows[1]["message"] and "depth_id" not in rows[1]
    assert all(rows[i]["depth_id"] for i in (0, 2))


# the real server ----------------------------------------------------------------------------------------

def noise_png(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def rss_mb(pid: int, key: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+)", status, re.M).group(1)) / 1024


@pytest.fixture(scope="module")
def server(weights_path, tmp_path_factory):
    """``depthmap serve``, one worker, a result store with room for twenty 1 MP noise photos, and them:
    their ids and the owner token each upload answered (if this server gives them)."""
    log = tmp_path_factory.mktemp("batch-server") / "server.log"
    with running_server(weights_path, log, "--workers", "1",
                        env={"DEPTHMAP_CACHE_BYTES": str(1 << 30)}) as (url, _):
        made = []
        for seed in range(20):
            r = requests.post(url + "/api/v1/depth", files={"image": (f"n{seed}.png", noise_png(1000, seed))},
                              data={"views": "none"}, timeout=120)
            assert r.status_code == 200, r.text
            made.append((r.json()["depth_id"], r.json().get("owner_token")))
        yield url, made, log


def test_batch_zip_is_sent_while_it_is_made(server) -> None:
    url, made, log = server
    ids = [depth_id for depth_id, _ in made]
    last, token = made[-1]
    with requests.get(f"{url}/api/v1/batch.zip?" + "&".join(f"depth_id={i}" for i in ids), stream=True,
                      timeout=120) as r:
        assert r.status_code == 200 and r.headers.get("Transfer-Encoding") == "chunked"
        pieces = r.iter_content(1 << 16)
        head = next(pieces)
        # the zip has begun, and its last photo (of twenty, 9 MB each: more than the server and the sockets
        # keep of an answer not yet taken) has not been read yet, so deleting it now shows in the zip
        owner = {"X-Owner-Token": token} if token else {}
        gone = requests.delete(f"{url}/api/v1/depth/{last}", headers=owner, timeout=60)
        assert gone.status_code == 204, gone.text
        data = head + b"".join(pieces)
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    rows = json.loads(zf.read("results.json"))["results"]
    assert [row.get("folder") for row in rows] == [f"n{i}" for i in range(19)] + [None]
    assert rows[-1]["error"] == "not_cached" and rows[-1]["depth_id"] == last
    assert {name.split("/")[0] for name in zf.namelist()} == {f"n{i}" for i in range(19)} | {"results.json"}
    with Image.open(io.BytesIO(zf.read("n1/overlay.png"))) as im:
        assert im.size == (1000, 1000)
    if shutil.which("unzip"):  # another reader than Python's: Info-ZIP
        path = Path(log).parent / "batch.zip"
        path.write_bytes(data)
        assert subprocess.run(["unzip", "-tq", str(path)], capture_output=True).returncode == 0


def test_batch_zip_memory_is_one_photos_not_the_zips(server) -> None:
    url, made, _ = server
    live = [depth_id for depth_id, _ in made[:-1]]  # the last was deleted above
    pid = requests.get(url + "/healthz", timeout=30).json()["pid"]
    before = rss_mb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts over from here
    query = "&".join(f"depth_id={i}" for i in live)
    r = requests.get(f"{url}/api/v1/batch.zip?{query}&views=all", timeout=300)
    assert r.status_code == 200
    rows = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read("results.json"))["results"]
    assert all("folder" in row for row in rows) and len(rows) == len(live)
    rise = rss_mb(pid, "VmHWM") - before
    zip_mb = len(r.content) / 2**20
    # built whole, the zip was held twice over (its files, then the zip); streamed, one photo's files
    # (and what the server keeps of an answer the client has not taken yet)
    assert rise < zip_mb / 2, (rise, zip_mb)
