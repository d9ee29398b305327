"""Shared fixtures: synthetic weights in the official format, the loaded model, the sample photos."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import write_synthetic_weights  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = {p.stem: p for p in sorted((FIXTURES / "samples").iterdir()) if p.suffix in (".png", ".jpg")}


@pytest.fixture(scope="session")
def manifest_path() -> Path:
    return FIXTURES / "state_dict_manifest.json"


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory: pytest.TempPathFactory, manifest_path: Path) -> Path:
    """The synthetic MiDaS-small weights, regenerated from the manifest and saved like the official file."""
    return write_synthetic_weights(manifest_path, tmp_path_factory.mktemp("weights") / "synthetic.pt")


@pytest.fixture(scope="session")
def model(weights_path: Path):
    from app.model import DepthModel

    return DepthModel.load(weights_path, threads=2, script=True)


@pytest.fixture(scope="session")
def eager_model(weights_path: Path):
    from app.model import DepthModel

    return DepthModel.load(weights_path, threads=2, script=False)


@pytest.fixture(scope="session")
def samples() -> Dict[str, bytes]:
    return {name: path.read_bytes() for name, path in SAMPLES.items()}


def reference(name: str, kind: str) -> np.ndarray:
    """The official implementation's array for a sample: net_input, net_output or upsampled."""
    return np.load(FIXTURES / "reference" / f"{name}.{kind}.npy")


@pytest.fixture(scope="session")
def real_weights() -> Path:
    """The official checkpoint, if this machine has it (MIDAS_REAL_WEIGHTS=PATH)."""
    path = os.environ.get("MIDAS_REAL_WEIGHTS")
    if not path or not Path(path).is_file():
        pytest.skip("official midas_v21_small_256.pt not available: set MIDAS_REAL_WEIGHTS=PATH")
    return Path(path)
