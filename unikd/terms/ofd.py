"""Overhaul of feature distillation (Heo et al., ICCV 2019): per stage, a 1x1 conv + BN connector maps the
student's pre-activation map onto the teacher's, which is clipped from below at its per-channel margin, and
a partial L2 skips positions where both are negative (megvii-research/mdistiller: weight 1e-3 on CIFAR).

The margin is the mean of the negative part of a per-channel Gaussian; our models expose no BN-before-ReLU
modules, so the Gaussian is estimated from the teacher's pre-activation maps of the batch
(`ofd_margin_from_features`, on the teacher's map at its own size). Deeper stages weigh more: stage i of n
counts 1 / 2^(n - 1 - i), as in the original. Where the sizes differ (ShuffleNet and MobileNet students),
the teacher's map is average-pooled to the student's size (mdistiller/distillers/OFD.py, `ofd_loss`; the
clovaai/overhaul-distillation pairs share sizes).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..core.ofd import OFDConnector, ofd_loss, ofd_margin_from_features
from ..core.pooling import average_pool_to
from .base import NEEDS_FEATURES, Batch, Term, TermContext, TermOptions, option, register_term
from .features import tapped_pairs


@dataclass
class OFDOptions(TermOptions):
    in_features: list = option(["stage*"], "the tapped features (pre-activation maps), paired from the deepest")
    weight: float = option(1e-3, "weight of the summed partial L2 (the official loss / 1000 on CIFAR)")


@register_term
class OFDTerm(Term):
    """loss_ofd = WEIGHT * sum_i 2^-(n-1-i) * partial_L2(connector_i(s_i), max(t_i, margin_i))."""

    name = "ofd"
    Options = OFDOptions
    requires = frozenset({NEEDS_FEATURES})

    def __init__(self, options: OFDOptions, context: TermContext) -> None:
        super().__init__(options, context)
        pairs = tapped_pairs("OFD.IN_FEATURES", context.student_features, context.teacher_features,
                             options.in_features)
        self.pairs = [(s.name, t.name) for s, t in pairs]
        self.connectors = nn.ModuleList(OFDConnector(s.channels, t.channels) for s, t in pairs)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        count = len(self.pairs)
        total = 0.0
        for i, ((s, t), connector) in enumerate(zip(self.pairs, self.connectors)):
            feat_s, feat_t = batch.feature("student", s, preact=True), batch.feature("teacher", t, preact=True)
            margin = ofd_margin_from_features(feat_t)
            target = average_pool_to(feat_t, tuple(feat_s.shape[-2:]))
            total = total + ofd_loss(connector(feat_s), target, margin) / 2 ** (count - 1 - i)
        return {"loss_ofd": self.options.weight * total}
