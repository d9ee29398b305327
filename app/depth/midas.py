"""The MiDaS v2.1 small network (``MidasNet_small``), written to be TorchScript-friendly.

Architecture and parameter names follow the official isl-org/MiDaS code exactly, so the official
checkpoint ``midas_v21_small_256.pt`` loads with ``strict=True``:

* encoder: EfficientNet-Lite3 as built by gen-efficientnet's ``tf_efficientnet_lite3`` (TF "same"
  padding, batch-norm eps 1e-3, ReLU6, no squeeze-excite), split into four stages the way MiDaS's
  ``_make_efficientnet_backbone`` does: ``layer1 = [conv_stem, bn1, act1, blocks[0], blocks[1]]``,
  ``layer2 = blocks[2]``, ``layer3 = blocks[3:5]``, ``layer4 = blocks[5:7]``;
* decoder ("scratch"): 3x3 projections to 64/128/256/512 channels ("expand" blocks), four
  feature-fusion blocks and the output head with a final ReLU (non-negative inverse depth).

The official fusion block takes ``*xs``, which TorchScript cannot compile; here it takes an optional
skip tensor instead. Nothing else differs. The encoder is written here rather than imported from
timm because timm imports torchvision, which PyPI only ships CUDA-linked (see README, "Why no timm").
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS_TF = 1e-3  # TensorFlow's default, used by every tf_* EfficientNet port

# EfficientNet-Lite3 stages after width (x1.2) and depth (x1.4) scaling, as gen-efficientnet builds
# them; the first and last stage keep their repeat count ("fix_stem_head" for the Lite family).
# (block kind, repeats, kernel, stride, expansion, out channels)
LITE3_STAGES: List[Tuple[str, int, int, int, int, int]] = [
    ("ds", 1, 3, 1, 1, 24),
    ("ir", 3, 3, 2, 6, 32),
    ("ir", 3, 5, 2, 6, 48),
    ("ir", 5, 3, 2, 6, 96),
    ("ir", 5, 5, 1, 6, 136),
    ("ir", 6, 5, 2, 6, 232),
    ("ir", 1, 3, 1, 6, 384),
]
STEM_CHANNELS = 32
ENCODER_CHANNELS = (32, 48, 136, 384)  # outputs of layer1..layer4


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: asymmetric (more on the bottom/right) when strided."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2], x.shape[-1]
        kh, kw = self.weight.shape[-2], self.weight.shape[-1]
        sh, sw = self.stride[0], self.stride[1]
        pad_h = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pad_w = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv_same(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """'SAME' conv as gen-efficientnet makes it: static symmetric padding when stride is 1."""
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel, 1, padding=(kernel - 1) // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS_TF)


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 + BN + ReLU6, pointwise 1x1 + BN (no activation), residual when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.has_residual = stride == 1 and cin == cout
        self.conv_dw = conv_same(cin, cin, kernel, stride, groups=cin)
        self.bn1 = bn(cin)
        self.act1 = nn.ReLU6()
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv_dw(x)))
        out = self.bn2(self.conv_pw(out))
        return out + x if self.has_residual else out


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise kxk, project 1x1 (no squeeze-excite in Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_residual = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = bn(mid)
        self.act1 = nn.ReLU6()
        self.conv_dw = conv_same(mid, mid, kernel, stride, groups=mid)
        self.bn2 = bn(mid)
        self.act2 = nn.ReLU6()
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv_pw(x)))
        out = self.act2(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_residual else out


def efficientnet_lite3_stages() -> List[nn.Sequential]:
    """The seven block stages of EfficientNet-Lite3, each an ``nn.Sequential`` of blocks."""
    stages: List[nn.Sequential] = []
    cin = STEM_CHANNELS
    for kind, repeats, kernel, stride, expand, cout in LITE3_STAGES:
        blocks: List[nn.Module] = []
        for i in range(repeats):
            s = stride if i == 0 else 1
            if kind == "ds":
                blocks.append(DepthwiseSeparable(cin, cout, kernel, s))
            else:
                blocks.append(InvertedResidual(cin, cout, kernel, s, expand))
            cin = cout
        stages.append(nn.Sequential(*blocks))
    return stages


class Encoder(nn.Module):
    """EfficientNet-Lite3 cut into MiDaS's four feature levels (strides 4, 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        s = efficientnet_lite3_stages()
        stem = [conv_same(3, STEM_CHANNELS, 3, 2), bn(STEM_CHANNELS), nn.ReLU6()]
        self.layer1 = nn.Sequential(*stem, s[0], s[1])
        self.layer2 = nn.Sequential(s[2])
        self.layer3 = nn.Sequential(s[3], s[4])
        self.layer4 = nn.Sequential(s[5], s[6])


class ResidualConvUnit(nn.Module):
    """ReLU, conv3x3, ReLU, conv3x3, plus the input (MiDaS ``ResidualConvUnit_custom``, no BN)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.activation(x))
        out = self.conv2(self.activation(out))
        return out + x


class FeatureFusionBlock(nn.Module):
    """MiDaS ``FeatureFusionBlock_custom`` with ``expand=True``: fuse, refine, upsample x2, halve channels."""

    def __init__(self, features: int, expand: bool) -> None:
        super().__init__()
        out_features = features // 2 if expand else features
        self.out_conv = nn.Conv2d(features, out_features, 1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        # MidasNet_small builds its fusion blocks with align_corners=True
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Interpolate(nn.Module):
    """Parameter-free resize, kept as a module so ``output_conv`` indices match the checkpoint."""

    def __init__(self, scale_factor: float, mode: str) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=False)


class Decoder(nn.Module):
    """MiDaS's "scratch": projections, fusion blocks and the output head."""

    def __init__(self, features: int = 64) -> None:
        super().__init__()
        widths = [features, features * 2, features * 4, features * 8]
        c1, c2, c3, c4 = ENCODER_CHANNELS
        self.layer1_rn = nn.Conv2d(c1, widths[0], 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(c2, widths[1], 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(c3, widths[2], 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(c4, widths[3], 3, padding=1, bias=False)
        self.refinenet4 = FeatureFusionBlock(widths[3], expand=True)
        self.refinenet3 = FeatureFusionBlock(widths[2], expand=True)
        self.refinenet2 = FeatureFusionBlock(widths[1], expand=True)
        self.refinenet1 = FeatureFusionBlock(widths[0], expand=False)
        self.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            Interpolate(2.0, "bilinear"),
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(),  # non_negative=True
            nn.Identity(),
        )


class MidasSmall(nn.Module):
    """MiDaS v2.1 small: ``(N, 3, h, w)`` normalised RGB, h and w multiples of 32 -> ``(N, h, w)``
    relative inverse depth (larger = nearer)."""

    def __init__(self, features: int = 64) -> None:
        super().__init__()
        self.pretrained = Encoder()
        self.scratch = Decoder(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer_1 = self.pretrained.layer1(x)
        layer_2 = self.pretrained.layer2(layer_1)
        layer_3 = self.pretrained.layer3(layer_2)
        layer_4 = self.pretrained.layer4(layer_3)

        s = self.scratch
        path_4 = s.refinenet4(s.layer4_rn(layer_4))
        path_3 = s.refinenet3(path_4, s.layer3_rn(layer_3))
        path_2 = s.refinenet2(path_3, s.layer2_rn(layer_2))
        path_1 = s.refinenet1(path_2, s.layer1_rn(layer_1))
        return torch.squeeze(s.output_conv(path_1), dim=1)
