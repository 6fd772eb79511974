"""ReviewKD, "knowledge review" (Chen et al., CVPR 2021): attention-based fusion (ABF) passes the student's
deeper levels down to its shallower ones, and the hierarchical context loss (HCL) compares every fused level
with the teacher's at several pooled scales; L = weight * sum over levels HCL(O_i, T_i).

Classification taps, as the official code (dvlab-research/ReviewKD, CIFAR-100/train.py and
model/reviewkd.py; megvii-research/mdistiller, mdistiller/distillers/ReviewKD.py): the stages after the stem
plus the pooled feature as a 1x1 map (`stage*`, `pool`), paired from the deepest; the teacher's maps before
their last activation, the student's after it (`student_preact` true on ImageNet, mdistiller's
configs/imagenet/*/reviewkd.yaml STU_PREACT); ABF width min(512, the student's pooled width); warm-up 20
epochs (CIFAR-100/train.py). A fused level is produced at the teacher's size (a smaller student map is
upsampled, nearest, before the ABF's output conv). Detection: the FPN levels p2..p6 (no pre-activation
maps), 256 mixed channels and pools 4, 2, 1 as the authors' detection code (dvlab-research/ReviewKD,
Detection/model/kd_trans.py, Detection/configs/ReviewKD-*.yaml); their weights are 1.2 (R18 student), 1.0
(R50) and 2.0 (MobileNetV2).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.review import ReviewFusion, hcl_loss
from .base import NEEDS_FEATURES, Batch, Term, TermContext, TermOptions, option, register_term
from .features import tapped_pairs
from .fitnet import FPN_LEVELS


@dataclass
class ReviewKDOptions(TermOptions):
    PRESETS = {"detection": {"in_features": FPN_LEVELS, "mid_channels": 256, "cap_mid_channels": False,
                             "warmup": 0.0}}

    warmup: float = option(20.0, "length of the linear ramp of the term's weight from `start`; 0: full at once")
    in_features: list = option(["stage*", "pool"], "the tapped features, finest first, paired from the deepest")
    weight: float = option(1.0, "weight of the summed HCL")
    mid_channels: int = option(512, "ABF width (the mixed maps' channels)")
    cap_mid_channels: bool = option(True, "use min(mid_channels, the student's pooled width) as the ABF width")
    pool_sizes: list = option([4, 2, 1], "HCL's pooled scales")
    student_preact: bool = option(False, "tap the student's maps before their last activation")
    teacher_preact: bool = option(True, "tap the teacher's maps before their last activation (where it has them)")


@register_term
class ReviewKDTerm(Term):
    """loss_reviewkd = WEIGHT * HCL(ABF-fused student levels, teacher levels)."""

    name = "reviewkd"
    Options = ReviewKDOptions
    requires = frozenset({NEEDS_FEATURES})

    def __init__(self, options: ReviewKDOptions, context: TermContext) -> None:
        super().__init__(options, context)
        pairs = tapped_pairs("REVIEWKD.IN_FEATURES", context.student_features, context.teacher_features,
                             options.in_features)
        self.pairs = [(s.name, t.name) for s, t in pairs]
        mid = options.mid_channels
        if options.cap_mid_channels:
            if context.student_pooled_channels is None:
                raise ValueError("REVIEWKD.CAP_MID_CHANNELS needs the student's pooled width, which it has not")
            mid = min(mid, context.student_pooled_channels)
        self.fusion = ReviewFusion([s.channels for s, _ in pairs], [t.channels for _, t in pairs], mid)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        opts = self.options
        targets = [batch.feature("teacher", t, opts.teacher_preact) for _, t in self.pairs]
        fused = self.fusion([batch.feature("student", s, opts.student_preact) for s, _ in self.pairs],
                            [tuple(t.shape[-2:]) for t in targets])
        return {"loss_reviewkd": opts.weight * hcl_loss(fused, targets, tuple(opts.pool_sizes))}
