"""The request service behind the page and the API (the result store it uses: test_store.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import app.serving.service as service_module
from app.serving.gate import Busy, Gate
from app.options import Options
from app.serving.service import GATED_PIXELS, DepthService, safe_stem
from support.holds import hold


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


def test_repeated_upload_is_not_inferred_again(model, file_store, samples) -> None:
    calls = []

    def counting(x):
        calls.append(x.shape)
        return model(x)

    service = DepthService({"midas-small": counting}, file_store)
    first = service.from_upload(samples["chelsea"], "chelsea", Options())
    again = service.from_upload(samples["chelsea"], "cat", Options(colormap="jet"), first.token)
    assert not first.cached and again.cached and len(calls) == 1
    assert again.entry.id == first.entry.id and again.entry.name == "cat"
    assert again.timings_ms["infer"] == 0.0 and again.token == first.token


def test_someone_elses_upload_of_the_same_bytes_is_theirs_alone(model, file_store, samples) -> None:
    calls = []
    service = DepthService({"midas-small": lambda x: calls.append(1) or model(x)}, file_store)
    first = service.from_upload(samples["chelsea"], "alice", Options())
    other = service.from_upload(samples["chelsea"], "bob", Options())
    guess = service.from_upload(samples["chelsea"], "eve", Options(), "0" * 32)  # a token never given
    assert len(calls) == 3 and not other.cached and not guess.cached
    assert len({first.entry.id, other.entry.id, guess.entry.id}) == 3
    assert len({first.token, other.token, guess.token, "0" * 32}) == 4
    assert file_store.get(first.entry.id).name == "alice"
    assert service.owns(first.entry, first.token) and not service.owns(first.entry, other.token)
    # a result re-rendered from the first (by anyone who has its id) is still its uploader's
    bigger = service.for_options(other.entry, Options(size=384))
    assert service.owns(bigger.entry, other.token) and not service.owns(bigger.entry, first.token)
    assert bigger.token is None


def test_new_size_reinfers_the_cached_upload(model, file_store, samples) -> None:
    service = DepthService({"midas-small": model}, file_store)
    first = service.from_upload(samples["rocket"], "rocket", Options()).entry
    same = service.for_options(first, Options(colormap="jet"))
    bigger = service.for_options(first, Options(size=384, square="pad"))
    assert same.entry is first and same.cached
    assert not bigger.cached and bigger.entry.id != first.id and bigger.entry.name == "rocket"
    assert (bigger.entry.depth_opts["size"], bigger.entry.depth_opts["square"]) == (384, "pad")
    assert bigger.entry.depth.shape == first.depth.shape


def test_new_upsampling_reuses_the_network_output(model, file_store, samples) -> None:
    calls = []
    service = DepthService({"midas-small": lambda x: calls.append(1) or model(x)}, file_store)
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


def test_render_gives_the_asked_views_as_png(model, file_store, samples) -> None:
    service = DepthService({"midas-small": model}, file_store)
    e = service.from_upload(samples["coffee"], "coffee", Options()).entry
    pngs, timings = service.render(e, Options(), ("gray", "overlay"))
    assert list(pngs) == ["gray", "overlay"] and all(p.startswith(b"\x89PNG") for p in pngs.values())
    assert set(timings) == {"render", "encode"}
    assert service.render(e, Options(), ())[0] == {}
    npy = service.depth_npy(e)
    assert npy.startswith(b"\x93NUMPY")


def test_previews_are_shrunk_once_for_all_views_of_a_page(model, file_store, samples, monkeypatch) -> None:
    import app.serving.service as service_module

    calls = []
    real = service_module.shrink
    monkeypatch.setattr(service_module, "shrink", lambda a, side: calls.append(a.ndim) or real(a, side))
    service = DepthService({"midas-small": model}, file_store)
    e = service.from_upload(samples["rocket"], "rocket", Options()).entry  # 640 x 427
    for view in ("heatmap", "overlay", "gray"):
        png = service.render(e, Options(colormap="jet"), (view,), max_side=320)[0][view]
        assert png.startswith(b"\x89PNG")
    service.photo_image(e, 320)
    assert sorted(calls) == [2, 3]  # the depth and the photo, once each
    photo, depth = service.preview(e, 1600)
    assert photo is e.photo and depth is e.depth  # never enlarged: the cached arrays themselves



# a fresh process, so that no earlier test's freed memory lies in the heap for the blocks to reuse
FREED_BLOCK = """
import os, sys
import numpy as np
if sys.argv[1] == "mapped":
    from app.depth.model import map_large_blocks
    map_large_blocks()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
big = np.ones(20 << 20, np.uint8)  # freed: glibc's default then serves blocks up to 20 MB from the heap
del big
# two blocks of the size of a 12 MP photo's display levels; the first, freed, lies under the second
first = np.ones(12 << 20, np.uint8)
second = np.ones(12 << 20, np.uint8)
before = rss()
del first
print(before - rss())
"""


@pytest.mark.parametrize("policy, given_back", [("default", False), ("mapped", True)])
def test_a_large_freed_array_goes_back_to_the_system(policy, given_back) -> None:
    out = subprocess.run([sys.executable, "-c", FREED_BLOCK, policy], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2])
    assert (float(out.stdout) > 10) == given_back, out.stdout


def gated_service(model, file_store) -> DepthService:
    """A service whose gate has one slot and no queue: a second job is refused at once."""
    return DepthService({"midas-small": model}, file_store, gate=Gate(slots=1, queue=0, timeout=5))


def test_only_large_work_takes_a_gate_slot(model, file_store) -> None:
    service = gated_service(model, file_store)
    release, entered = threading.Event(), threading.Event()
    holder = hold(service.gate, release, entered)
    with service.slot(GATED_PIXELS):  # a preview's work does not wait in the line, full as it is
        pass
    with pytest.raises(Busy):
        with service.slot(GATED_PIXELS + 1):
            pass
    release.set()
    holder.join(5)
    with service.slot(GATED_PIXELS + 1):
        assert service.gate.stats()["busy"] == 1
    assert service.gate.stats()["busy"] == 0


def test_a_patient_slot_waits_out_a_full_line_for_a_while(model, file_store, monkeypatch) -> None:
    service = gated_service(model, file_store)
    release, entered = threading.Event(), threading.Event()
    holder = hold(service.gate, release, entered)
    threading.Timer(1.0, release.set).start()
    t0 = time.monotonic()
    with service.patient_slot():  # refused at first, it tries again after Retry-After
        assert time.monotonic() - t0 >= 0.9 and service.gate.stats()["busy"] == 1
    holder.join(5)
    with pytest.raises(ValueError):  # the body's own error is not a refusal: raised, the slot given back
        with service.patient_slot():
            raise ValueError("the work failed")
    assert service.gate.stats()["busy"] == 0
    # a line that never frees up: refused once the patience is spent
    monkeypatch.setattr(service_module, "PATIENCE_S", 1.5)
    release, entered = threading.Event(), threading.Event()
    holder = hold(service.gate, release, entered)
    t0 = time.monotonic()
    with pytest.raises(Busy):
        with service.patient_slot():
            pass
    assert time.monotonic() - t0 < 5
    release.set()
    holder.join(5)
