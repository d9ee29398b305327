"""Stereo pairs and normal maps, proved on scenes whose geometry is known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.imaging.normals import encode, normal_map, normals, relief
from app.options import NormalOptions, OptionError, StereoOptions
from app.imaging.stereo import anaglyph, eyes, forward_warp, layout, stereo
from support.samples import SAMPLES
from support.scenes import Plane, eye_shifts, render

BLUE, GREEN, RED, YELLOW, GREY, MAGENTA = (0, 0, 200), (0, 255, 0), (200, 0, 0), (255, 255, 0), \
    (200, 200, 200), (255, 0, 255)


def marked_scene():
    """A blue background (inverse depth 1) with a green marker column at x = 40, a red plane (2) with a
    yellow marker at x = 130 and a grey plane (3, the nearest) with a magenta marker at x = 230."""
    bg = np.zeros((120, 320, 3), np.uint8)
    bg[:] = BLUE
    bg[:, 40] = GREEN
    mid = np.zeros_like(bg)
    mid[:] = RED
    mid[:, 130] = YELLOW
    near = np.zeros_like(bg)
    near[:] = GREY
    near[:, 230] = MAGENTA
    planes = [Plane(20, 100, 100, 160, 2.0, mid), Plane(30, 90, 200, 260, 3.0, near)]
    photo, depth, _ = render(bg, 1.0, planes)
    return photo, depth, planes


def column_of(image: np.ndarray, row: int, colour) -> int:
    cols = np.flatnonzero((image[row] == colour).all(axis=1))
    assert len(cols) == 1, (colour, cols)
    return int(cols[0])


@pytest.mark.parametrize("divergence,convergence", [(2.0, 0.5), (3.3, 0.0), (5.0, 1.0), (1.37, 0.25)])
def test_each_plane_shifts_by_its_disparity_within_half_a_pixel(divergence, convergence) -> None:
    photo, depth, planes = marked_scene()
    left, right = eyes(photo, depth, StereoOptions(divergence=divergence, convergence=convergence))
    expected = eye_shifts(1.0, planes, divergence, convergence, photo.shape[1])
    for colour, row, want in ((GREEN, 5, expected[0]), (YELLOW, 25, expected[1]), (MAGENTA, 60, expected[2])):
        shift = column_of(left, row, colour) - column_of(right, row, colour)
        assert abs(shift - want) <= 0.5, (colour, shift, want)
    # the plane at the convergence depth stays where it was in both eyes
    if convergence == 0.5:
        assert column_of(left, 25, YELLOW) == column_of(right, 25, YELLOW) == 130


def test_nearer_points_come_out_of_the_screen() -> None:
    """Crossed disparity for what is nearer than the screen plane: the left eye sees it to the right."""
    photo, depth, _ = marked_scene()
    left, right = eyes(photo, depth, StereoOptions(divergence=4.0, convergence=0.5))
    assert column_of(left, 60, MAGENTA) > 230 > column_of(right, 60, MAGENTA)
    assert column_of(left, 5, GREEN) < 40 < column_of(right, 5, GREEN)  # the background goes behind it


def test_swap_eyes_swaps_them() -> None:
    photo, depth, _ = marked_scene()
    left, right = eyes(photo, depth, StereoOptions(divergence=3.0))
    s_left, s_right = eyes(photo, depth, StereoOptions(divergence=3.0, swap_eyes=True))
    assert np.array_equal(left, s_right) and np.array_equal(right, s_left)


def textured_scene():
    """A real photo as the background and one flat magenta plane in front: a colour the photo lacks."""
    with Image.open(SAMPLES["coffee"]) as im:
        bg = np.asarray(im.convert("RGB").resize((320, 200)))
    assert not (bg == MAGENTA).all(axis=-1).any()
    planes = [Plane(50, 150, 120, 200, 4.0, MAGENTA)]
    photo, depth, _ = render(bg, 1.0, planes)
    return bg, photo, depth, planes


@pytest.mark.parametrize("convergence", [0.0, 0.5, 1.0])
def test_gap_fill_leaves_no_hole_and_no_foreground_colour_in_it(convergence) -> None:
    bg, photo, depth, planes = textured_scene()
    opts = StereoOptions(divergence=6.0, convergence=convergence)
    left, right = eyes(photo, depth, opts)
    d = eye_shifts(1.0, planes, 6.0, convergence, 320)
    for eye, sign in ((left, 1), (right, -1)):
        # where the plane truly is in this eye: everything else must be background, gaps included
        half = int(np.rint(d[1] / 2)) if sign > 0 else int(np.rint(d[1] / 2)) - int(np.rint(d[1]))
        plane = np.zeros(eye.shape[:2], bool)
        plane[50:150, max(0, 120 + half):200 + half] = True
        is_magenta = (eye == MAGENTA).all(axis=-1)
        assert not is_magenta[~plane].any(), np.argwhere(is_magenta & ~plane)[:5]
        assert is_magenta[plane].all()
    # every pixel was written: gaps filled, none left black (the photo has no pure black)
    assert not (photo == 0).all(axis=-1).any()
    for eye in (left, right):
        assert not (eye == 0).all(axis=-1).any()


def test_gap_is_filled_with_the_background_texture_not_a_smear() -> None:
    """Where the plane moved off the background, the fill continues the photo's texture: its columns
    differ from one another (a smear repeats one column), and it is the background's own texture."""
    bg, photo, depth, _ = textured_scene()
    # convergence 0: the background stays put, the plane moves 12 px right in the left eye
    left, _ = eyes(photo, depth, StereoOptions(divergence=100 * 24 / 320, convergence=0.0))
    assert (left[50:150, 132:212] == MAGENTA).all()
    assert not (left[50:150, 120:132] == MAGENTA).all(axis=-1).any()
    fill = left[50:150, 120:132].astype(int)
    assert len({tuple(fill[:, i].ravel()) for i in range(12)}) == 12
    mirrored = bg[50:150, 108:120][:, ::-1].astype(int)  # the 12 columns left of the gap, reflected
    assert np.array_equal(fill, mirrored)


def test_forward_warp_keeps_the_nearest_where_two_land_on_one_pixel() -> None:
    photo = np.zeros((1, 4, 3), np.uint8)
    photo[0, :, 0] = [10, 20, 30, 40]
    near = np.array([[0.0, 1.0, 0.2, 0.0]], np.float32)
    image, shown, filled = forward_warp(photo, near, np.array([[0, 1, 0, 0]], np.int32))
    # pixel 1 (nearest) moves onto pixel 2 and hides it; pixel 1's old place is a gap
    assert image[0, :, 0].tolist() == [10, 0, 20, 40] and filled.tolist() == [[True, False, True, True]]
    assert shown[0, 2] == 1.0


def test_layouts_place_the_eyes() -> None:
    left = np.full((10, 8, 3), 50, np.uint8)
    right = np.full((10, 8, 3), 200, np.uint8)
    sbs = layout(left, right, "sbs")
    assert sbs.shape == (10, 16, 3) and sbs[0, 0, 0] == 50 and sbs[0, 15, 0] == 200
    cross = layout(left, right, "cross-eyed")
    assert cross[0, 0, 0] == 200 and cross[0, 15, 0] == 50
    tb = layout(left, right, "top-bottom")
    assert tb.shape == (20, 8, 3) and tb[0, 0, 0] == 50 and tb[19, 0, 0] == 200
    half = layout(left, right, "sbs-half")
    assert half.shape == (10, 8, 3) and half[0, 0, 0] == 50 and half[0, 7, 0] == 200


def test_plain_anaglyph_takes_red_from_the_left_eye_and_cyan_from_the_right() -> None:
    rng = np.random.default_rng(1)
    left, right = (rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(2))
    out = anaglyph(left, right, dubois=False)
    assert np.array_equal(out[..., 0], left[..., 0]) and np.array_equal(out[..., 1:], right[..., 1:])


def test_dubois_anaglyph_takes_red_mostly_from_the_left_and_cyan_from_the_right() -> None:
    black = np.zeros((4, 4, 3), np.uint8)
    white = np.full((4, 4, 3), 255, np.uint8)
    only_left = anaglyph(white, black, dubois=True).astype(int)
    only_right = anaglyph(black, white, dubois=True).astype(int)
    assert only_left[0, 0].tolist() == [255, 0, 0]  # (0.456 + 0.5 + 0.176) x 255, clipped
    assert only_right[0, 0, 0] == 0 and only_right[0, 0, 1] == 255 and only_right[0, 0, 2] == 255


def test_stereo_output_sizes_per_layout() -> None:
    photo, depth, _ = marked_scene()
    for name, shape in (("sbs", (120, 640, 3)), ("sbs-half", (120, 320, 3)), ("top-bottom", (240, 320, 3)),
                        ("cross-eyed", (120, 640, 3)), ("anaglyph", (120, 320, 3)),
                        ("anaglyph-dubois", (120, 320, 3))):
        assert stereo(photo, depth, StereoOptions(layout=name)).shape == shape


def test_stereo_options_are_checked() -> None:
    with pytest.raises(OptionError, match="divergence"):
        StereoOptions.from_strings({"divergence": "11"})
    with pytest.raises(OptionError, match="layout"):
        StereoOptions.from_strings({"layout": "vr360"})


def sphere(radius: float, size: int):
    """A hemisphere of ``radius`` pixels on a flat floor: its height, and its analytic unit normals
    (x right, y up, z toward the viewer)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - (size - 1) / 2, yy - (size - 1) / 2  # dy grows downward
    r2 = dx ** 2 + dy ** 2
    h = np.sqrt(np.clip(radius ** 2 - r2, 0, None))
    truth = np.stack([dx, -dy, h], axis=-1) / radius
    return h.astype(np.float32), truth, np.sqrt(r2) / radius


def test_sphere_normals_match_the_analytic_ones() -> None:
    size, radius = 241, 100.0
    height, truth, r = sphere(radius, size)
    # the depth map is the height itself (larger = nearer); the relief maps its range back to pixels
    opts = NormalOptions(normal_strength=10 * radius / size, normal_smooth=0.0)
    assert np.allclose(relief(height, opts), height, atol=1e-3)
    got = normals(relief(height, opts))
    angle = np.degrees(np.arccos(np.clip((got * truth).sum(axis=-1), -1, 1)))
    # central differences on a sphere of radius 100 px: 0.04 degrees at most (near the rim, where it is
    # steepest); the rim itself, where the slope has no limit, is left out
    assert angle[r < 0.9].max() < 0.1 and np.median(angle[r < 0.9]) < 0.02


@pytest.mark.parametrize("convention,red,green",
                         [("opengl", 1, 1), ("directx", 1, -1), ("controlnet", -1, 1)])
def test_normal_map_colours_follow_the_convention(convention, red, green) -> None:
    height, truth, r = sphere(100.0, 241)
    rgb = normal_map(height, NormalOptions(normal_strength=10 * 100 / 241, normal_smooth=0.0,
                                           normal_convention=convention)).astype(int)
    right_side, top_side = rgb[120, 200], rgb[40, 120]  # faces right; faces up
    assert np.sign(right_side[0] - 128) == red and abs(right_side[1] - 128) <= 1
    assert np.sign(top_side[1] - 128) == green and abs(top_side[0] - 128) <= 1
    assert rgb[120, 120].tolist() == [128, 128, 255] and rgb[0, 0].tolist() == [128, 128, 255]


def wavy_map(height: int, width: int, seed: int = 0):
    """A photo of noise and a depth of waves and noise, with one NaN and one inf in it."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    depth = (np.sin(rows / 37.0) + np.cos(cols / 23.0) + rng.random((height, width)) * 0.3).astype(np.float32)
    depth[height // 2, width // 3] = np.nan
    depth[height - 1, 2] = np.inf
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8), depth


@pytest.mark.parametrize("name", ["sbs", "sbs-half", "top-bottom", "cross-eyed", "anaglyph",
                                  "anaglyph-dubois"])
def test_stereo_made_in_strips_is_the_whole_maps_image(name) -> None:
    photo, depth = wavy_map(601, 333)  # three strips, the last a short one; an odd width for sbs-half
    opts = StereoOptions(layout=name, divergence=5.0, convergence=0.3)
    np.testing.assert_array_equal(stereo(photo, depth, opts), layout(*eyes(photo, depth, opts), name))
    # a video's range for the clip, given
    np.testing.assert_array_equal(stereo(photo, depth, opts, (-1.0, 2.0)),
                                  layout(*eyes(photo, depth, opts, (-1.0, 2.0)), name))


@pytest.mark.parametrize("smooth", [0.0, 0.7, 20.0])
def test_normal_map_made_in_strips_is_the_whole_maps(smooth) -> None:
    _, depth = wavy_map(1400, 97)  # strips of 512 rows: the smoothing reaches 81 rows across each seam
    for strength in (0.05, 20.0):
        opts = NormalOptions(normal_smooth=smooth, normal_strength=strength, normal_convention="directx")
        whole = encode(normals(relief(depth, opts)), "directx")
        np.testing.assert_array_equal(normal_map(depth, opts), whole)
