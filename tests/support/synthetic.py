"""Regenerates the synthetic weights from a manifest: MiDaS small by the rule in shared/models/README.md,
Depth Anything V2 Small by the rule in shared/models/depth_anything_v2_small/README.md.

Each tensor is drawn from a RandomState seeded with the CRC32 of its own name, so the file this writes
is the same, tensor for tensor, as ``midas_small_synthetic.pt`` and the project's tests need nothing
outside the repository.
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

Manifest = List[Tuple[str, List[int], str]]


def load_manifest(path: Path) -> Manifest:
    return [(name, list(shape), dtype) for name, shape, dtype in json.loads(path.read_text())]


def synthetic_state_dict(manifest: Manifest) -> "OrderedDict[str, torch.Tensor]":
    """The documented rule, tensor by tensor, in the manifest's order."""
    names = {name for name, _, _ in manifest}
    state: Dict[str, torch.Tensor] = OrderedDict()
    for name, shape, dtype in manifest:
        rs = np.random.RandomState(zlib.crc32(name.encode()))
        prefix, leaf = name.rsplit(".", 1)
        if f"{prefix}.running_mean" in names:  # a batch-norm tensor
            if leaf == "num_batches_tracked":
                value = np.zeros(shape, dtype=np.int64)
            elif leaf == "running_mean":
                value = rs.normal(0, 0.1, shape)
            elif leaf == "running_var":
                value = rs.uniform(0.75, 1.25, shape)
            elif leaf == "weight":
                value = rs.uniform(0.75, 1.25, shape)
            else:
                value = rs.normal(0, 0.1, shape)
        elif len(shape) == 1:  # conv biases
            value = rs.normal(0, 0.05, shape)
            if name == "scratch.output_conv.4.bias":
                value = value + 0.25
        else:  # conv weights
            value = rs.normal(0, np.sqrt(1.0 / np.prod(shape[1:])), shape)
        if value.dtype != np.int64:
            value = value.astype(np.float32)
        assert str(value.dtype) == dtype, (name, value.dtype, dtype)
        state[name] = torch.from_numpy(np.array(value))  # np.array keeps 0-d shapes
    return state


def write_synthetic_weights(manifest_path: Path, out: Path) -> Path:
    """Writes the state_dict with ``torch.save``, as the official checkpoint is stored."""
    torch.save(synthetic_state_dict(load_manifest(manifest_path)), out)
    return out


def dav2_synthetic_tensor(name: str, shape: List[int]) -> np.ndarray:
    """One tensor of the synthetic Depth Anything V2 Small weights, by the rule in
    shared/models/depth_anything_v2_small/README.md (the first matching case wins)."""
    rs = np.random.RandomState(zlib.crc32(name.encode()))
    module, leaf = name.rsplit(".", 1)
    if leaf == "mask_token":
        value = np.zeros(shape)
    elif leaf in ("pos_embed", "cls_token"):
        value = rs.normal(0, 0.5, shape)
    elif leaf == "gamma":  # layer scale
        value = rs.uniform(0.05, 0.2, shape)
    elif module.rsplit(".", 1)[-1] in ("norm", "norm1", "norm2"):  # the LayerNorms
        value = rs.uniform(0.75, 1.25, shape) if leaf == "weight" else rs.normal(0, 0.05, shape)
    elif len(shape) >= 2:  # Linear, Conv2d and ConvTranspose2d weights
        value = rs.normal(0, np.sqrt(1.0 / np.prod(shape[1:])), shape)
    else:  # biases; the last conv's gets +1 so that the final ReLU leaves only a few zeros
        value = rs.normal(0, 0.05, shape)
        if name == "depth_head.scratch.output_conv2.2.bias":
            value = value + 1.0
    return value.astype(np.float32)


def dav2_synthetic_state_dict(manifest: Manifest) -> "OrderedDict[str, torch.Tensor]":
    """The synthetic Depth Anything V2 Small state_dict, tensor by tensor, in the manifest's order."""
    state: Dict[str, torch.Tensor] = OrderedDict()
    for name, shape, dtype in manifest:
        value = dav2_synthetic_tensor(name, shape)
        assert str(value.dtype) == dtype, (name, value.dtype, dtype)
        state[name] = torch.from_numpy(value)
    return state


def write_dav2_synthetic_weights(manifest_path: Path, out: Path) -> Path:
    """Writes the synthetic Depth Anything V2 Small state_dict with ``torch.save``, as the official
    checkpoint is stored."""
    torch.save(dav2_synthetic_state_dict(load_manifest(manifest_path)), out)
    return out
