"""ImageNet ResNet-18/34/50, parameter-for-parameter torchvision's `resnet18/34/50`: the state_dict keys
and shapes are identical, so torchvision's ImageNet checkpoints load with `strict=True`."""
from __future__ import annotations

from torch import nn

from .registry import register_model
from .resnet_body import BasicBlock, Bottleneck, ResNet

WIDTHS = (64, 128, 256, 512)


def imagenet_resnet(block: type[BasicBlock | Bottleneck], depths: tuple[int, ...], num_classes: int) -> nn.Module:
    """7x7 stride-2 stem with 3x3 stride-2 max-pool, four stages; 7x7 final maps on 224x224."""
    return ResNet(
        block, depths, WIDTHS, num_classes, stem_channels=64, stem_kernel=7, stem_stride=2, stem_pool=True
    )


@register_model("imagenet", "ResNet18")
def resnet18(num_classes: int) -> nn.Module:
    """ResNet-18: basic blocks 2/2/2/2."""
    return imagenet_resnet(BasicBlock, (2, 2, 2, 2), num_classes)


@register_model("imagenet", "ResNet34")
def resnet34(num_classes: int) -> nn.Module:
    """ResNet-34: basic blocks 3/4/6/3."""
    return imagenet_resnet(BasicBlock, (3, 4, 6, 3), num_classes)


@register_model("imagenet", "ResNet50")
def resnet50(num_classes: int) -> nn.Module:
    """ResNet-50: bottleneck blocks 3/4/6/3."""
    return imagenet_resnet(Bottleneck, (3, 4, 6, 3), num_classes)
