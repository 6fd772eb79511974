"""ReviewKD, "knowledge review" (Chen et al., CVPR 2021): attention-based fusion (ABF) passes the student's
deeper levels down to its shallower ones, and the hierarchical context loss (HCL) compares every fused level
with the teacher's at several pooled scales. The levels are the stages after the stem plus the pooled
feature as a 1x1 map, as in mdistiller; channel lists come from the models, so every pair works without
per-pair shape settings. Weight 1 (5 on resnet32x4 -> resnet8x4), 20-epoch warm-up on CIFAR.
"""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd_det.core.review import ReviewFusion, hcl_loss

from ..models import ModelOutput
from .terms import LossTerm, TermContext, TermInputs, base_node, match_spatial, pair_from_deepest, register_term


def review_levels(output: ModelOutput) -> list[Tensor]:
    """Stage features after the stem, then the pooled feature as a 1x1 map; finest first."""
    return list(output.feats[1:]) + [output.pooled[:, :, None, None]]


@register_term("reviewkd")
class ReviewKDTerm(LossTerm):
    """loss_reviewkd = WEIGHT * HCL(ABF-fused student levels, teacher levels)."""

    CONFIG_NODE = "REVIEWKD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node(warmup_epochs=20.0)
        node.WEIGHT = 1.0
        node.MAX_MID_CHANNELS = 512  # ABF width: min(this, the student's pooled width)
        node.POOL_SIZES = [4, 2, 1]
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
        pairs = pair_from_deepest(review_levels(inputs.student), review_levels(inputs.teacher))
        fused = self.fusion([s for s, _ in pairs])
        targets = [t for _, t in pairs]
        fused = [match_spatial(f, tuple(t.shape[-2:])) for f, t in zip(fused, targets)]
        return {"loss_reviewkd": self.node.WEIGHT * hcl_loss(fused, targets, tuple(self.node.POOL_SIZES))}
