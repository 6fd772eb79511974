"""Knowledge review on FPN levels (DISTILL.REVIEWKD): the student's levels, finest first, pass through
the ABF chain (`unikd.core.ReviewFusion`) and each output is matched to the teacher's level by HCL.
L = WEIGHT * sum over levels HCL(O_i, T_i); the authors' detection weights are 1.2 (R18 student),
1.0 (R50) and 2.0 (MobileNetV2), with 256 mixed channels and pools 4, 2, 1."""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec

from unikd.core import ReviewFusion, hcl_loss
from .base import DISTILL_TERM_REGISTRY, DistillContext, DistillTerm, check_in_features


@DISTILL_TERM_REGISTRY.register()
class ReviewKDDistill(DistillTerm):
    """Returns `loss_reviewkd`, already weighted."""

    CONFIG_NODE = "REVIEWKD"

    def __init__(self, cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]):
        super().__init__()
        node = cfg.DISTILL.REVIEWKD
        self.in_features = check_in_features("DISTILL.REVIEWKD.IN_FEATURES", node.IN_FEATURES, student_shapes, teacher_shapes)
        self.fusion = ReviewFusion(
            [student_shapes[f].channels for f in self.in_features],
            [teacher_shapes[f].channels for f in self.in_features],
            node.MID_CHANNELS,
        )
        self.pool_sizes = tuple(node.POOL_SIZES)
        self.weight = node.WEIGHT

    def forward(self, ctx: DistillContext) -> dict[str, torch.Tensor]:
        fused = self.fusion([ctx.student_features[f] for f in self.in_features])
        loss = hcl_loss(fused, [ctx.teacher_features[f] for f in self.in_features], self.pool_sizes)
        return {"loss_reviewkd": self.weight * loss}
