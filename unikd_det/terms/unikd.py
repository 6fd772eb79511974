"""UniKD on a two-stage detector (DISTILL.UNIKD).

Each network's FPN levels (`IN_FEATURES`, finest to coarsest) are fused by its own AFF to the finest
level; both fused maps are ROI-aligned on the same boxes, the student's sampled proposals, and the
shared FDP predicts a diagonal Gaussian over K = NUM_CLASSES + 1, the ROI head's logit dimension.
The teacher-side Gaussian is fitted to the teacher's ROI logits of those boxes (divided by the
temperature) and the student's Gaussian is pulled to it by the closed-form KL (paper Eq. 6).
"""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from torchvision.ops import roi_align

from ..config import UNIKD_LOGIT_LOSSES
from ..core import UniKDLoss, UniKDOptions
from ..core.checks import check_choice
from .base import DISTILL_TERM_REGISTRY, DistillContext, DistillTerm, check_in_features

CORE_LOGIT_LOSS = {"kl": "kd", "dkd": "dkd", "none": "none"}


def unikd_options(cfg: CfgNode) -> UniKDOptions:
    """Translate `cfg.DISTILL.UNIKD` into the loss core's options."""
    node = cfg.DISTILL.UNIKD
    return UniKDOptions.from_node(
        node,
        logit_loss=CORE_LOGIT_LOSS[check_choice("DISTILL.UNIKD.LOGIT_LOSS", node.LOGIT_LOSS, UNIKD_LOGIT_LOSSES)],
        norm="gn",  # per-GPU detection batches are 1-8 images: batch-independent normalisation
    )


@DISTILL_TERM_REGISTRY.register()
class UniKDDistill(DistillTerm):
    """Returns `loss_unikd_feat`, `loss_unikd_fit` (paper mode), `loss_unikd_supp` (authors_code
    mode) and `loss_unikd_logit`, each already weighted."""

    CONFIG_NODE = "UNIKD"

    def __init__(self, cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]):
        super().__init__()
        node = cfg.DISTILL.UNIKD
        self.in_features = check_in_features("DISTILL.UNIKD.IN_FEATURES", node.IN_FEATURES, student_shapes, teacher_shapes)
        self.pooler_resolution = node.POOLER_RESOLUTION
        self.loss = UniKDLoss(
            [student_shapes[f].channels for f in self.in_features],
            [teacher_shapes[f].channels for f in self.in_features],
            cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1,
            unikd_options(cfg),
        )

    def roi_pool(self, fused: torch.Tensor, rois: torch.Tensor, image_width: int) -> torch.Tensor:
        """ROIAlign of a fused map; its stride is read off its width against the padded image."""
        stride = round(image_width / fused.shape[-1])
        return roi_align(fused, rois.to(fused.dtype), self.pooler_resolution, 1.0 / stride, 0, aligned=True)

    def forward(self, ctx: DistillContext) -> dict[str, torch.Tensor]:
        rois = convert_boxes_to_pooler_format(ctx.boxes)
        losses = self.loss(
            [ctx.student_features[f] for f in self.in_features],
            [ctx.teacher_features[f] for f in self.in_features],
            ctx.student_logits,
            ctx.teacher_logits,
            target=ctx.gt_classes,
            region_pool=lambda fused: self.roi_pool(fused, rois, ctx.image_shape[-1]),
        )
        return {name.replace("loss_", "loss_unikd_", 1): value for name, value in losses.items()}
