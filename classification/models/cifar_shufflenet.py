"""ShuffleNet V1 (Zhang et al. 2018) and V2 (Ma et al. 2018), CIFAR variants of the CRD benchmark:
stride-1 stem without max-pool, three stages that each halve the resolution (32 -> 16 -> 8 -> 4).

`preact_feats` are the maps just before each stage's final ReLU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNormAct, PreactBlock, classify_stages, init_weights
from .registry import ModelOutput, declare_features, register_model


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of `groups` equal groups, so grouped layers mix information."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class ShuffleV1Unit(PreactBlock):
    """Grouped 1x1 -> channel shuffle -> 3x3 depthwise -> grouped 1x1, added to the input; a
    stride-2 unit instead concatenates its branch with the 3x3/2 average-pooled input, so the branch
    produces only `out_channels - in_channels` channels. As in the benchmark, the depthwise conv is
    followed by a ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        branch_channels = out_channels - in_channels if stride == 2 else out_channels
        mid = branch_channels // 4
        self.first_groups = first_groups
        self.reduce = ConvNormAct(in_channels, mid, 1, groups=first_groups)
        self.depthwise = ConvNormAct(mid, mid, 3, stride, groups=mid)
        self.expand = ConvNormAct(mid, branch_channels, 1, groups=groups, act=nn.Identity)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = channel_shuffle(self.reduce(x), self.first_groups)
        out = self.expand(self.depthwise(out))
        preact = out + x if self.pool is None else torch.cat([out, self.pool(x)], 1)
        return F.relu(preact), preact


class ShuffleNetV1(nn.Module):
    """ShuffleNet V1, g = 3: 1x1 stem to 24 channels, stages of 4/8/4 units with 240/480/960 outputs."""

    def __init__(self, num_classes: int, groups: int = 3) -> None:
        super().__init__()
        stem_channels, widths, depths = 24, (240, 480, 960), (4, 8, 4)
        self.stem = ConvNormAct(3, stem_channels, 1)
        channels, stages, reductions = stem_channels, [], [1]  # stride-1 stem; each stage's first unit halves
        for index, (width, depth) in enumerate(zip(widths, depths)):
            # The first unit reads only 24 channels: its first 1x1 conv is not grouped.
            units = [ShuffleV1Unit(channels, width, 2, groups, 1 if index == 0 else groups)]
            units += [ShuffleV1Unit(width, width, 1, groups, groups) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*units))
            channels = width
            reductions.append(reductions[-1] * 2)
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(channels, num_classes)
        self.feature_info = declare_features([stem_channels, *widths], reductions, preact=True)
        self.pooled_channels = channels
        init_weights(self)

    def forward(self, x: Tensor) -> ModelOutput:
        return classify_stages(self.stem.forward_preact(x), self.stages, self.fc)


class ShuffleV2Unit(PreactBlock):
    """Stride 1: split the channels in half, keep one half, transform the other (1x1, 3x3 depthwise,
    1x1). Stride 2: both halves come from the whole input, the kept one through a strided depthwise
    3x3 and a 1x1. Then concatenate, ReLU and shuffle the two halves.

    The ReLU is applied after the concatenation (and the shuffle, which commutes with it): the kept
    half of a stride-1 unit is a previous unit's ReLU output, hence unchanged by it, so this equals
    the paper's unit while giving a pre-activation map aligned channel for channel with the output.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        half = out_channels // 2
        if stride == 1:
            if in_channels != out_channels:
                raise ValueError("a stride-1 ShuffleNetV2 unit keeps its channel count")
            self.kept = None
            branch_in = in_channels // 2
        else:
            self.kept = nn.Sequential(
                ConvNormAct(in_channels, in_channels, 3, stride, groups=in_channels, act=nn.Identity),
                ConvNormAct(in_channels, half, 1, act=nn.Identity),
            )
            branch_in = in_channels
        self.branch = nn.Sequential(
            ConvNormAct(branch_in, half, 1),
            ConvNormAct(half, half, 3, stride, groups=half, act=nn.Identity),
            ConvNormAct(half, half, 1, act=nn.Identity),
        )

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.kept is None:
            kept, x = x.chunk(2, dim=1)
        else:
            kept = self.kept(x)
        preact = channel_shuffle(torch.cat([kept, self.branch(x)], 1), 2)
        return F.relu(preact), preact


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 1x: 3x3 stride-1 stem to 24 channels, stages of 4/8/4 units with 116/232/464
    outputs, a 1x1 conv to 1024 channels, pool, fc. `feats` end at the 464-channel stage output;
    `pooled` is the pooled 1024-channel map."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        stem_channels, widths, depths, head_channels = 24, (116, 232, 464), (4, 8, 4), 1024
        self.stem = ConvNormAct(3, stem_channels, 3)
        channels, stages, reductions = stem_channels, [], [1]  # stride-1 stem; each stage's first unit halves
        for width, depth in zip(widths, depths):
            units = [ShuffleV2Unit(channels, width, 2)]
            units += [ShuffleV2Unit(width, width, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*units))
            channels = width
            reductions.append(reductions[-1] * 2)
        self.stages = nn.ModuleList(stages)
        self.head = ConvNormAct(channels, head_channels, 1)
        self.fc = nn.Linear(head_channels, num_classes)
        self.feature_info = declare_features([stem_channels, *widths], reductions, preact=True)
        self.pooled_channels = head_channels
        init_weights(self)

    def forward(self, x: Tensor) -> ModelOutput:
        return classify_stages(self.stem.forward_preact(x), self.stages, self.fc, self.head)


register_model("cifar", "ShuffleV1")(ShuffleNetV1)
register_model("cifar", "ShuffleV2")(ShuffleNetV2)
