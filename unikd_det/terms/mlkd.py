"""Multi-level logit distillation on ROI logits (DISTILL.MLKD): instance-, class- and batch-level
alignment of the student's and teacher's ROI class distributions over several temperatures
(`unikd_det.core.mlkd_loss`). An ROI has a single view, so the strong view of the classification
recipe is the same logits: the instance term then counts (1 + sample-mask fraction) times per temperature.
"""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec

from ..core import mlkd_loss
from ..core.mlkd import check_temperatures
from .base import DISTILL_TERM_REGISTRY, DistillContext, DistillTerm


@DISTILL_TERM_REGISTRY.register()
class MLKDDistill(DistillTerm):
    """Returns `loss_mlkd_kd`, `loss_mlkd_cc` and `loss_mlkd_bc`, each already weighted."""

    CONFIG_NODE = "MLKD"

    def __init__(self, cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]):
        super().__init__()
        node = cfg.DISTILL.MLKD
        self.temperatures = check_temperatures("DISTILL.MLKD.TEMPERATURES", node.TEMPERATURES)
        self.weight = node.WEIGHT

    def forward(self, ctx: DistillContext) -> dict[str, torch.Tensor]:
        logits_s, logits_t = ctx.student_logits, ctx.teacher_logits
        losses = mlkd_loss(
            logits_s, logits_s, logits_t, logits_t, self.temperatures, ("weak",) * len(self.temperatures), self.weight
        )
        return {name.replace("loss_", "loss_mlkd_", 1): value for name, value in losses.items()}
