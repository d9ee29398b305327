"""The Depth Anything V2 Small network (DINOv2 ViT-S/14 encoder + DPT head), written in this project.

Parameter names, shapes and their order follow the official DepthAnything/Depth-Anything-V2 code
configured as its scripts configure the Small model (``encoder="vits", features=64,
out_channels=[48, 96, 192, 384]``, no batch norm, no cls-token readout), so the official checkpoint
``depth_anything_v2_vits.pth`` loads with ``strict=True``. No timm, transformers or torchvision.

Two differences from the official code, both exact to float32 rounding (about 1e-6 on the output):

* attention goes through ``F.scaled_dot_product_attention`` instead of an explicit ``q @ k^T`` and
  softmax (fewer memory passes over the tokens-by-tokens matrix);
* the position embedding, bicubically resized from the 37x37 training grid to the input's patch grid,
  depends only on the weights and the grid size, so it is computed once per grid and kept
  (``PositionCache``) instead of on every call;
* the head's weights and feature maps are channels-last (the encoder's tokens are laid out that way
  already), where oneDNN's convolutions are faster.

``official_style=True`` undoes all three, for the benchmark's baseline: the official code's way, step by
step.
"""

from __future__ import annotations

import functools
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

# the patch size, the training grid and the official scale-factor offset, shared with the NumPy resize
# that feeds the exported graph
from .positions import INTERPOLATE_OFFSET, PATCH, TRAIN_GRID

EMBED_DIM = 384
DEPTH = 12
HEADS = 6
MLP_HIDDEN = 1536
LAYER_NORM_EPS = 1e-6  # DINOv2's, not PyTorch's default 1e-5
FEATURE_BLOCKS = (2, 5, 8, 11)  # the blocks (0-based) whose outputs feed the head, for ViT-S
HEAD_FEATURES = 64
HEAD_CHANNELS = (48, 96, 192, 384)


def resize_position_grid(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """``(1, 1 + 37*37, 384)`` trained position embedding -> ``(1, 1 + grid_h*grid_w, 384)`` float32, as
    the official ``interpolate_pos_encoding`` computes it: unchanged for a 37x37 grid, else the 37x37 grid
    resized bicubically (a = -0.75, no antialias) by scale factors ((grid_h + 0.1) / 37, (grid_w + 0.1)
    / 37), height first, the cls position prepended unchanged."""
    if grid_h == TRAIN_GRID and grid_w == TRAIN_GRID:
        return pos_embed.float()
    pos = pos_embed.float()
    grid = pos[:, 1:].reshape(1, TRAIN_GRID, TRAIN_GRID, -1).permute(0, 3, 1, 2)
    scale = ((grid_h + INTERPOLATE_OFFSET) / TRAIN_GRID, (grid_w + INTERPOLATE_OFFSET) / TRAIN_GRID)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False, antialias=False)
    assert grid.shape[-2:] == (grid_h, grid_w), (grid.shape, grid_h, grid_w)
    return torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)), dim=1)


class PositionCache:
    """The resized position embedding per patch grid, computed on first use and kept for the most
    recent ``size`` grids (each is (1 + h*w/196) x 384 floats: 3.2 MB at 784x518). It holds its own
    copy of the trained embedding, so an engine's runner can keep it without keeping the network."""

    def __init__(self, pos_embed: torch.Tensor, size: int = 8) -> None:
        pos = pos_embed.detach().clone()

        def resize(grid_h: int, grid_w: int) -> torch.Tensor:
            # computed outside autograd and inference mode, so the kept tensor can serve any later caller
            with torch.inference_mode(False), torch.no_grad():
                return resize_position_grid(pos, grid_h, grid_w)

        self._resize = functools.lru_cache(maxsize=size)(resize)

    def __call__(self, grid_h: int, grid_w: int) -> torch.Tensor:
        return self._resize(grid_h, grid_w)


# encoder: DINOv2 ViT-S/14 ------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, EMBED_DIM, PATCH, PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, h/14 * w/14, 384), patches in row-major order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, official_style: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Linear(EMBED_DIM, 3 * EMBED_DIM)
        self.proj = nn.Linear(EMBED_DIM, EMBED_DIM)
        self.official_style = official_style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # the 1152 outputs are (3, heads, 64): all of q, then k, then v
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        if self.official_style:
            attn = (q * (c // HEADS) ** -0.5) @ k.transpose(-2, -1)
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # its default scale is 64^-0.5 too
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(EMBED_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(EMBED_DIM, MLP_HIDDEN)
        self.fc2 = nn.Linear(MLP_HIDDEN, EMBED_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, as the official nn.GELU()


class Block(nn.Module):
    """Pre-norm transformer block with layer scale."""

    def __init__(self, official_style: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(EMBED_DIM, eps=LAYER_NORM_EPS)
        self.attn = Attention(official_style)
        self.ls1 = LayerScale()
        self.norm2 = nn.LayerNorm(EMBED_DIM, eps=LAYER_NORM_EPS)
        self.mlp = Mlp()
        self.ls2 = LayerScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2Small(nn.Module):
    """The encoder: patch embedding, cls token, position embedding, 12 blocks, and the final norm applied
    to each of the four feature blocks' outputs."""

    def __init__(self, official_style: bool = False) -> None:
        super().__init__()
        # parameter order as the official DinoVisionTransformer registers them (the manifest's order)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + TRAIN_GRID * TRAIN_GRID, EMBED_DIM))
        self.mask_token = nn.Parameter(torch.zeros(1, EMBED_DIM))  # training only, kept for strict loading
        self.patch_embed = PatchEmbed()
        self.blocks = nn.ModuleList(Block(official_style) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(EMBED_DIM, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, h, w) image and its (1, 1 + h*w/196, 384) position embedding -> the four normed feature
        blocks' patch tokens, each (B, h*w/196, 384) (the cls token attends, then is dropped)."""
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1) + pos
        features: List[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in FEATURE_BLOCKS:
                features.append(self.norm(tokens)[:, 1:])
        return features


# head: DPT ---------------------------------------------------------------------------------------------

class ResidualConvUnit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(HEAD_FEATURES, HEAD_FEATURES, 3, padding=1)
        self.conv2 = nn.Conv2d(HEAD_FEATURES, HEAD_FEATURES, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # not in place: the skip adds the un-rectified x
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """The official FeatureFusionBlock (its ``*xs`` made an optional skip tensor): add the lateral
    features through resConfUnit1, refine with resConfUnit2, resize bilinearly with align_corners=True
    to ``size`` (or x2), 1x1 out_conv."""

    def __init__(self) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(HEAD_FEATURES, HEAD_FEATURES, 1)
        self.resConfUnit1 = ResidualConvUnit()  # noqa: N815 - the official parameter name
        self.resConfUnit2 = ResidualConvUnit()  # noqa: N815

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None,
                size: Optional[List[int]] = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for i, channels in enumerate(HEAD_CHANNELS, 1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(channels, HEAD_FEATURES, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self, f"refinenet{i}", FusionBlock())
        self.output_conv1 = nn.Conv2d(HEAD_FEATURES, HEAD_FEATURES // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(HEAD_FEATURES // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1), nn.ReLU(),
            nn.Identity())


class DPTHead(nn.Module):
    def __init__(self, channels_last: bool = True) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.projects = nn.ModuleList(nn.Conv2d(EMBED_DIM, c, 1) for c in HEAD_CHANNELS)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(HEAD_CHANNELS[0], HEAD_CHANNELS[0], 4, stride=4),
            nn.ConvTranspose2d(HEAD_CHANNELS[1], HEAD_CHANNELS[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(HEAD_CHANNELS[3], HEAD_CHANNELS[3], 3, stride=2, padding=1),
        ])
        self.scratch = Scratch()

    def forward(self, features: List[torch.Tensor], grid: torch.Tensor, out_size: List[int]) -> torch.Tensor:
        """Four (B, gh*gw, 384) token maps, a tensor whose last two dims are (gh, gw), the (h, w) to
        produce -> (B, 1, h, w)."""
        s = self.scratch
        maps: List[torch.Tensor] = []
        for tokens, project, resize in zip(features, self.projects, self.resize_layers, strict=True):
            # (B, gh*gw, 384) is already (B, gh, gw, 384) in memory: viewed as a channels-last map, no copy
            x = tokens.reshape(grid.shape[0], grid.shape[2], grid.shape[3], EMBED_DIM).permute(0, 3, 1, 2)
            if not self.channels_last:
                x = x.contiguous()  # the official code's layout
            maps.append(resize(project(x)))
        l1, l2 = s.layer1_rn(maps[0]), s.layer2_rn(maps[1])
        l3, l4 = s.layer3_rn(maps[2]), s.layer4_rn(maps[3])
        # target sizes come from the lateral maps: ceil(n/2) -> n is not an exact x2 when n is odd
        path = s.refinenet4(l4, None, [l3.shape[2], l3.shape[3]])
        path = s.refinenet3(path, l3, [l2.shape[2], l2.shape[3]])
        path = s.refinenet2(path, l2, [l1.shape[2], l1.shape[3]])
        path = s.refinenet1(path, l1, None)
        out = F.interpolate(s.output_conv1(path), size=out_size, mode="bilinear", align_corners=True)
        return s.output_conv2(out)


class DepthAnythingV2Small(nn.Module):
    """Depth Anything V2 Small: ``state_dict()`` is the official checkpoint's, key for key, in order.

    ``forward``: (B, 3, h, w) float32 normalised RGB, h and w multiples of 14 -> (B, h, w) float32
    relative inverse depth, >= 0. ``official_style=True``: explicit attention and the position embedding
    resized on every call, as the official code does (the benchmark's baseline)."""

    def __init__(self, official_style: bool = False) -> None:
        super().__init__()
        self.pretrained = DinoV2Small(official_style)
        self.depth_head = DPTHead(channels_last=not official_style)
        if not official_style:
            # the head runs 1.4-1.6x faster on channels-last maps (oneDNN's convolutions; at 784x518 on 2
            # cores: 0.69 s -> 0.44 s, and 0.91 s -> 0.63 s on a busy machine), and the encoder's tokens
            # already are one: same values, same state_dict (shapes, dtypes, order; only strides differ)
            self.depth_head.to(memory_format=torch.channels_last)
        self.official_style = official_style
        self._positions: Optional[PositionCache] = None
        self._positions_version = -1

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1, 1 + grid_h*grid_w, 384): the trained embedding resized to the grid; cached per grid size
        unless ``official_style``. The cache is rebuilt when the weights change (a load bumps the
        parameter's version counter)."""
        pos_embed = self.pretrained.pos_embed
        if self.official_style:
            return resize_position_grid(pos_embed, grid_h, grid_w)
        if self._positions is None or self._positions_version != pos_embed._version:
            self._positions = PositionCache(pos_embed)
            self._positions_version = pos_embed._version
        return self._positions(grid_h, grid_w)

    def forward_with_positions(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``forward`` with the position embedding given (``position_embedding(h // 14, w // 14)``): the
        traced and exported graphs take it as a second input (see ``WithPositions``)."""
        patches = x[:, :1, ::PATCH, ::PATCH]  # (B, 1, gh, gw): carries the grid's shape into traced graphs
        features = self.pretrained(x, pos)
        depth = self.depth_head(features, patches, [x.shape[2], x.shape[3]])
        return F.relu(depth).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.position_embedding(x.shape[2] // PATCH, x.shape[3] // PATCH)
        return self.forward_with_positions(x, pos)


class WithPositions(nn.Module):
    """``(image, positions) -> depth``, the graph the compiled engines run. The position embedding for
    the input's grid is a second input rather than part of the graph: a cache cannot live in a traced
    or exported graph, and computing the bicubic resize in the graph would mean either freezing the
    grid size of the example input into it (tracing records the resize's output size as a constant) or
    relying on each runtime's own cubic resize (ONNX Resize's sampling positions and edge handling
    differ from PyTorch's scale-factor form). The TorchScript runner computes it once per grid with
    ``PositionCache``, exactly as the network does; the ONNX runtimes' runner with
    ``app.depth.positions.PositionGrids``, the same resize in NumPy (to float32 rounding), so that a worker
    running the export never imports torch."""

    def __init__(self, net: DepthAnythingV2Small) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.net.forward_with_positions(x, pos)
