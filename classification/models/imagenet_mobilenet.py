"""ImageNet MobileNetV1 (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018), width 1.0.

MobileNetV2 is parameter-for-parameter torchvision's `mobilenet_v2` (ReLU6, dropout 0.2), so its
ImageNet checkpoint loads with `strict=True`. MobileNetV1 is the standard 13-block network; its stages
are the runs of blocks at one resolution, giving `feats` of 32/64/128/256/512/1024 channels at
112/112/56/28/14/7 pixels for 224x224 inputs.
"""
from __future__ import annotations

from torch import Tensor, nn

from .layers import ConvNormAct, PreactBlock, classify_stages, init_weights
from .mobilenetv2_body import MobileNetV2
from .registry import ModelOutput, declare_features, register_model

# MobileNetV1 stages: (output channels, blocks); each stage after the first starts with stride 2.
V1_STAGES = ((64, 1), (128, 2), (256, 2), (512, 6), (1024, 2))
V2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class DepthwiseSeparable(PreactBlock):
    """3x3 depthwise conv-BN-ReLU then 1x1 pointwise conv-BN-ReLU; preact is the pointwise BN output."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvNormAct(in_channels, out_channels, 1)

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.pointwise.forward_preact(self.depthwise(x))


class MobileNetV1(nn.Module):
    """3x3 stride-2 stem to 32 channels, 13 depthwise-separable blocks, global pool, fc (1024-d)."""

    def __init__(self, num_classes: int, stem_channels: int = 32) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, stem_channels, 3, 2)
        channels, stages, reductions = stem_channels, [], [2]  # stride-2 stem
        for index, (width, blocks) in enumerate(V1_STAGES):
            stride = 1 if index == 0 else 2
            stage = [DepthwiseSeparable(channels, width, stride)]
            stage += [DepthwiseSeparable(width, width, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels = width
            reductions.append(reductions[-1] * stride)
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(channels, num_classes)
        self.feature_info = declare_features([stem_channels] + [width for width, _ in V1_STAGES], reductions,
                                             preact=True)
        self.pooled_channels = channels
        init_weights(self)

    def forward(self, x: Tensor) -> ModelOutput:
        return classify_stages(self.stem.forward_preact(x), self.stages, self.fc)


register_model("imagenet", "MobileNetV1")(MobileNetV1)


@register_model("imagenet", "MobileNetV2")
def mobilenetv2(num_classes: int) -> nn.Module:
    """torchvision-compatible MobileNetV2 1.0 (3.50M parameters for 1000 classes)."""
    return MobileNetV2(
        V2_SETTINGS,
        num_classes,
        stem_channels=32,
        head_channels=1280,
        act=nn.ReLU6,
        expand_unit_ratio=False,
        dropout=0.2,
    )
