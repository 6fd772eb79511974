"""FitNet on FPN levels (DISTILL.FITNET): a 1x1 adapter per level regresses the student's map onto the
teacher's, L = WEIGHT * sum over IN_FEATURES of mean (adapter(s) - t)^2 (Romero et al., hint loss)."""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec

from unikd.core import hint_loss
from .base import DISTILL_TERM_REGISTRY, DistillContext, DistillTerm, check_in_features, level_adapters


@DISTILL_TERM_REGISTRY.register()
class FitNetDistill(DistillTerm):
    """Returns `loss_fitnet`, already weighted."""

    CONFIG_NODE = "FITNET"

    def __init__(self, cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]):
        super().__init__()
        node = cfg.DISTILL.FITNET
        self.in_features = check_in_features("DISTILL.FITNET.IN_FEATURES", node.IN_FEATURES, student_shapes, teacher_shapes)
        self.adapters = level_adapters(self.in_features, student_shapes, teacher_shapes, kernel_size=1)
        self.weight = node.WEIGHT

    def forward(self, ctx: DistillContext) -> dict[str, torch.Tensor]:
        loss = sum(
            hint_loss(self.adapters[f](ctx.student_features[f]), ctx.teacher_features[f]) for f in self.in_features
        )
        return {"loss_fitnet": self.weight * loss}
