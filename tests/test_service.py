"""The result cache and the request service behind the page and the API."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.cache import DepthCache, Entry, depth_id
from app.options import Options
from app.service import DepthService, safe_stem


def entry(key: str, side: int = 10, data: bytes = b"x") -> Entry:
    return Entry(key, data, "photo", Options().depth_options(), np.zeros((side, side, 3), np.uint8),
                 np.zeros((side, side), np.float32), np.zeros((4, 4), np.float32))


def test_depth_id_depends_on_bytes_and_depth_options() -> None:
    base = Options().depth_options()
    variants = [dict(base), {**base, "size": 384}, {**base, "square": "pad"}, {**base, "flip": True},
                {**base, "upsample": "guided"}, {**base, "guided_eps": 0.01}]
    ids = {depth_id(b"a", v) for v in variants} | {depth_id(b"b", base)}
    assert len(ids) == len(variants) + 1 and all(len(i) == 32 for i in ids)
    assert depth_id(b"a", base) == depth_id(b"a", dict(reversed(list(base.items()))))


def test_cache_is_lru_and_bounded_in_bytes() -> None:
    one = entry("a").nbytes
    cache = DepthCache(max_bytes=3 * one)
    for key in "abc":
        cache.put(entry(key))
    assert cache.get("a") is not None  # a is now the most recent, b the oldest
    cache.put(entry("d"))
    assert cache.get("b") is None and {k for k in "acd" if cache.get(k)} == set("acd")
    assert len(cache) == 3 and cache.nbytes == 3 * one


def test_entry_larger_than_the_budget_is_not_kept() -> None:
    cache = DepthCache(max_bytes=100)
    cache.put(entry("big"))
    assert cache.get("big") is None and cache.nbytes == 0


def test_replacing_an_entry_keeps_the_byte_count_right() -> None:
    cache = DepthCache(max_bytes=10**6)
    cache.put(entry("a", side=10))
    cache.put(entry("a", side=20))
    assert len(cache) == 1 and cache.nbytes == entry("a", side=20).nbytes


def test_cached_arrays_are_read_only() -> None:
    cache = DepthCache(max_bytes=10**6)
    cache.put(entry("a"))
    with pytest.raises(ValueError):
        cache.get("a").depth[0, 0] = 1.0


def test_cache_under_concurrent_use_stays_within_budget() -> None:
    one = entry("x").nbytes
    cache = DepthCache(max_bytes=5 * one)

    def work(offset: int) -> None:
        for i in range(200):
            cache.put(entry(f"{offset}-{i % 17}"))
            cache.get(f"{offset}-{(i * 7) % 17}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 5 and cache.nbytes == 5 * one


@pytest.mark.parametrize("filename, stem", [
    ("cat.jpg", "cat"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\holiday photo.png", "holiday_photo"),
    ("照片 1.jpeg", "照片_1"),
    ("a\x00b\r\nc.png", "a_b_c"),
    ("", "photo"),
    (None, "photo"),
    ("...", "photo"),
    ("x" * 300 + ".png", "x" * 64),
])
def test_safe_stem(filename, stem) -> None:
    assert safe_stem(filename) == stem


def test_repeated_upload_is_not_inferred_again(model, samples) -> None:
    calls = []

    def counting(x):
        calls.append(x.shape)
        return model(x)

    service = DepthService(counting, DepthCache(10**9))
    first = service.from_upload(samples["chelsea"], "chelsea", Options())
    again = service.from_upload(samples["chelsea"], "cat", Options(colormap="jet"))
    assert not first.cached and again.cached and len(calls) == 1
    assert again.entry.id == first.entry.id and again.entry.name == "cat"
    assert again.timings_ms["infer"] == 0.0


def test_new_size_reinfers_the_cached_upload(model, samples) -> None:
    service = DepthService(model, DepthCache(10**9))
    first = service.from_upload(samples["rocket"], "rocket", Options()).entry
    same = service.for_options(first, Options(colormap="jet"))
    bigger = service.for_options(first, Options(size=384, square="pad"))
    assert same.entry is first and same.cached
    assert not bigger.cached and bigger.entry.id != first.id and bigger.entry.name == "rocket"
    assert (bigger.entry.depth_opts["size"], bigger.entry.depth_opts["square"]) == (384, "pad")
    assert bigger.entry.depth.shape == first.depth.shape


def test_new_upsampling_reuses_the_network_output(model, samples) -> None:
    calls = []
    service = DepthService(lambda x: calls.append(1) or model(x), DepthCache(10**9))
    first = service.from_upload(samples["coffee"], "coffee", Options()).entry
    guided = service.for_options(first, Options(upsample="guided", colormap="jet"))
    assert len(calls) == 1 and not guided.cached and guided.entry.id != first.id
    assert guided.timings_ms["infer"] == 0.0 and guided.timings_ms["upsample"] > 0
    assert np.array_equal(guided.entry.pred, first.pred)
    assert not np.array_equal(guided.entry.depth, first.depth)
    again = service.for_options(first, Options(upsample="guided"))
    assert again.cached and again.entry.id == guided.entry.id and len(calls) == 1
    flipped = service.for_options(first, Options(flip=True))
    assert len(calls) == 3 and not flipped.cached  # flip: two new passes of the network


def test_render_gives_the_asked_views_as_png(model, samples) -> None:
    service = DepthService(model, DepthCache(10**9))
    e = service.from_upload(samples["coffee"], "coffee", Options()).entry
    pngs, timings = service.render(e, Options(), ("gray", "overlay"))
    assert list(pngs) == ["gray", "overlay"] and all(p.startswith(b"\x89PNG") for p in pngs.values())
    assert set(timings) == {"render", "encode"}
    assert service.render(e, Options(), ())[0] == {}
    npy = service.depth_npy(e)
    assert npy.startswith(b"\x93NUMPY")


def test_previews_are_shrunk_once_for_all_views_of_a_page(model, samples, monkeypatch) -> None:
    import app.service as service_module

    calls = []
    real = service_module.shrink
    monkeypatch.setattr(service_module, "shrink", lambda a, side: calls.append(a.ndim) or real(a, side))
    service = DepthService(model, DepthCache(10**9))
    e = service.from_upload(samples["rocket"], "rocket", Options()).entry  # 640 x 427
    for view in ("heatmap", "overlay", "gray"):
        png = service.render(e, Options(colormap="jet"), (view,), max_side=320)[0][view]
        assert png.startswith(b"\x89PNG")
    service.photo_png(e, 320)
    assert sorted(calls) == [2, 3]  # the depth and the photo, once each
    photo, depth = service.preview(e, 1600)
    assert photo is e.photo and depth is e.depth  # never enlarged: the cached arrays themselves
