"""MobileNetV2 (Sandler et al. 2018) shared by the CIFAR and ImageNet families.

Parameter names follow torchvision's `mobilenet_v2` (`features.N...`, `classifier.1`). The families
differ in their block settings, the activation, and whether a block of expansion 1 keeps its 1x1
expansion conv (the CRD benchmark's CIFAR variant keeps it, torchvision drops it).

The stages are the runs of blocks at one resolution: `feats` are the stem output and the output of the
last block at each resolution. Those are linear-bottleneck outputs (no activation), so there are no
pre-activation maps and `preact_feats` is None; the 1x1 head conv feeds `pooled` only.
"""
from __future__ import annotations

import itertools
import operator
from typing import Sequence

from torch import Tensor, nn

from .layers import ConvNormAct, global_pool, init_weights
from .registry import ModelOutput, declare_features

# (expansion t, output channels c, blocks n, first stride s) per group of blocks
BlockSetting = tuple[int, int, int, int]


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; identity shortcut when shapes allow."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expansion: int,
        act: type[nn.Module],
        expand_unit_ratio: bool,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1 or expand_unit_ratio:
            layers.append(ConvNormAct(in_channels, hidden, 1, act=act))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act=act),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Stride-2 3x3 stem, inverted-residual blocks, 1x1 head conv, global pool, dropout, linear.

    `settings` lists (expansion, channels, blocks, first stride) per group of blocks, channels already
    scaled; `act` is the activation class (ReLU or ReLU6); `expand_unit_ratio` keeps the 1x1 expansion
    conv in blocks of expansion 1; `dropout` is the rate before the classifier (0 disables it).
    """

    def __init__(
        self,
        settings: Sequence[BlockSetting],
        num_classes: int,
        stem_channels: int,
        head_channels: int,
        act: type[nn.Module],
        expand_unit_ratio: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormAct(3, stem_channels, 3, 2, act=act)]
        strides, widths = [2], [stem_channels]  # per entry of `layers`
        for expansion, out_channels, blocks, first_stride in settings:
            for position in range(blocks):
                stride = first_stride if position == 0 else 1
                block = InvertedResidual(widths[-1], out_channels, stride, expansion, act, expand_unit_ratio)
                layers.append(block)
                strides.append(stride)
                widths.append(out_channels)
        last = len(layers) - 1
        # Tapped: the stem, the last block before each strided one, and the last block.
        self.tapped = (0, *(index for index in range(1, last) if strides[index + 1] > 1), last)
        layers.append(ConvNormAct(widths[-1], head_channels, 1, act=act))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_channels, num_classes))
        reductions = list(itertools.accumulate(strides, operator.mul))
        self.feature_info = declare_features([widths[i] for i in self.tapped], [reductions[i] for i in self.tapped],
                                             preact=False)
        self.pooled_channels = head_channels
        init_weights(self)

    def forward(self, x: Tensor) -> ModelOutput:
        feats = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.tapped:
                feats.append(x)
        pooled = global_pool(x)
        return ModelOutput(self.classifier(pooled), feats, pooled, None)
