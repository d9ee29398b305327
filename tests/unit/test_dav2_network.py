"""Depth Anything V2 Small: the official state_dict layout, the synthetic weights' rule, strict loading,
and parity with the official code's outputs on every engine that runs it exactly."""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from app.depth.torch_engines import build_runner
from app.depth.registry import MIDAS_SMALL
from app.depth.engines import (AUTO_ORDER_DAV2, DAV2_SMALL, ENGINES, EXACT_ENGINES, EngineError, auto_order,
                               engine_problem, onnx_cache_path, positions_path, read_positions,
                               resolve_engine)
from app.depth.dav2 import DepthAnythingV2Small, PositionCache, resize_position_grid
from app.depth.positions import PositionGrids, resize_positions
from support.samples import DAV2_REFERENCES, dav2_reference
from support.synthetic import dav2_synthetic_state_dict, load_manifest

TOLERANCE = 1e-4  # max|out - ref| / max(ref), the README's bound for fp32 engines
# the shared README's fingerprint of the synthetic weights and its table of first values
FINGERPRINT = "2632d752fef7ce4159d2d9f8dff2df7096f9cb0999fe0280b32af3e5bc018df5"
FIRST_VALUES = {
    "pretrained.pos_embed": (4106073878, [0.41921952, -0.36230138, 0.2101528]),
    "pretrained.blocks.0.ls1.gamma": (63104611, [0.057215493, 0.15659495, 0.19874789]),
    "pretrained.blocks.11.norm2.weight": (393569077, [0.7802452, 1.156798, 1.0162232]),
    "pretrained.patch_embed.proj.weight": (756974335, [-0.02295676, 0.09816975, 0.027232544]),
    "depth_head.resize_layers.0.weight": (2966740907, [-0.02120119, -0.0020236506, 0.029431181]),
    "depth_head.scratch.output_conv2.2.bias": (2362761792, [1.0243967]),
}
EXACT = [e for e in ENGINES if e in EXACT_ENGINES]


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


# layout and weights ------------------------------------------------------------------------------------

@pytest.mark.parametrize("official_style", [False, True])
def test_state_dict_is_the_manifest(dav2_manifest_path: Path, official_style: bool) -> None:
    manifest = json.loads(dav2_manifest_path.read_text())
    ours = DepthAnythingV2Small(official_style=official_style).state_dict()
    assert list(ours) == [name for name, _, _ in manifest]  # keys and their order
    for name, shape, dtype in manifest:
        assert list(ours[name].shape) == shape, name
        assert str(ours[name].dtype) == f"torch.{dtype}", name


def test_regenerated_weights_follow_the_rule(dav2_manifest_path: Path) -> None:
    state = dav2_synthetic_state_dict(load_manifest(dav2_manifest_path))
    digest = hashlib.sha256()
    for tensor in state.values():
        digest.update(tensor.numpy().astype("<f4").tobytes(order="C"))
    assert digest.hexdigest() == FINGERPRINT
    for name, (seed, first) in FIRST_VALUES.items():
        assert zlib.crc32(name.encode()) == seed
        np.testing.assert_allclose(state[name].flatten()[:len(first)].numpy(), first, rtol=1e-6)
    assert not state["pretrained.mask_token"].any()
    assert len(state) == 239 and sum(t.numel() for t in state.values()) == 24_785_089


def test_strict_load_of_the_regenerated_file(dav2_net, dav2_weights_path: Path) -> None:
    saved = torch.load(dav2_weights_path, map_location="cpu", weights_only=True)
    for name, tensor in dav2_net.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


@pytest.mark.parametrize("how", ["missing", "unexpected", "shape"])
def test_strict_load_refuses_a_state_dict_that_does_not_fit(dav2_manifest_path: Path, how: str) -> None:
    state = dav2_synthetic_state_dict(load_manifest(dav2_manifest_path))
    if how == "missing":
        del state["depth_head.scratch.refinenet4.resConfUnit1.conv1.bias"]  # unused, but required
    elif how == "unexpected":
        state["depth_head.readout_projects.0.0.weight"] = torch.zeros(384, 768)  # use_clstoken=True's
    else:
        state["pretrained.pos_embed"] = torch.zeros(1, 1025, 384)  # a 32x32 grid
    with pytest.raises(RuntimeError, match={"missing": "Missing key", "unexpected": "Unexpected key",
                                            "shape": "size mismatch"}[how]):
        DepthAnythingV2Small().load_state_dict(state, strict=True)


# the position embedding ---------------------------------------------------------------------------------

def keys_cubic_resize(grid: np.ndarray, n_h: int, n_w: int) -> np.ndarray:
    """(C, 37, 37) -> (C, n_h, n_w), written from the README's description in float64: Keys' cubic
    (a = -0.75), source coordinate (d + 0.5) * 37 / (n + 0.1) - 0.5, taps clamped to the grid."""
    def matrix(n: int, m: int = 37) -> np.ndarray:
        a, out = -0.75, np.zeros((n, m))
        for d in range(n):
            s = (d + 0.5) * m / (n + 0.1) - 0.5
            f = math.floor(s)
            for tap in range(f - 1, f + 3):
                t = abs(s - tap)
                if t <= 1:
                    w = ((a + 2) * t - (a + 3)) * t * t + 1
                else:
                    w = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
                out[d, min(max(tap, 0), m - 1)] += w
        return out

    return np.einsum("hi,cij,wj->chw", matrix(n_h), grid.astype(np.float64), matrix(n_w))


@pytest.mark.parametrize("grid", [(37, 56), (26, 39), (26, 26), (37, 55), (40, 30)])
def test_position_grid_is_the_official_bicubic(dav2_net, grid) -> None:
    pos = dav2_net.pretrained.pos_embed.detach()
    ours = resize_position_grid(pos, *grid)
    assert ours.shape == (1, 1 + grid[0] * grid[1], 384)
    assert torch.equal(ours[0, 0], pos[0, 0])  # the cls position, unchanged
    want = keys_cubic_resize(pos[0, 1:].reshape(37, 37, 384).permute(2, 0, 1).numpy(), *grid)
    got = ours[0, 1:].reshape(*grid, 384).permute(2, 0, 1).numpy()
    assert np.abs(got - want).max() < 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("grid", [(37, 56), (26, 39), (26, 26), (40, 30), (26, 370), (1, 1)])
def test_numpy_position_grid_is_the_networks(dav2_net, grid) -> None:
    """What the ONNX engines are fed (``app.depth.positions``, NumPy, so that their workers need no torch) is
    the network's own resize to float32 rounding (the cubic weights differ in their last bits, most
    likely where PyTorch's compiled kernels fuse multiply-adds)."""
    pos = dav2_net.pretrained.pos_embed.detach()
    want = resize_position_grid(pos, *grid).numpy()
    got = resize_positions(pos.numpy(), *grid)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    grids = PositionGrids(pos.numpy(), size=1)
    assert grids(*grid) is grids(*grid) and np.array_equal(grids(*grid), got)


def test_position_grid_is_skipped_only_at_37_by_37(dav2_net) -> None:
    pos = dav2_net.pretrained.pos_embed.detach()
    assert torch.equal(resize_position_grid(pos, 37, 37), pos)
    assert not torch.equal(resize_position_grid(pos, 37, 38)[:, 1:38], pos[:, 1:38])


def test_position_cache_gives_the_per_call_result(dav2_net) -> None:
    """The cached embedding at two shapes in a row (and back) equals computing it on every call, bit for
    bit, in the network's output too; loading other weights refreshes it; the cache stays bounded."""
    torch.manual_seed(0)
    shapes = [(14 * 10, 14 * 13), (14 * 17, 14 * 9), (14 * 10, 14 * 13)]
    inputs = [torch.randn(2, 3, h, w) for h, w in shapes]
    with torch.inference_mode():
        cached = [dav2_net(x) for x in inputs]
        for x, out in zip(inputs, cached, strict=True):
            per_call = dav2_net.forward_with_positions(
                x, resize_position_grid(dav2_net.pretrained.pos_embed, x.shape[2] // 14, x.shape[3] // 14))
            assert out.shape == (2, x.shape[2], x.shape[3]) and torch.equal(out, per_call)
            # batch items are independent (to float rounding: the matrix products block differently)
            assert relative_error(dav2_net(x[1:])[0].numpy(), out[1].numpy()) < 1e-5

    other = DepthAnythingV2Small().eval()
    with torch.inference_mode():
        before = other(inputs[0])  # fills its cache from the zero-initialised embedding
    other.load_state_dict(dav2_net.state_dict(), strict=True)
    with torch.inference_mode():
        after = other(inputs[0])
    assert not torch.equal(before, after) and torch.equal(after, cached[0])

    cache = PositionCache(dav2_net.pretrained.pos_embed, size=2)
    first = cache(10, 13)
    assert cache(10, 13) is first
    cache(17, 9)
    cache(20, 20)
    assert cache(10, 13) is not first and torch.equal(cache(10, 13), first)  # evicted, then recomputed


# parity with the official code's outputs -----------------------------------------------------------------

@pytest.mark.parametrize("engine", EXACT)
@pytest.mark.parametrize("name, size", DAV2_REFERENCES)
def test_net_output_matches_the_official_code(dav2_engines, dav2_reference_dir, engine, name, size) -> None:
    x = dav2_reference(dav2_reference_dir, name, size, "net_input")
    ref = dav2_reference(dav2_reference_dir, name, size, "net_output")
    with torch.inference_mode():
        out = dav2_engines(engine)(x)
    assert out.shape == (1, *ref.shape) and out.dtype == np.float32
    assert relative_error(out[0], ref) <= TOLERANCE
    assert out.min() >= 0 and (out == 0).any()  # the final ReLU: every reference has exact zeros


@pytest.mark.parametrize("name, size", [("coffee", 364), ("astronaut", 364)])
def test_official_style_variant_matches_too(dav2_net, dav2_reference_dir, name, size) -> None:
    official = DepthAnythingV2Small(official_style=True).eval()
    official.load_state_dict(dav2_net.state_dict(), strict=True)
    x = torch.from_numpy(dav2_reference(dav2_reference_dir, name, size, "net_input"))
    with torch.inference_mode():
        out = official(x)[0].numpy()
    assert relative_error(out, dav2_reference(dav2_reference_dir, name, size, "net_output")) <= TOLERANCE


# engines for this network -----------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["bf16", "openvino"])
def test_bf16_engines_are_refused_for_this_network(dav2_net, engine) -> None:
    problem = engine_problem(engine, DAV2_SMALL)
    assert problem and "not offered for Depth Anything V2 Small" in problem
    with pytest.raises(EngineError, match="not offered for Depth Anything V2 Small"):
        build_runner(dav2_net, engine, 2, check=False)
    assert engine_problem("bf16", "no-such-model").startswith("Unknown model")


def test_auto_picks_per_model() -> None:
    avx2 = frozenset({"avx2", "fma"})
    assert auto_order(avx2, model=DAV2_SMALL) == AUTO_ORDER_DAV2
    assert auto_order(avx2 | {"avx512f"}, model=DAV2_SMALL) == AUTO_ORDER_DAV2
    assert auto_order(frozenset(), model=DAV2_SMALL) == ("eager",)
    assert auto_order(avx2) == auto_order(avx2, model=MIDAS_SMALL.name)  # MiDaS: unchanged, the default
    assert set(AUTO_ORDER_DAV2) <= EXACT_ENGINES
    chosen = resolve_engine("auto", DAV2_SMALL)
    assert chosen == next(e for e in auto_order(model=DAV2_SMALL) if engine_problem(e, DAV2_SMALL) is None)
    assert engine_problem("auto", DAV2_SMALL) is None


def test_onnx_export_is_cached_under_its_own_name(dav2_net, tmp_path: Path, monkeypatch) -> None:
    """The export of each network has its own file name in the shared cache folder, and a second build
    reads it instead of exporting again."""
    import app.depth.torch_engines as m

    if engine_problem("onnxruntime", DAV2_SMALL):
        pytest.skip(engine_problem("onnxruntime", DAV2_SMALL))
    sha = "0" * 64
    path = onnx_cache_path(tmp_path, sha, DAV2_SMALL)
    assert path.name.startswith("depth_anything_v2_small-") and path != onnx_cache_path(tmp_path, sha)
    assert onnx_cache_path(tmp_path, sha).name.startswith("midas_small-")
    path.write_bytes(m.export_onnx(dav2_net))
    exports = []
    real = m.export_onnx
    monkeypatch.setattr(m, "export_onnx", lambda net: exports.append(1) or real(net))
    run, precision = build_runner(dav2_net, "onnxruntime", 2, weights_sha256=sha, onnx_cache=tmp_path)
    x = torch.randn(1, 3, 14 * 8, 14 * 11).numpy()
    with torch.inference_mode():
        want = dav2_net(torch.from_numpy(x)).numpy()
    # beside the export, the trained position embedding a start without torch resizes and feeds
    assert exports == [] and precision == "fp32"
    assert sorted(tmp_path.iterdir()) == sorted([path, positions_path(path)])
    assert np.array_equal(read_positions(path), dav2_net.pretrained.pos_embed.detach().numpy())
    assert relative_error(run(x), want) <= TOLERANCE
