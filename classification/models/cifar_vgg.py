"""CIFAR VGG with BatchNorm as in the CRD benchmark: five blocks of 3x3 conv-BN-ReLU layers, widths
64/128/256/512/512, global average pooling and a single Linear(512, classes).

Block 0 is the stem, blocks 1-4 are the stages. A 2x2 max-pool precedes blocks 1, 2 and 3; on 32x32
inputs the benchmark skips the pool before block 4 (it applies it only to 64x64 inputs), so the last
two blocks both work on 4x4 maps and `feats` has sizes 32/16/8/4/4.
"""
from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from .layers import ConvNormAct, classify_stages, init_weights, run_stage
from .registry import ModelOutput, declare_features, register_model

WIDTHS = (64, 128, 256, 512, 512)
CONVS_PER_BLOCK = {
    "vgg8": (1, 1, 1, 1, 1),
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
POOLED_BLOCKS = (1, 2, 3)  # blocks that start with a 2x2 max-pool


class VGG(nn.Module):
    """Conv-BN-ReLU blocks; `preact_feats` are each block's last BN output before its ReLU."""

    def __init__(self, convs_per_block: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        blocks, channels, reductions, reduction = [], 3, [], 1  # stride-1 convs; a pooled block halves first
        for index, (convs, width) in enumerate(zip(convs_per_block, WIDTHS)):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if index in POOLED_BLOCKS else []
            reduction *= 2 if index in POOLED_BLOCKS else 1
            reductions.append(reduction)
            for _ in range(convs):
                layers.append(ConvNormAct(channels, width))
                channels = width
            blocks.append(nn.Sequential(*layers))
        self.stem = blocks[0]
        self.stages = nn.ModuleList(blocks[1:])
        self.classifier = nn.Linear(channels, num_classes)
        self.feature_info = declare_features(WIDTHS, reductions, preact=True)
        self.pooled_channels = channels
        init_weights(self)

    def forward(self, x: Tensor) -> ModelOutput:
        return classify_stages(run_stage(self.stem, x), self.stages, self.classifier)


for _name, _convs in CONVS_PER_BLOCK.items():
    register_model("cifar", _name)(partial(VGG, _convs))
