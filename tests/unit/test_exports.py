"""Exports and the legend through the API: every file is parsed back by an independent reader (Pillow,
numpy, plyfile, pygltflib, zipfile) and checked for size and value range; errors are 4xx."""

from __future__ import annotations

import io
import json
import threading
import zipfile

import av
import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData
from pygltflib import GLTF2

from app.imaging import exports
from app.imaging.legend import display_value, legend
from app.options import Options
from app.imaging.pipeline import enhance
from support.forms import form_data
from support.holds import hold


@pytest.fixture(scope="module")
def result(app, samples):
    """One upload of the rocket photo: its depth_id, size and raw depth."""
    client = app.test_client()
    body = form_data({"image": (samples["rocket"], "rocket.jpg"), "views": "none"})
    r = client.post("/api/v1/depth", **body)
    assert r.status_code == 200
    depth = np.load(io.BytesIO(client.get(f"/api/v1/depth/{r.json['depth_id']}.npy").data))
    return {"id": r.json["depth_id"], "width": r.json["width"], "height": r.json["height"], "depth": depth}


def test_16_bit_png_keeps_the_depth_to_one_part_in_65535(client, result) -> None:
    r = client.get(f"/api/v1/depth/{result['id']}.png")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert 'filename="rocket.depth16.png"' in r.headers["Content-Disposition"]
    with Image.open(io.BytesIO(r.data)) as im:
        assert im.mode in ("I;16", "I") and im.size == (result["width"], result["height"])
        levels = np.asarray(im, dtype=np.float64)
        lo, hi = float(im.text["depth_min"]), float(im.text["depth_max"])
    depth = result["depth"]
    assert levels.min() == 0 and levels.max() == 65535  # the whole 16-bit range is used
    assert lo == pytest.approx(depth.min()) and hi == pytest.approx(depth.max())
    back = lo + levels / 65535.0 * (hi - lo)
    assert np.abs(back - depth).max() <= (hi - lo) / 65535.0
    # near = bright: the largest inverse depth has the largest level
    assert levels.ravel()[depth.argmax()] == 65535


def test_pfm_is_the_raw_float32_depth(client, result) -> None:
    r = client.get(f"/api/v1/depth/{result['id']}.pfm")
    assert r.status_code == 200 and r.headers["Content-Disposition"].startswith("attachment")
    header, size, scale, payload = r.data.split(b"\n", 3)
    assert header == b"Pf" and size.split() == [str(result["width"]).encode(), str(result["height"]).encode()]
    assert float(scale) < 0  # little-endian
    assert len(payload) == result["width"] * result["height"] * 4
    # PFM rows run bottom to top
    arr = np.frombuffer(payload, "<f4").reshape(result["height"], result["width"])[::-1]
    np.testing.assert_array_equal(arr, result["depth"])
    np.testing.assert_array_equal(exports.read_pfm(r.data), result["depth"])


def test_point_cloud_ply_has_one_coloured_point_per_grid_pixel(client, result) -> None:
    r = client.get(f"/api/v1/depth/{result['id']}.ply?grid=64&depth_scale=2&fov=50")
    assert r.status_code == 200
    ply = PlyData.read(io.BytesIO(r.data))
    vertex = ply["vertex"]
    w, h = result["width"], result["height"]
    scale = 64 / max(w, h)
    assert vertex.count == round(w * scale) * round(h * scale)
    z = np.asarray(vertex["z"])
    # near plane at distance 1, far plane at 1 + depth_scale, the camera looking down -z
    assert z.max() <= -1.0 + 1e-5 and z.min() >= -3.0 - 1e-5
    assert z.max() == pytest.approx(-1.0, abs=1e-3) and z.min() == pytest.approx(-3.0, abs=1e-3)
    # the field of view: the widest row spans tan(25°) * z on each side at most
    x = np.asarray(vertex["x"])
    assert np.abs(x / -z).max() <= np.tan(np.radians(25)) + 1e-5
    colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
    assert colors.dtype == np.uint8 and colors.std() > 5  # the photo's colours, not one flat colour


def test_mesh_glb_is_valid_gltf_with_triangles_over_the_grid(client, result) -> None:
    r = client.get(f"/api/v1/depth/{result['id']}.glb?grid=96")
    assert r.status_code == 200 and r.mimetype == "model/gltf-binary"
    gltf = GLTF2.load_from_bytes(r.data)
    prim = gltf.meshes[0].primitives[0]
    blob = gltf.binary_blob()
    pos_acc = gltf.accessors[prim.attributes.POSITION]
    view = gltf.bufferViews[pos_acc.bufferView]
    positions = np.frombuffer(blob, "<f4", pos_acc.count * 3, view.byteOffset).reshape(-1, 3)
    w, h = result["width"], result["height"]
    assert pos_acc.count == round(w * 96 / max(w, h)) * round(h * 96 / max(w, h))
    np.testing.assert_allclose(positions.min(axis=0), pos_acc.min, rtol=1e-6)
    np.testing.assert_allclose(positions.max(axis=0), pos_acc.max, rtol=1e-6)
    assert -2.0 - 1e-5 <= positions[:, 2].min() and positions[:, 2].max() <= -1.0 + 1e-5  # default scale 1
    idx_acc = gltf.accessors[prim.indices]
    iview = gltf.bufferViews[idx_acc.bufferView]
    faces = np.frombuffer(blob, "<u4", idx_acc.count, iview.byteOffset)
    assert idx_acc.count % 3 == 0 and faces.max() < pos_acc.count
    cells = 2 * (round(w * 96 / max(w, h)) - 1) * (round(h * 96 / max(w, h)) - 1)
    assert 0.5 * cells <= idx_acc.count // 3 <= cells  # most cells kept; depth edges dropped
    col_acc = gltf.accessors[prim.attributes.COLOR_0]
    assert col_acc.count == pos_acc.count and col_acc.normalized and col_acc.componentType == 5123
    cview = gltf.bufferViews[col_acc.bufferView]
    rgba = np.frombuffer(blob, "<u2", col_acc.count * 4, cview.byteOffset).reshape(-1, 4)
    assert (rgba[:, 3] == 65535).all() and rgba[:, :3].std() > 500  # opaque, the photo's colours
    # linear light: sRGB mid-grey 128 is 21.6 % linear
    assert exports._SRGB_TO_LINEAR16[128] == round(0.2158605 * 65535)


def test_grid_triangles_leave_out_depth_edges() -> None:
    z = np.ones((3, 4), np.float32)
    z[:, 2:] = 2.0  # a step between columns 1 and 2
    faces = exports.grid_triangles(z)
    assert len(faces) == 2 * 2 * 2  # 2 rows of cells x 2 flat cells x 2 triangles; the step's cells dropped


def test_zip_has_everything_for_one_photo(client, result) -> None:
    r = client.get(f"/api/v1/depth/{result['id']}.zip?colormap=viridis&invert=on&grid=64")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.data))
    names = sorted(n.split("/", 1)[1] for n in zf.namelist())
    assert names == sorted(["photo.png", "heatmap.png", "overlay.png", "gray.png", "depth.npy", "depth.pfm",
                            "depth.exr", "depth16.png", "pointcloud.ply", "mesh.glb", "options.json",
                            "README.txt"])
    assert zf.testzip() is None
    read = {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}
    size = (result["width"], result["height"])
    for png in ("photo.png", "heatmap.png", "overlay.png", "gray.png", "depth16.png"):
        with Image.open(io.BytesIO(read[png])) as im:
            assert im.size == size, png
    np.testing.assert_array_equal(np.load(io.BytesIO(read["depth.npy"])), result["depth"])
    np.testing.assert_array_equal(exports.read_pfm(read["depth.pfm"]), result["depth"])
    with av.open(io.BytesIO(read["depth.exr"])) as container:
        np.testing.assert_array_equal(next(container.decode(video=0)).to_ndarray(), result["depth"])
    info = json.loads(read["options.json"])
    assert info["options"]["colormap"] == "viridis" and info["options"]["invert"] is True
    assert info["scene"]["grid"] == 64
    # the zip's heatmap is the one the page shows with the same options
    single = client.get(f"/api/v1/depth/{result['id']}/heatmap.png?colormap=viridis&invert=on")
    assert single.data == read["heatmap.png"]
    assert "not in metres" in read["README.txt"].decode()


@pytest.mark.parametrize("url, code", [
    ("/api/v1/depth/{id}.ply?depth_scale=0", "bad_option"),
    ("/api/v1/depth/{id}.ply?fov=200", "bad_option"),
    ("/api/v1/depth/{id}.glb?grid=abc", "bad_option"),
    ("/api/v1/depth/{id}.glb?fov=nan", "bad_option"),
    ("/api/v1/depth/{id}.zip?colormap=rainbow", "bad_option"),
    ("/api/v1/depth/{id}.zip?size=512", "bad_option"),
    ("/api/v1/depth/{id}.zip?bogus=1", "bad_option"),
    ("/api/v1/depth/{id}/legend.json?view=photo", "bad_option"),
    ("/api/v1/depth/0123456789abcdef0123456789abcdef.pfm", "not_cached"),
    ("/api/v1/depth/0123456789abcdef0123456789abcdef.zip", "not_cached"),
    ("/api/v1/depth/not-an-id.png", "not_cached"),
])
def test_bad_export_requests_get_a_clear_4xx(client, result, url, code) -> None:
    r = client.get(url.format(id=result["id"]))
    assert 400 <= r.status_code < 500 and r.json["error"] == code


# the legend --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opts", [
    Options(), Options(invert=True), Options(log=True), Options(clip=0.0),
    Options(log=True, invert=True, clip=5.0), Options(contrast=2.5, brightness=0.2),
])
def test_legend_maps_values_exactly_as_the_image_does(result, opts) -> None:
    depth = result["depth"]
    shown = enhance(depth, opts)
    rng = np.random.default_rng(0)
    pick = rng.integers(0, depth.size, 2000)
    mapped = display_value(depth.ravel()[pick], depth, opts)
    np.testing.assert_allclose(mapped, shown.ravel()[pick], atol=1e-5)


def test_legend_ends_and_ticks_follow_invert_log_and_clahe(client, result) -> None:
    depth = result["depth"]
    plain = legend(depth, Options())
    assert plain["near"] == "right" and len(plain["stops"]) == 33 and len(plain["ticks"]) == 5
    values = [t["value"] for t in plain["ticks"]]
    assert values == sorted(values)
    assert [t["pos"] for t in plain["ticks"]] == pytest.approx([0, .25, .5, .75, 1])
    assert plain["saturated"] == ["far", "near"]  # 1 % clipped at each end
    inverted = legend(depth, Options(invert=True))
    assert inverted["near"] == "left" and inverted["ticks"][-1]["pos"] == 0.0
    logged = legend(depth, Options(log=True))
    # evenly spaced values sit unevenly on a log bar: the middle tick is right of the middle
    assert logged["ticks"][2]["pos"] > 0.5 + 0.01
    local = legend(depth, Options(clahe=True))
    assert local["local"] is True and local["ticks"] == []
    r = client.get(f"/api/v1/depth/{result['id']}/legend.json?view=gray&invert=on&colormap=jet")
    assert r.status_code == 200 and r.json["colormap"] == "gray" and r.json["stops"][0] == "#000000"
    assert r.json["near"] == "left"
    assert "not metres" in r.json["unit"]


@pytest.mark.parametrize("opts", [Options(clip=0.0), Options(), Options(log=True, clip=0.0)])
def test_legend_ticks_span_what_the_colours_span_when_the_depth_has_nan(opts) -> None:
    """NaN and inf pixels are drawn as the image's normalize replaces them, so the ticks use the same
    window: without log the first tick is the farthest finite depth (it was 0), and every tick lands
    where the image puts a pixel of its value."""
    rng = np.random.default_rng(5)
    depth = (rng.random((60, 80)) * 3 + 2).astype(np.float32)  # 2..5, far from 0
    depth[:10] = np.nan
    depth[10, :5] = np.inf
    ticks = legend(depth, opts)["ticks"]
    finite = depth[np.isfinite(depth)]
    if not opts.log:
        assert ticks[0]["value"] > 1.9
    if opts.clip == 0.0 and not opts.log:
        assert ticks[0]["value"] == pytest.approx(float(finite.min()), rel=1e-5)
        assert ticks[-1]["value"] == pytest.approx(float(finite.max()), rel=1e-5)
    shown = enhance(depth, opts).ravel()
    values = np.where(np.isfinite(depth), depth, np.inf).ravel()
    for tick in ticks:  # the pixel nearest each tick's value sits at the tick's place on the bar
        i = int(np.argmin(np.abs(values - tick["value"])))
        if abs(values[i] - tick["value"]) < 0.01:
            assert abs(shown[i] - tick["pos"]) < 0.02


def test_exr_is_float32_depth_read_back_by_ffmpeg_with_the_range_in_its_header(tmp_path) -> None:
    """Written with OpenEXR's own library, read back with FFmpeg's independent EXR decoder (through
    PyAV) bit for bit; the header says the range and what the values are."""
    import OpenEXR

    rng = np.random.default_rng(3)
    depth = (rng.random((37, 53)) * 900 + 12.5).astype(np.float32)
    depth[0, 0] = np.nan  # NaN and inf are written as 0, as in the other exports
    path = tmp_path / "d.exr"
    path.write_bytes(exports.depth_exr(depth))
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "grayf32le"  # one float32 channel
        got = frame.to_ndarray()
    want = np.nan_to_num(depth, nan=0.0)
    assert got.shape == (37, 53) and np.array_equal(got, want)
    header = OpenEXR.File(str(path), header_only=True).header()
    assert (header["depth_min"], header["depth_max"]) == (0.0, float(want.max()))
    assert "relative inverse depth" in header["comments"]
    assert header["compression"] == OpenEXR.ZIP_COMPRESSION


@pytest.fixture(scope="module")
def one_slot_app(weights_path, tmp_path_factory):
    """The app with a gate of one slot and no queue, and a 4.4 MP photo's result in its store."""
    from app import create_app

    made = create_app({"TESTING": True, "MIDAS_WEIGHTS": str(weights_path), "TORCH_THREADS": 2,
                       "DATA_DIR": str(tmp_path_factory.mktemp("data")), "INFERENCE_QUEUE": 0})
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (2100, 2100, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
    r = made.test_client().post("/api/v1/depth", **form_data({"image": (buf.getvalue(), "big.jpg"),
                                                              "views": "none"}))
    assert r.status_code == 200, r.json
    return made, r.json["depth_id"]


def test_full_size_files_of_a_large_photo_wait_in_the_gate_and_previews_do_not(one_slot_app) -> None:
    studio, depth_id = one_slot_app
    client, base = studio.test_client(), f"/api/v1/depth/{depth_id}"
    full = [f"{base}/overlay.png", f"{base}/photo.png", f"{base}.png", f"{base}.exr", f"{base}/stereo.png",
            f"{base}/normals.png?normal_smooth=3", f"{base}.glb?grid=2048", f"{base}.zip",
            f"/api/v1/batch.zip?depth_id={depth_id}"]
    small = [f"{base}/overlay.png?max_side=1600", f"{base}/stereo.png?max_side=800",
             f"{base}/normals.png?max_side=800", f"{base}.npy", f"{base}.pfm", f"{base}.glb?grid=512",
             f"{base}/legend.json"]
    release, entered = threading.Event(), threading.Event()
    holder = hold(studio.extensions["depth_service"].gate, release, entered)  # an inference running
    try:
        for path in full:
            r = client.get(path)
            assert r.status_code == 503 and r.json["error"] == "busy", path  # refused before any byte
            assert int(r.headers["Retry-After"]) >= 1
        for path in small:
            assert client.get(path).status_code == 200, path
    finally:
        release.set()
        holder.join(5)
    for path in full:
        r = client.get(path)
        assert r.status_code == 200 and len(r.data) > 1000, path


def test_a_file_a_full_gate_keeps_out_of_a_begun_zip_is_named(one_slot_app, monkeypatch) -> None:
    import app.serving.service

    monkeypatch.setattr(app.serving.service, "PATIENCE_S", 1.5)
    studio, depth_id = one_slot_app
    r = studio.test_client().get(f"/api/v1/depth/{depth_id}.zip", buffered=False)
    assert r.status_code == 200  # its first file, the photo, is made: the zip has begun
    release, entered = threading.Event(), threading.Event()
    holder = hold(studio.extensions["depth_service"].gate, release, entered)  # a long inference from now
    try:
        data = r.get_data()
    finally:
        release.set()
        holder.join(5)
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    left_out = json.loads(zf.read("big/options.json"))["left_out"]
    assert left_out == ["heatmap.png", "overlay.png", "gray.png", "depth.exr", "depth16.png"]
    names = {n.split("/", 1)[1] for n in zf.namelist()}
    assert {"photo.png", "depth.npy", "depth.pfm", "pointcloud.ply", "mesh.glb"} <= names
    assert not names & set(left_out)
