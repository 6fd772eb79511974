"""ReviewKD, "knowledge review" (Chen et al., CVPR 2021): attention-based fusion (ABF) passes the student's
deeper levels down to its shallower ones, and the hierarchical context loss (HCL) compares every fused level
with the teacher's at several pooled scales.

Taps, as the official code (dvlab-research/ReviewKD, CIFAR-100/train.py and model/reviewkd.py;
megvii-research/mdistiller, mdistiller/distillers/ReviewKD.py): the levels are the stages after the stem
plus the pooled feature as a 1x1 map; the teacher's stage maps are taken before their last activation
(`preact_feats[1:]`), the student's after it (STUDENT_PREACT False), except on ImageNet, where mdistiller's
configs feed the student's pre-activation maps too (configs/imagenet/*/reviewkd.yaml: STU_PREACT True).
Each fused level is produced at the teacher's size: a smaller student map is upsampled (nearest) before the
ABF's output conv (`ReviewFusion` with out_sizes). Channel lists come from the models, so every pair works
without per-pair shape settings. Weight and warm-up per pair in the catalog.
"""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core.review import ReviewFusion, hcl_loss

from ..models import ModelOutput
from .terms import LossTerm, TermContext, TermInputs, base_node, pair_from_deepest, register_term, stage_maps


def review_levels(output: ModelOutput, preact: bool) -> list[Tensor]:
    """Stage maps after the stem (pre-activation when `preact`), then the pooled feature as a 1x1 map."""
    return stage_maps(output, preact) + [output.pooled[:, :, None, None]]


@register_term("reviewkd")
class ReviewKDTerm(LossTerm):
    """loss_reviewkd = WEIGHT * HCL(ABF-fused student levels, teacher pre-activation levels)."""

    CONFIG_NODE = "REVIEWKD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node(warmup_epochs=20.0)
        node.WEIGHT = 1.0
        node.MAX_MID_CHANNELS = 512  # ABF width: min(this, the student's pooled width)
        node.POOL_SIZES = [4, 2, 1]
        node.STUDENT_PREACT = False  # True: the student's pre-activation maps (mdistiller's ImageNet configs)
        return node

    def __init__(self, node: CfgNode, context: TermContext) -> None:
        super().__init__(node, context)
        student, teacher = context.student, context.teacher
        channels = pair_from_deepest(
            list(student.stage_channels[1:]) + [student.pooled_channels],
            list(teacher.stage_channels[1:]) + [teacher.pooled_channels],
        )
        mid = min(node.MAX_MID_CHANNELS, student.pooled_channels)
        self.fusion = ReviewFusion([c_s for c_s, _ in channels], [c_t for _, c_t in channels], mid)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        levels_s = review_levels(inputs.student, self.node.STUDENT_PREACT)
        pairs = pair_from_deepest(levels_s, review_levels(inputs.teacher, preact=True))
        targets = [t for _, t in pairs]
        fused = self.fusion([s for s, _ in pairs], [tuple(t.shape[-2:]) for t in targets])
        return {"loss_reviewkd": self.node.WEIGHT * hcl_loss(fused, targets, tuple(self.node.POOL_SIZES))}
