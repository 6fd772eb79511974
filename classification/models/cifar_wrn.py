"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016): pre-activation blocks, WRN-d-k with
(d - 4) / 6 blocks per stage and widths 16, 16k, 32k, 64k, no dropout (as in the CRD benchmark).

In a pre-activation network the BN-ReLU that activates a stage's output sits at the start of the next
stage's first block (after the last stage: the network's final BN-ReLU). The model applies that BN-ReLU
itself at each stage boundary, once, and hands the activated map to the next block. So `feats` are
the activated maps relu(bn(x)) that the following layers really read, and `preact_feats` the BN
outputs just before that ReLU; the stem entry is the stem conv activated by the first block's BN-ReLU.
"""
from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import global_pool, init_weights
from .registry import ModelOutput, declare_features, register_model


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut; a width or stride change projects the
    activated input with a 1x1 conv, otherwise the raw input is added."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_activated(x, F.relu(self.bn1(x)))

    def forward_activated(self, x: Tensor, activated: Tensor) -> Tensor:
        """The block's output given its input `x` and `activated` = relu(self.bn1(x))."""
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-depth-widen for 32x32 inputs: 3x3 stem conv, three pre-activation stages, BN-ReLU, pool, fc."""

    def __init__(self, depth: int, widen: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = _conv3x3(3, 16)
        channels, stages, reductions = 16, [], [1]  # stride-1 stem conv
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            stage = [PreActBlock(channels, width, stride)]
            stage += [PreActBlock(width, width, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels = width
            reductions.append(reductions[-1] * stride)
        self.stages = nn.ModuleList(stages)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        self.feature_info = declare_features([16, *widths], reductions, preact=True)
        self.pooled_channels = channels
        init_weights(self)

    def forward(self, x: Tensor) -> ModelOutput:
        out = self.conv1(x)
        # The BN of the ReLU that activates each map: the next stage's first bn1, then the final bn.
        boundary_norms = [stage[0].bn1 for stage in self.stages] + [self.bn]
        preact = boundary_norms[0](out)
        activated = F.relu(preact)
        feats, preacts = [activated], [preact]
        for stage, norm in zip(self.stages, boundary_norms[1:]):
            out = stage[0].forward_activated(out, activated)
            for block in stage[1:]:
                out = block(out)
            preact = norm(out)
            activated = F.relu(preact)
            feats.append(activated)
            preacts.append(preact)
        pooled = global_pool(activated)
        return ModelOutput(self.fc(pooled), feats, pooled, preacts)


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register_model("cifar", f"wrn_{_depth}_{_widen}")(partial(WideResNet, _depth, _widen))
