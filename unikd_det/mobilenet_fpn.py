"""MobileNetV2-FPN: a MobileNetV2 (Sandler et al., CVPR 2018) bottom-up feeding Detectron2's FPN (p2..p6).

The bottom-up network keeps torchvision's module names (`features.<i>...`), so a torchvision ImageNet
checkpoint loads with a prefix change only (tools/convert_torchvision_to_d2.py). Its four outputs mirror
the ResNet-FPN's `res2..res5` (strides 4, 8, 16, 32; 24, 32, 96 and 320 channels at width 1.0), so the
stock `MODEL.FPN.IN_FEATURES` apply; torchvision's final 1x1 conv to 1280 channels is a classifier part
and is left out. `MODEL.MOBILENETV2.NORM` picks FrozenBN / BN / SyncBN, and `MODEL.BACKBONE.FREEZE_AT`
freezes the stem (1) and then whole stages (2: up to res2, ...), as for the ResNets.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import Tensor, nn

# (expansion t, output channels c, repeats n, first stride s) of each bottleneck group (paper Table 2)
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
# index in `features` of the last block of each output stage (torchvision numbering; 0 is the stem)
STAGE_ENDS = {"res2": 3, "res3": 6, "res4": 13, "res5": 17}
STAGE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def add_mobilenetv2_config(cfg: CN) -> None:
    """Add `MODEL.MOBILENETV2` (NORM, WIDTH_MULT, OUT_FEATURES) to `cfg`, in place."""
    cfg.MODEL.MOBILENETV2 = CN()
    cfg.MODEL.MOBILENETV2.NORM = "FrozenBN"
    cfg.MODEL.MOBILENETV2.WIDTH_MULT = 1.0
    cfg.MODEL.MOBILENETV2.OUT_FEATURES = ["res2", "res3", "res4", "res5"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """The channel rounding of the MobileNet papers: nearest multiple of `divisor`, never 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_norm_relu6(in_channels: int, out_channels: int, kernel: int, stride: int, groups: int, norm: str) -> nn.Sequential:
    """conv (no bias) + norm + ReLU6; children named 0, 1, 2 as in torchvision's Conv2dNormActivation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        get_norm(norm, out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1, unless t = 1), depthwise 3x3 with the stride, linear 1x1 projection; residual when shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, norm: str) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_norm_relu6(in_channels, hidden, 1, 1, 1, norm))
        layers += [
            conv_norm_relu6(hidden, hidden, 3, stride, hidden, norm),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            get_norm(norm, out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(Backbone):
    """The MobileNetV2 bottom-up network: `features` 0 (stem) to 17, outputs named res2..res5."""

    def __init__(self, norm: str = "FrozenBN", width_mult: float = 1.0, out_features: list[str] | None = None,
                 freeze_at: int = 0) -> None:
        super().__init__()
        out_features = list(out_features or STAGE_ENDS)
        unknown = set(out_features) - set(STAGE_ENDS)
        if unknown:
            raise ValueError(f"MODEL.MOBILENETV2.OUT_FEATURES: unknown {sorted(unknown)}; choose from {list(STAGE_ENDS)}")
        channels = make_divisible(32 * width_mult)
        blocks: list[nn.Module] = [conv_norm_relu6(3, channels, 3, 2, 1, norm)]
        block_channels = [channels]
        for expansion, out, repeats, stride in INVERTED_RESIDUAL_SETTING:
            out = make_divisible(out * width_mult)
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out, stride if i == 0 else 1, expansion, norm))
                channels = out
                block_channels.append(out)
        self.features = nn.Sequential(*blocks)
        self._out_features = out_features
        self._output_after = {STAGE_ENDS[name]: name for name in out_features}  # block index -> output name
        self._out_feature_channels = {name: block_channels[STAGE_ENDS[name]] for name in out_features}
        self._out_feature_strides = {name: STAGE_STRIDES[name] for name in out_features}
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> "MobileNetV2":
        """Freeze the stem (freeze_at >= 1) and the stages up to res<freeze_at> (>= 2): no grad, FrozenBN."""
        if freeze_at <= 0:
            return self
        ends = [0] + list(STAGE_ENDS.values())
        last = ends[min(freeze_at, len(ends)) - 1]
        for index in range(last + 1):
            block = self.features[index]
            for p in block.parameters():
                p.requires_grad_(False)
            self.features[index] = FrozenBatchNorm2d.convert_frozen_batchnorm(block)
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs = {}
        for index, block in enumerate(self.features[: max(self._output_after) + 1]):
            x = block(x)
            if index in self._output_after:
                outputs[self._output_after[index]] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_fpn_backbone(cfg: CN, input_shape: ShapeSpec) -> Backbone:
    """MobileNetV2 + FPN with p6 from max-pooling p5 (p2..p6, like build_resnet_fpn_backbone)."""
    if input_shape.channels != 3:
        raise ValueError(f"MobileNetV2-FPN expects 3-channel images, got {input_shape.channels}")
    node = cfg.MODEL.MOBILENETV2
    bottom_up = MobileNetV2(node.NORM, node.WIDTH_MULT, list(node.OUT_FEATURES), cfg.MODEL.BACKBONE.FREEZE_AT)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
