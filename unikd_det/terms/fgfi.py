"""Fine-grained feature imitation (DISTILL.FGFI) on the RPN's FPN levels.

The near-object mask needs the anchors, so the term imitates exactly the levels of MODEL.RPN.IN_FEATURES
and lays anchors out with the student's own anchor-generator config. Each level has a 3x3 adaptation
conv (the paper's full-conv adaptation layer); the loss is `unikd.core.fgfi`'s L_imitation.

Official code: twangnh/Distilling-Object-Detectors (`trainval_net_sup.py`, `lib/model/faster_rcnn/vgg11.py`).
As there, the adapter weights start tiny (`INIT_STD`, 1e-4) and imitation has weight 0 for the first
`START_ITER` (400) iterations. Necessary deviation: the official adapter is conv + ReLU because it imitates
a post-ReLU VGG conv5 map; FPN outputs are signed, so a ReLU would keep the adapter from matching the
teacher's negative values and the adapter here is the conv alone.
"""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from torch import nn

from unikd.core.fgfi import check_threshold_factor, masked_imitation_loss, near_object_masks
from .base import DISTILL_TERM_REGISTRY, DistillContext, DistillTerm, check_in_features, level_adapters


def init_adapter_weight(conv: nn.Conv2d, std: float) -> None:
    """Official FGFI adapter init (trainval_net_sup.py, `normal_init(..., truncated=True)`): standard normal
    samples folded into (-2, 2) with fmod, scaled by `std`; the bias keeps PyTorch's default. `std` 0 leaves
    PyTorch's default weights."""
    if std > 0:
        with torch.no_grad():
            conv.weight.copy_(torch.fmod(torch.randn_like(conv.weight), 2.0) * std)


@DISTILL_TERM_REGISTRY.register()
class FGFIDistill(DistillTerm):
    """Returns `loss_fgfi` = WEIGHT * L_imitation over the near-object locations (DistillRCNN applies
    `start_iter`)."""

    CONFIG_NODE = "FGFI"

    def __init__(self, cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]):
        super().__init__()
        node = cfg.DISTILL.FGFI
        self.in_features = check_in_features("MODEL.RPN.IN_FEATURES", cfg.MODEL.RPN.IN_FEATURES, student_shapes, teacher_shapes)
        self.anchor_generator = build_anchor_generator(cfg, [student_shapes[f] for f in self.in_features])
        self.adapters = level_adapters(self.in_features, student_shapes, teacher_shapes, kernel_size=3)
        for adapter in self.adapters.values():
            init_adapter_weight(adapter, node.INIT_STD)
        self.start_iter = node.START_ITER
        self.threshold_factor = check_threshold_factor("DISTILL.FGFI.THRESHOLD_FACTOR", node.THRESHOLD_FACTOR)
        self.weight = node.WEIGHT

    @torch.no_grad()
    def masks(self, ctx: DistillContext) -> list[torch.Tensor]:
        """Near-object masks [N, H, W] per level for the batch."""
        features = [ctx.student_features[f] for f in self.in_features]
        anchors = [boxes.tensor for boxes in self.anchor_generator(features)]
        sizes = [tuple(x.shape[-2:]) for x in features]
        per_image = [near_object_masks(gt.tensor, anchors, sizes, self.threshold_factor) for gt in ctx.gt_boxes]
        return [torch.stack(level) for level in zip(*per_image)]

    def forward(self, ctx: DistillContext) -> dict[str, torch.Tensor]:
        adapted = [self.adapters[f](ctx.student_features[f]) for f in self.in_features]
        targets = [ctx.teacher_features[f] for f in self.in_features]
        return {"loss_fgfi": self.weight * masked_imitation_loss(adapted, targets, self.masks(ctx))}
