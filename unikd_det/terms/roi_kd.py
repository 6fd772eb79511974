"""KD on ROI-head classification logits (DISTILL.ROI): Hinton KL or decoupled KD.

Teacher logits are the teacher box head applied to the student's sampled proposals, so both
distributions describe the same boxes; background is class index K like in the ROI head's own loss.
"""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec

from ..config import ROI_BACKGROUND_MODES, ROI_LOSSES
from unikd.core import dkd_loss, kd_loss
from unikd.core.checks import check_choice
from .base import DISTILL_TERM_REGISTRY, DistillContext, DistillTerm


@DISTILL_TERM_REGISTRY.register()
class ROIDistill(DistillTerm):
    """`loss_kd_roi` = WEIGHT * KL or DKD between student and teacher ROI class logits."""

    CONFIG_NODE = "ROI"

    def __init__(self, cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]):
        super().__init__()
        node = cfg.DISTILL.ROI
        self.loss = check_choice("DISTILL.ROI.LOSS", node.LOSS, ROI_LOSSES)
        self.bg_mode = check_choice("DISTILL.ROI.BG_MODE", node.BG_MODE, ROI_BACKGROUND_MODES)
        self.weight = node.WEIGHT
        self.temperature = node.TEMPERATURE
        self.dkd_alpha = node.DKD_ALPHA
        self.dkd_beta = node.DKD_BETA
        self.background_class = cfg.MODEL.ROI_HEADS.NUM_CLASSES

    def forward(self, ctx: DistillContext) -> dict[str, torch.Tensor]:
        logits_s, logits_t, target = ctx.student_logits, ctx.teacher_logits, ctx.gt_classes
        if self.bg_mode == "fg":
            keep = target != self.background_class
            if not keep.any():
                return {"loss_kd_roi": logits_s.sum() * 0.0}
            logits_s, logits_t, target = logits_s[keep], logits_t[keep], target[keep]
        if self.loss == "kl":
            loss = kd_loss(logits_s, logits_t, self.temperature)
        else:
            loss = dkd_loss(logits_s, logits_t, target, self.dkd_alpha, self.dkd_beta, self.temperature)
        return {"loss_kd_roi": self.weight * loss}
