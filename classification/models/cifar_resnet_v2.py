"""CIFAR ResNet-50 (the CRD benchmark's "resnetv2"): bottleneck stages 3/4/6/3 of widths
64/128/256/512 (x4 output), after a 3x3 stride-1 64-channel stem without max-pool."""
from __future__ import annotations

from torch import nn

from .registry import register_model
from .resnet_body import Bottleneck, ResNet


@register_model("cifar", "ResNet50")
def cifar_resnet50(num_classes: int) -> nn.Module:
    """Bottleneck ResNet-50 for 32x32 inputs; the last stage works on 4x4 maps."""
    return ResNet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), num_classes, stem_channels=64)
