"""Each pipeline stage on its own, with the official implementation's arrays where there are some."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from app.options import COLORMAPS, Options
from app.depth.registry import network_size
from app.imaging.pipeline import (DECODE_STRIP, IMAGENET_MEAN, IMAGENET_STD, PNG_STRIP, ImageError, clahe,
                                  colorize, colormap_lut, decode, display, encode, encode_jpeg, encode_png,
                                  enhance, full_depth, infer, iter_views, log_depth, normalize,
                                  overlay, predict, preprocess, refine_edges, render_views, square_crop,
                                  to_uint8, upsample, view_format)
from support.images import pil_bytes, png_header_only
from support.samples import SAMPLES, reference


def gradient(w: int = 64, h: int = 48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8))


# decode -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF", "AVIF"])
def test_decode_formats(fmt: str) -> None:
    src = gradient()
    rgb = decode(pil_bytes(src, fmt))
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    tol = {"PNG": 0, "BMP": 0, "TIFF": 0}.get(fmt, 40)  # lossy or palettised formats
    assert np.abs(rgb.astype(int) - np.asarray(src)).mean() <= max(tol, 0.01) + (8 if tol else 0)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    rgb = decode(data)
    assert tuple(rgb[5, 10]) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 10))  # white square at the top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rgb = decode(pil_bytes(im, "JPEG", exif=exif, quality=95))
    assert rgb.shape == (40, 20, 3)
    assert rgb[2:8, 12:18].mean() > 200 and rgb[2:8, 2:8].mean() < 50  # now at the top-right


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_come_out_upright(fmt: str) -> None:
    """An iPhone HEIC or an AVIF taken with the phone on its side: upright, as for JPEG."""
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb = decode(pil_bytes(im, fmt, exif=exif.tobytes(), quality=95))
    assert rgb.shape == (40, 20, 3)
    assert rgb[2:8, 12:18].mean() > 200 and rgb[2:8, 2:8].mean() < 50


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_damaged_phone_formats_are_corrupt_not_unknown(fmt: str) -> None:
    data = pil_bytes(gradient(), fmt)
    with pytest.raises(ImageError) as err:
        decode(data[:40])
    assert err.value.code == "corrupt"


def test_corrupt_exif_is_ignored_not_fatal() -> None:
    data = pil_bytes(gradient(), "JPEG")
    # an APP1 "Exif" segment full of garbage right after SOI
    payload = b"Exif\0\0" + b"MM\0\x2a\0\0\0\x08\xff\xff" + b"\x00" * 20
    bad = data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    assert decode(bad).shape == (48, 64, 3)


def _mode_image(mode: str) -> Image.Image:
    if mode == "I;16":
        arr = np.array([[0, 32768, 65535]], dtype=np.uint16).repeat(4, 0)
        return Image.fromarray(arr)
    if mode == "P+transparency":
        im = Image.new("P", (3, 4), 0)
        im.putpalette([0, 0, 0] + [255, 0, 0] * 255)
        im.info["transparency"] = 0
        return im
    return gradient(3, 4).convert(mode)


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGBA", "PNG"),
                                      ("1", "PNG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"),
                                      ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"),
                                      ("P+transparency", "PNG"), ("YCbCr", "JPEG")])
def test_any_mode_becomes_rgb_uint8(mode: str, fmt: str) -> None:
    im = _mode_image(mode)
    kw = {"transparency": 0} if mode == "P+transparency" else {}
    rgb = decode(pil_bytes(im, fmt, **kw))
    assert rgb.shape == (4, 3, 3) and rgb.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    rgb = decode(pil_bytes(_mode_image("I;16"), "PNG"))
    assert list(rgb[0, :, 0]) == [0, 128, 255]


def test_sixteen_bit_rgb_png() -> None:
    import cv2

    bgr16 = np.zeros((2, 2, 3), np.uint16)
    bgr16[0, 0] = (0, 32768, 65535)  # B, G, R
    ok, buf = cv2.imencode(".png", bgr16)
    rgb = decode(buf.tobytes())
    assert rgb.dtype == np.uint8 and np.abs(rgb[0, 0].astype(int) - [255, 128, 0]).max() <= 1


def test_transparent_pixels_become_white() -> None:
    im = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    im.putpixel((1, 0), (10, 20, 30, 255))
    rgb = decode(pil_bytes(im, "PNG"))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [10, 20, 30]


PNG = pil_bytes(gradient(), "PNG")
JPEG = pil_bytes(gradient(), "JPEG")


@pytest.mark.parametrize("data,code", [
    (b"", "empty"),
    (b"hello, this is text renamed to .jpg\n", "not_image"),
    (b"<!doctype html><html><body>hi</body></html>", "not_image"),
    (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "not_image"),
    (b"PK\x03\x04" + b"\0" * 40, "not_image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", "not_image"),
    (PNG[: len(PNG) // 2], "corrupt"),
    (JPEG[: len(JPEG) // 2], "corrupt"),
    (png_header_only(50_000, 50_000), "too_large"),
    (png_header_only(7000, 7000), "too_large"),
], ids=["empty", "text", "html", "pdf", "zip", "svg", "truncated-png", "truncated-jpeg",
        "bomb-50000", "over-limit"])
def test_bad_files_are_clear_errors(data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as info:
        decode(data)
    assert info.value.code == code and info.value.message


def test_large_photo_is_downscaled_to_working_size() -> None:
    big = gradient(1000, 500)
    for fmt in ("PNG", "JPEG"):  # JPEG takes the draft (DCT-scaling) path
        rgb = decode(pil_bytes(big, fmt), max_side=256)
        assert rgb.shape == (128, 256, 3)


# preprocess ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_preprocess_reproduces_official_transform(samples, name: str) -> None:
    x, pad = preprocess(decode(samples[name]))
    ref = reference(name, "net_input")
    assert pad is None and x.shape == ref.shape and x.dtype == np.float32
    # float32 resize instead of the official float64: at most ~5e-5 apart on values of about +-2.5
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("hw,target,expected", [
    ((300, 451), 256, (160, 256)), ((512, 512), 256, (256, 256)), ((427, 640), 384, (256, 384)),
    ((400, 600), 512, (352, 512)), ((1, 1), 256, (256, 256)), ((50, 10000), 256, (32, 256)),
    ((10000, 50), 512, (512, 32)), ((190, 256), 256, (192, 256)),
])
def test_network_size_follows_official_rule(hw, target, expected) -> None:
    assert network_size(*hw, target) == expected


def one_shot_preprocess(rgb: np.ndarray, size: int, pad_square: bool) -> np.ndarray:
    """The official transform written plainly: the whole photo to float, padded, resized at once."""
    img = rgb.astype(np.float32) / 255.0
    if pad_square:
        h, w = img.shape[:2]
        side = max(h, w)
        square = np.empty((side, side, 3), np.float32)
        square[:] = IMAGENET_MEAN
        square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = img
        img = square
    nh, nw = network_size(img.shape[0], img.shape[1], size)
    img = (cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC) - IMAGENET_MEAN) / IMAGENET_STD
    return img.transpose(2, 0, 1)[None]


@pytest.mark.parametrize("hw", [(1000, 1500), (1500, 1000), (600, 37), (37, 600), (300, 300), (5, 7),
                                (257, 513)])
@pytest.mark.parametrize("pad_square", [False, True])
def test_preprocess_in_strips_equals_one_resize(hw, pad_square) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    x, _ = preprocess(rgb, 384, pad_square)
    ref = one_shot_preprocess(rgb, 384, pad_square)
    assert x.shape == ref.shape
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-5)


def test_preprocess_of_a_12mp_photo_stays_small() -> None:
    """The whole photo in float32 would be 144 MB; strips keep it to a few tens."""
    rgb = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        x, _ = preprocess(rgb, 256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert x.shape == (1, 3, 192, 256) and peak < 40e6


def test_square_crop_and_pad() -> None:
    rgb = np.asarray(gradient(90, 30))
    assert square_crop(rgb).shape == (30, 30, 3)
    x, pad = preprocess(rgb, 256, pad_square=True)
    assert x.shape == (1, 3, 256, 256) and pad == (30, 0, 90)
    assert np.abs(x[0, :, :60]).max() < 1e-5  # padding is the ImageNet mean, i.e. zero
    depth = upsample(np.ones((256, 256), np.float32), (30, 90), pad)
    assert depth.shape == (30, 90)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_upsample_matches_torch_bicubic(name: str) -> None:
    ref = reference(name, "upsampled")
    out = upsample(reference(name, "net_output"), ref.shape)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_whole_chain_matches_official(samples, model, name: str) -> None:
    result = predict(samples[name], model, Options())
    ref = reference(name, "upsampled")
    assert result.depth.shape == ref.shape == result.photo.shape[:2]
    assert np.abs(result.depth - ref).max() <= 1e-4 * np.abs(ref).max()
    assert set(result.timings_ms) == {"decode", "preprocess", "infer", "upsample"}


@pytest.mark.parametrize("square,shape", [("crop", (300, 300)), ("pad", (300, 451))])
def test_square_modes_end_to_end(samples, model, square, shape) -> None:
    result = predict(samples["chelsea"], model, Options(square=square))
    assert result.depth.shape == shape and result.photo.shape[:2] == shape


# enhance ------------------------------------------------------------------------------------------------

def ramp(h: int = 50, w: int = 80) -> np.ndarray:
    return np.linspace(0.0, 3.0, h * w, dtype=np.float32).reshape(h, w)


def test_normalize_range_and_clip() -> None:
    v = normalize(ramp())
    assert v.dtype == np.float32 and v.min() == 0.0 and v.max() == 1.0
    d = ramp()
    d[0, 0] = 1e6  # one outlier must not flatten everything else
    assert normalize(d, clip=1.0).std() > 0.25
    assert normalize(d, clip=0.0)[1:].std() < 1e-3  # plain min-max: all squashed near 0


@pytest.mark.parametrize("depth", [
    np.full((20, 30), 4.2, np.float32), np.zeros((20, 30), np.float32),
    np.full((20, 30), np.nan, np.float32),
    np.where(np.eye(20, 30) > 0, np.nan, ramp(20, 30)).astype(np.float32),
    np.where(np.eye(20, 30) > 0, np.inf, ramp(20, 30)).astype(np.float32),
], ids=["constant", "zeros", "all-nan", "some-nan", "some-inf"])
@pytest.mark.parametrize("opts", [Options(), Options(log=True, clahe=True, clip=0.0)],
                         ids=["plain", "log-clahe"])
def test_degenerate_maps_neither_crash_nor_warn(depth, opts) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = enhance(depth, opts)
        views = render_views(np.zeros((20, 30, 3), np.uint8), depth, opts)
    assert np.isfinite(v).all() and 0 <= v.min() and v.max() <= 1
    assert views["heatmap"].shape == (20, 30, 3)


def test_log_depth_is_monotonic_and_handles_zeros() -> None:
    d = np.array([[0.0, 0.001, 0.5, 1.0, 2.0]], np.float32)
    out = log_depth(d)
    assert np.isfinite(out).all() and (np.diff(out[0]) >= 0).all()


def test_enhance_controls() -> None:
    d = ramp()
    base = enhance(d, Options(clip=0.0))
    np.testing.assert_allclose(enhance(d, Options(clip=0.0, invert=True)), 1.0 - base, atol=1e-6)
    assert np.allclose(enhance(d, Options(clip=0.0, contrast=0.0)), 0.5)
    assert np.allclose(enhance(d, Options(clip=0.0, brightness=1.0)), 1.0)
    assert enhance(d, Options(clip=0.0, contrast=2.0)).std() > base.std()
    eq = enhance(d ** 4, Options(clip=0.0, clahe=True, clahe_clip=4.0))
    assert 0 <= eq.min() and eq.max() <= 1
    assert not np.allclose(eq, enhance(d ** 4, Options(clip=0.0)))


@pytest.mark.parametrize("opts", [
    Options(), Options(clip=0.0), Options(clip=5.0, contrast=2.5, brightness=-0.2),
    Options(contrast=0.0, brightness=0.3), Options(contrast=0.4, brightness=0.9, invert=True),
    Options(log=True, contrast=4.0), Options(brightness=-1.0), Options(invert=True, clip=0.0),
    Options(clahe=True, invert=True),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in vars(o).items() if v != getattr(Options(), k)) or "default")
@pytest.mark.parametrize("name", ["ramp", "cubed-noise", "flat", "with-nan"])
def test_display_levels_are_enhance_rounded(opts, name) -> None:
    """The fast two-pass display path equals the readable float one to within rounding (one level)."""
    rng = np.random.default_rng(3)
    # cubed-noise is taller than one strip of display's clipping
    depth = {"ramp": ramp(), "cubed-noise": (rng.random((1100, 70)) * 5 + 1).astype(np.float32) ** 3,
             "flat": np.full((20, 30), 4.2, np.float32),
             "with-nan": np.where(np.eye(50, 80) > 0, np.nan, ramp()).astype(np.float32)}[name]
    levels = display(depth, opts)
    expected = to_uint8(enhance(depth, opts))
    assert levels.dtype == np.uint8 and levels.shape == depth.shape
    assert np.abs(levels.astype(int) - expected).max() <= 1
    assert (levels == expected).mean() > 0.99


def test_clahe_spreads_a_compressed_histogram() -> None:
    v = np.clip(np.random.default_rng(1).normal(0.5, 0.02, (64, 64)), 0, 1).astype(np.float32)
    assert clahe(v, 4.0, 4).std() > 2 * v.std()


# colorize and views -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", COLORMAPS)
def test_every_colormap(name: str) -> None:
    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    img = colorize(np.linspace(0, 1, 256, dtype=np.float32)[None, :], name)
    assert img.shape == (1, 256, 3)
    np.testing.assert_array_equal(img[0], lut)
    # every map runs from darker (far) to brighter (near), so "near = bright" holds for all
    luma = lut.astype(float) @ [0.299, 0.587, 0.114]
    assert luma[-1] > luma[0]


def test_colormaps_differ_and_inferno_is_right() -> None:
    luts = {n: colormap_lut(n).tobytes() for n in COLORMAPS}
    assert len(set(luts.values())) == len(COLORMAPS)
    inferno = colormap_lut("inferno")
    assert inferno[0].max() < 10 and inferno[-1].min() > 150  # near-black to pale yellow


def test_unknown_colormap() -> None:
    with pytest.raises(ValueError):
        colormap_lut("rainbow-unicorn")


def test_overlay_alpha_ends() -> None:
    photo = np.asarray(gradient())
    heat = colorize(normalize(ramp(48, 64)))
    np.testing.assert_array_equal(overlay(photo, heat, 0.0), photo)
    np.testing.assert_array_equal(overlay(photo, heat, 1.0), heat)


def test_views_and_png_roundtrip(samples, model) -> None:
    result = predict(samples["coffee"], model, Options())
    views = render_views(result.photo, result.depth, Options(colormap="gray"))
    assert views["heatmap"].shape == (400, 600, 3) and views["gray"].shape == (400, 600)
    np.testing.assert_array_equal(views["heatmap"][:, :, 0], views["gray"])
    views["photo"] = result.photo
    for view, img in views.items():  # each view with its own PNG row filter
        back = np.asarray(Image.open(io.BytesIO(encode_png(img, view))))
        np.testing.assert_array_equal(back, img)


@pytest.mark.parametrize("height", [1, 2, PNG_STRIP - 1, PNG_STRIP, PNG_STRIP + 1, 2 * PNG_STRIP + 3])
@pytest.mark.parametrize("view", ["heatmap", "overlay", "gray", "photo"])
def test_png_is_lossless_across_strips_and_filters(height, view) -> None:
    rng = np.random.default_rng(height)
    shape = (height, 37) if view == "gray" else (height, 37, 3)
    # noise and smooth rows: the "up" filter's differences wrap below 0 and above 255
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    img[height // 2:] = np.linspace(0, 255, 37, dtype=np.uint8)[:, None] if img.ndim == 3 else \
        np.linspace(0, 255, 37, dtype=np.uint8)
    data = encode_png(img, view)
    with Image.open(io.BytesIO(data)) as im:  # an independent reader, which checks every chunk's CRC
        im.load()
        assert im.mode == ("L" if view == "gray" else "RGB")
        np.testing.assert_array_equal(np.asarray(im), img)
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # and a second one (libpng)
    np.testing.assert_array_equal(back if back.ndim == 2 else back[:, :, ::-1], img)


def test_png_refuses_what_it_cannot_write() -> None:
    for img in (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4), np.uint16), np.zeros((4, 4, 3), np.float32)):
        with pytest.raises(ValueError):
            encode_png(img)


def test_up_filter_is_used_for_photographic_views_only() -> None:
    img = np.tile(np.arange(64, dtype=np.uint8)[:, None, None], (1, 64, 3)) * 4  # rows change, columns not

    def filters(data: bytes) -> set:  # each row's filter type byte, from the decompressed IDAT
        idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
        raw = zlib.decompress(idat)
        return {raw[r * (1 + 64 * 3)] for r in range(64)}

    assert filters(encode_png(img, "overlay")) == filters(encode_png(img, "photo")) == {2}
    assert filters(encode_png(img, "heatmap")) == {0}
    assert len(encode_png(img, "overlay")) < len(encode_png(img, "heatmap"))  # rows predicted from above


def test_jpeg_is_close_and_gray_stays_png(samples) -> None:
    photo = decode(samples["coffee"])
    data = encode_jpeg(photo)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (photo.shape[1], photo.shape[0])
        assert np.abs(np.asarray(im).astype(int) - photo).mean() < 3
    assert view_format("gray", "jpeg") == "png" and view_format("heatmap", "jpeg") == "jpeg"
    assert encode(photo[:, :, 0], "gray", "jpeg").startswith(b"\x89PNG")
    assert encode(photo, "photo", "jpeg") == data
    with pytest.raises(ValueError):
        view_format("heatmap", "webp")


@pytest.mark.parametrize("views", [("heatmap", "overlay", "gray"), ("overlay", "heatmap"), ("overlay",),
                                   ("gray", "overlay")])
def test_views_one_at_a_time_equal_all_at_once(views) -> None:
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    depth = rng.random((40, 50), dtype=np.float32)
    opts = Options(alpha=0.3, colormap="turbo")
    whole = render_views(photo, depth, opts, views)
    made = []
    for view, img in iter_views(photo, depth, opts, views):  # each taken (copied) before the next is made
        np.testing.assert_array_equal(img, whole[view])
        made.append((view, img))
    assert [v for v, _ in made] == list(views)
    if views == ("heatmap", "overlay", "gray"):  # the overlay was blended into the heatmap's array
        assert made[0][1] is made[1][1]


def test_decode_copies_large_photos_by_strips_exactly() -> None:
    tall = Image.fromarray(np.random.default_rng(2).integers(0, 256, (2 * DECODE_STRIP + 5, 33, 3),
                                                                 dtype=np.uint8))
    data = pil_bytes(tall, "PNG")
    np.testing.assert_array_equal(decode(data), np.asarray(tall))
    jpeg = pil_bytes(tall, "JPEG", quality=90)
    with Image.open(io.BytesIO(jpeg)) as im:
        np.testing.assert_array_equal(decode(jpeg), np.asarray(im.convert("RGB")))


# 3. infer with flip, 4b. edge-aware refinement ---------------------------------------------------------

def test_flip_averages_with_the_mirrored_prediction() -> None:
    x = np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)
    ramp = np.tile(np.arange(96, dtype=np.float32), (64, 1))

    def position_model(inp: np.ndarray) -> np.ndarray:  # ignores the photo: left small, right large
        return ramp.copy()

    def photo_model(inp: np.ndarray) -> np.ndarray:  # follows the photo, so mirroring cancels out
        return inp[0, 0].copy()

    np.testing.assert_array_equal(infer(x, position_model, flip=False), ramp)
    np.testing.assert_allclose(infer(x, position_model, flip=True), np.full_like(ramp, 47.5))
    np.testing.assert_allclose(infer(x, photo_model, flip=True), x[0, 0], rtol=1e-6)


def step_scene(height: int = 240, width: int = 320):
    """A photo with a bright square on a dark background, and its true disparity (near square)."""
    photo = np.full((height, width, 3), 40, np.uint8)
    truth = np.full((height, width), 1.0, np.float32)
    photo[60:180, 100:220] = 200
    truth[60:180, 100:220] = 3.0
    return photo, truth


@pytest.mark.parametrize("method", ["guided", "joint_bilateral", "fgs"])
def test_refinement_puts_depth_edges_on_photo_edges(method: str) -> None:
    photo, truth = step_scene()
    low = cv2.resize(truth, (32, 24), interpolation=cv2.INTER_AREA)
    up = upsample(low, truth.shape)
    refined = refine_edges(up, photo, 10.0, method, **Options(upsample=method).upsample_params())
    assert refined.shape == truth.shape and refined.dtype == np.float32
    band = np.zeros(truth.shape, bool)  # 4 px either side of the square's border
    band[56:184, 96:224] = True
    band[64:176, 104:216] = False
    err = lambda d: float(np.abs(d - truth)[band].mean())  # noqa: E731
    assert err(refined) < 0.7 * err(up), (err(refined), err(up))


def test_bicubic_and_unknown_methods() -> None:
    photo, truth = step_scene()
    assert refine_edges(truth, photo, 10.0, "bicubic") is truth
    assert refine_edges(truth, photo, 1.0, "guided") is truth  # nothing to refine at 1:1
    with pytest.raises(ValueError):
        refine_edges(truth, photo, 10.0, "nearest")


def test_full_depth_with_padding_uses_the_padded_scale() -> None:
    photo, truth = step_scene(120, 320)
    pred = np.ones((32, 32), np.float32)
    depth = full_depth(pred, photo, (100, 0, 320), Options(upsample="guided"))
    assert depth.shape == (120, 320) and np.allclose(depth, 1.0, atol=1e-3)
