"""Post-activation ResNet (basic and bottleneck blocks) shared by the CIFAR and ImageNet families.

Parameter names follow torchvision's ResNet (`conv1`, `bn1`, `layer1..N`, `downsample`, `fc`), so the
ImageNet models load torchvision checkpoints strictly; the CIFAR variants differ only in the stem
(3x3 stride 1, no max-pool) and the stage widths.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import PreactBlock, global_pool, init_weights, run_stages
from .registry import ModelOutput, declare_features


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """Projection shortcut (1x1 conv + BN) where the identity does not fit, else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(PreactBlock):
    """Two 3x3 convs (the first strided) plus shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _downsample(in_channels, width, stride)

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)  # in place: nothing else reads the BN output
        out = self.bn2(self.conv2(out))
        preact = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(preact), preact


class Bottleneck(PreactBlock):
    """1x1 reduce, 3x3 (strided, as in torchvision's "ResNet v1.5"), 1x1 expand by 4, plus shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv(in_channels, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)  # in place: nothing else reads the BN outputs
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        preact = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(preact), preact


class ResNet(nn.Module):
    """Stem conv-BN-ReLU (+ optional 3x3/2 max-pool), stages `layer1..N`, global pool, `fc`.

    The first stage keeps the resolution, every later one halves it in its first block. `feats[0]` is
    the stem output after its ReLU and before the max-pool; every stage's preact is its last block's
    residual sum before the final ReLU.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        stem_channels: int,
        stem_kernel: int = 3,
        stem_stride: int = 1,
        stem_pool: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = _conv(3, stem_channels, stem_kernel, stem_stride)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        channels = stem_channels
        feat_channels, reduction = [stem_channels], stem_stride
        reductions = [reduction]
        reduction *= 2 if stem_pool else 1  # the 3x3/2 max-pool between the stem and layer1
        for index, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for position in range(depth):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
                reduction *= stride
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            feat_channels.append(channels)
            reductions.append(reduction)
        self.feature_info = declare_features(feat_channels, reductions, preact=True)
        self.num_stages = len(depths)
        self.pooled_channels = channels
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> ModelOutput:
        preact = self.bn1(self.conv1(x))
        out = F.relu(preact)
        stages = [getattr(self, f"layer{index}") for index in range(1, self.num_stages + 1)]
        outs, preacts = run_stages(stages, self.maxpool(out))
        pooled = global_pool(outs[-1])
        return ModelOutput(self.fc(pooled), [out, *outs], pooled, [preact, *preacts])
