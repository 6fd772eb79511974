"""CIFAR MobileNetV2 of the CRD benchmark ("mobile_half"): width multiplier 0.5, expansion 6, ReLU
activations, stride-2 stem and a second block group kept at stride 1, so 32x32 inputs end on 2x2 maps.

Channels are the full-width ones times 0.5 truncated to integers (no rounding to multiples of 8), the
head stays at 1280 channels, and blocks of expansion 1 keep their 1x1 expansion conv, as in the
benchmark; `feats` have 16/12/16/48/160 channels at 16/16/8/4/2 pixels.
"""
from __future__ import annotations

from torch import nn

from .mobilenetv2_body import MobileNetV2
from .registry import register_model

WIDTH = 0.5
EXPANSION = 6
# (expansion, full-width channels, blocks, first stride)
FULL_WIDTH_SETTINGS = (
    (1, 16, 1, 1),
    (EXPANSION, 24, 2, 1),
    (EXPANSION, 32, 3, 2),
    (EXPANSION, 64, 4, 2),
    (EXPANSION, 96, 3, 1),
    (EXPANSION, 160, 3, 2),
    (EXPANSION, 320, 1, 1),
)


@register_model("cifar", "MobileNetV2")
def mobilenetv2_half(num_classes: int) -> nn.Module:
    """MobileNetV2 x0.5 for 32x32 inputs (about 0.81M parameters for 100 classes)."""
    settings = [(t, int(c * WIDTH), n, s) for t, c, n, s in FULL_WIDTH_SETTINGS]
    return MobileNetV2(
        settings,
        num_classes,
        stem_channels=int(32 * WIDTH),
        head_channels=1280,
        act=nn.ReLU,
        expand_unit_ratio=True,
        dropout=0.0,
    )
