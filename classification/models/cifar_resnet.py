"""CIFAR ResNets with basic blocks (He et al. 2016, section 4.2), depth 6n + 2, and the 4x-wide
`resnet8x4` / `resnet32x4` of the CRD benchmark (stem 32, stages 64/128/256)."""
from __future__ import annotations

from functools import partial

from torch import nn

from .registry import register_model
from .resnet_body import BasicBlock, ResNet

NARROW = (16, (16, 32, 64))  # (stem channels, stage widths)
WIDE = (32, (64, 128, 256))


def cifar_resnet(depth: int, stem_channels: int, widths: tuple[int, ...], num_classes: int) -> nn.Module:
    """Three stages of (depth - 2) / 6 basic blocks after a 3x3 stride-1 stem; 8x8 final maps on 32x32."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
    blocks = (depth - 2) // 6
    return ResNet(BasicBlock, [blocks] * 3, widths, num_classes, stem_channels)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    register_model("cifar", f"resnet{_depth}")(partial(cifar_resnet, _depth, *NARROW))
for _depth in (8, 32):
    register_model("cifar", f"resnet{_depth}x4")(partial(cifar_resnet, _depth, *WIDE))
