"""UniKD on a two-stage detector (DISTILL.UNIKD).

Paper mode (the default). Each network's FPN levels (`IN_FEATURES`, finest to coarsest) are fused by its
own AFF to the finest level; both fused maps are ROI-aligned on the same boxes, the student's sampled
proposals, and the shared FDP predicts a diagonal Gaussian over K = NUM_CLASSES + 1, the ROI head's logit
dimension. The teacher-side Gaussian is fitted to the teacher's ROI logits of those boxes (divided by the
temperature) and the student's Gaussian is pulled to it by the closed-form KL (paper Eq. 6).

authors_code mode reproduces the authors' detection code (FabienCode/mdistiller at c22a722,
detection/model/rcnn.py and detection/configs/UniKD/*.yaml; `unikd.core.unikd.DetectionAuthorsUniKD`):
no AFF; each network's own box-pooler features on the sampled boxes feed its own FDP, with a class head
and a box-regression head; sampled softmax-KLs between the networks and to the logits and box deltas; DKD
(1, 0.25, T 1) on the ROI logits. Switches in DISTILL.UNIKD.AUTHORS_CODE turn off its parts that neither
the paper nor the classification code has (the regression head, the teacher deltas as the student's
regression target); their defaults are the authors' code. One necessary deviation: the log-variances are
bounded smoothly (LOGVAR_BOUND 10; 0 = the authors' unbounded ones), since unbounded ones overflowed to NaN
at the second iteration of the stability test (see the key's comment in unikd_det/config.py).
"""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from torchvision.ops import roi_align

from ..config import UNIKD_LOGIT_LOSSES
from unikd.core import UniKDLoss, UniKDOptions
from unikd.core.checks import check_choice
from unikd.core.options import MODES
from unikd.core.unikd import REG_TARGETS, DetectionAuthorsUniKD
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


def box_feature_channels(key: str, in_features: list[str], shapes: dict[str, ShapeSpec], network: str) -> int:
    """The single channel count of the box pooler's input levels (StandardROIHeads requires one)."""
    channels = {shapes[f].channels for f in in_features}
    if len(channels) != 1:
        raise ValueError(f"{key} levels of the {network} have different channel counts {sorted(channels)}")
    return channels.pop()


def authors_code_loss(
    cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]
) -> DetectionAuthorsUniKD:
    """The authors' detection UniKD from `cfg.DISTILL.UNIKD` (module docstring). The FDPs read the box
    pooler's levels, MODEL.ROI_HEADS.IN_FEATURES, and the regression head has one output per box-delta
    column of the ROI head (4 x NUM_CLASSES, or 4 when class-agnostic)."""
    node, key = cfg.DISTILL.UNIKD, "MODEL.ROI_HEADS.IN_FEATURES"
    in_features = check_in_features(key, cfg.MODEL.ROI_HEADS.IN_FEATURES, student_shapes, teacher_shapes)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    bound = node.AUTHORS_CODE.LOGVAR_BOUND
    return DetectionAuthorsUniKD(
        box_feature_channels(key, in_features, student_shapes, "student"),
        box_feature_channels(key, in_features, teacher_shapes, "teacher"),
        num_classes + 1,
        4 if cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG else 4 * num_classes,
        unikd_options(cfg),
        reg_head=node.AUTHORS_CODE.REG_HEAD,
        reg_target=check_choice("DISTILL.UNIKD.AUTHORS_CODE.REG_TARGET", node.AUTHORS_CODE.REG_TARGET, REG_TARGETS),
        logvar_bound=bound if bound > 0 else None,
    )


@DISTILL_TERM_REGISTRY.register()
class UniKDDistill(DistillTerm):
    """Returns `loss_unikd_feat`, `loss_unikd_fit` (paper mode), `loss_unikd_supp` (authors_code
    mode) and `loss_unikd_logit`, each already weighted."""

    CONFIG_NODE = "UNIKD"

    def __init__(self, cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]):
        super().__init__()
        node = cfg.DISTILL.UNIKD
        self.paper_mode = check_choice("DISTILL.UNIKD.MODE", node.MODE, MODES) == "paper"
        if not self.paper_mode:
            self.loss = authors_code_loss(cfg, student_shapes, teacher_shapes)
            return
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
        if self.paper_mode:
            losses = self.paper_terms(ctx)
        else:
            student, teacher = ctx.student_roi, ctx.teacher_roi
            losses = self.loss(
                student.box_features, teacher.box_features, ctx.student_logits, ctx.teacher_logits,
                student.deltas, teacher.deltas, ctx.gt_classes,
            )
        return {name.replace("loss_", "loss_unikd_", 1): value for name, value in losses.items()}

    def paper_terms(self, ctx: DistillContext) -> dict[str, torch.Tensor]:
        """AFF, ROI-aligned shared FDP, closed-form KL, teacher fit and logit term (module docstring)."""
        rois = convert_boxes_to_pooler_format(ctx.boxes)
        return self.loss(
            [ctx.student_features[f] for f in self.in_features],
            [ctx.teacher_features[f] for f in self.in_features],
            ctx.student_logits,
            ctx.teacher_logits,
            target=ctx.gt_classes,
            region_pool=lambda fused: self.roi_pool(fused, rois, ctx.image_shape[-1]),
        )
