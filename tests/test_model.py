"""The network: official state_dict layout, strict loading, TorchScript, parity with the official code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.model import DepthModel, WeightsError, configure_threads, file_digest, load_network
from app.network import MidasSmall
from conftest import SAMPLES, reference
from synthetic import load_manifest, synthetic_state_dict

SHARED_SYNTHETIC = Path(__file__).parents[2] / "shared/models/midas_small_synthetic.pt"


def test_state_dict_is_the_official_layout(manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    ours = MidasSmall().state_dict()
    assert list(ours) == [name for name, _, _ in manifest]
    for name, shape, dtype in manifest:
        assert list(ours[name].shape) == shape, name
        assert str(ours[name].dtype) == f"torch.{dtype}", name


@pytest.mark.skipif(not SHARED_SYNTHETIC.is_file(), reason="team's shared/models not beside the repo")
def test_regenerated_weights_equal_the_shared_file(manifest_path: Path) -> None:
    theirs = torch.load(SHARED_SYNTHETIC, map_location="cpu", weights_only=True)
    ours = synthetic_state_dict(load_manifest(manifest_path))
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert ours[name].shape == tensor.shape and torch.equal(ours[name], tensor), name


def _save(state: dict, tmp_path: Path) -> Path:
    path = tmp_path / "w.pt"
    torch.save(state, path)
    return path


def _bad_state(manifest_path: Path, how: str) -> dict:
    state = synthetic_state_dict(load_manifest(manifest_path))
    if how == "missing":
        del state["scratch.output_conv.4.bias"]
    elif how == "unexpected":
        state["scratch.extra.weight"] = torch.zeros(1)
    elif how == "shape":
        state["scratch.layer1_rn.weight"] = torch.zeros(64, 32, 1, 1)
    return state


@pytest.mark.parametrize("how", ["missing", "unexpected", "shape"])
def test_strict_load_refuses_a_state_dict_that_does_not_fit(manifest_path, tmp_path, how) -> None:
    with pytest.raises(WeightsError, match="does not fit MiDaS v2.1 small"):
        load_network(_save(_bad_state(manifest_path, how), tmp_path))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", "truncated"])
def test_unreadable_weights_file_is_a_clear_error(weights_path, tmp_path, content) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(weights_path.read_bytes()[:100_000] if content == "truncated" else content)
    with pytest.raises(WeightsError, match="Cannot read weights file .*Download midas_v21_small_256.pt"):
        load_network(path)


def test_non_state_dict_checkpoint_is_refused(tmp_path) -> None:
    with pytest.raises(WeightsError, match="not a MiDaS state_dict"):
        load_network(_save({"a": [1, 2, 3]}, tmp_path))


def test_checkpoint_wrapped_under_model_key_loads(manifest_path, tmp_path) -> None:
    state = synthetic_state_dict(load_manifest(manifest_path))
    net = load_network(_save({"model": state, "optimizer": {}}, tmp_path))
    assert torch.equal(net.state_dict()["scratch.output_conv.4.bias"], state["scratch.output_conv.4.bias"])


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("which", ["model", "eager_model"])
def test_network_output_matches_official_implementation(request, name, which) -> None:
    model = request.getfixturevalue(which)
    ref = reference(name, "net_output")
    out = model(reference(name, "net_input"))
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("shape", [(256, 256), (160, 256), (384, 288), (512, 512), (32, 512)])
def test_scripted_equals_eager(model, eager_model, shape) -> None:
    assert isinstance(model.net, torch.jit.ScriptModule) and model.scripted
    x = np.random.default_rng(0).normal(size=(1, 3, *shape)).astype(np.float32)
    a, b = model(x), eager_model(x)
    assert a.shape == shape
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(b).max()))


def test_model_reports_weights_and_threads(model, weights_path) -> None:
    assert model.weights_sha256 == file_digest(weights_path, "sha256")
    assert model.threads == 2 == torch.get_num_threads()
    assert configure_threads(2) == 2


@pytest.mark.real_weights
def test_official_weights_see_near_and_far(real_weights, samples) -> None:
    """With the real checkpoint: the file is the official one, and the scene's far parts come out far."""
    from app.options import Options
    from app.pipeline import predict

    assert file_digest(real_weights, "gitblob") == "e224b2bed206ebb398b613018f24458f00eab784"
    model = DepthModel.load(real_weights, threads=2)
    depth = predict(samples["rocket"], model, Options()).depth
    h = depth.shape[0]
    # rocket.jpg: sky at the top (far, small inverse depth), launch tower and ground below (nearer)
    assert depth[: h // 6].mean() < depth[-h // 3:].mean()
