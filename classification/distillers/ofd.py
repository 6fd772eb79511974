"""Overhaul of feature distillation (Heo et al., ICCV 2019): per stage, a 1x1 conv + BN connector maps the
student's pre-activation map onto the teacher's, which is clipped from below at its per-channel margin, and
a partial L2 skips positions where both are negative (mdistiller's setting: weight 1e-3).

The margin is the mean of the negative part of a per-channel Gaussian; our models expose no
BN-before-ReLU modules, so the Gaussian is estimated from the teacher's pre-activation maps of the batch
(`ofd_margin_from_features`, on the teacher's map at its own size). Deeper stages weigh more: stage i of n
counts 1 / 2^(n - 1 - i), as in the original. Where the sizes differ (ShuffleNet and MobileNet students),
the teacher's map is average-pooled to the student's size (megvii-research/mdistiller,
mdistiller/distillers/OFD.py, `ofd_loss`; the clovaai/overhaul-distillation pairs share sizes).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode

from unikd.core.ofd import OFDConnector, ofd_loss, ofd_margin_from_features

from .terms import LossTerm, TermContext, TermInputs, base_node, pair_from_deepest, register_term, stage_maps


@register_term("ofd")
class OFDTerm(LossTerm):
    """loss_ofd = WEIGHT * sum_i 2^-(n-1-i) * partial_L2(connector_i(s_i), max(t_i, margin_i))."""

    CONFIG_NODE = "OFD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node()
        node.WEIGHT = 1e-3
        return node

    def __init__(self, node: CfgNode, context: TermContext) -> None:
        super().__init__(node, context)
        channels = pair_from_deepest(context.student.stage_channels[1:], context.teacher.stage_channels[1:])
        self.connectors = nn.ModuleList(OFDConnector(c_s, c_t) for c_s, c_t in channels)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        pairs = pair_from_deepest(stage_maps(inputs.student, True), stage_maps(inputs.teacher, True))
        total = inputs.images.new_zeros(())
        count = len(pairs)
        for i, ((feat_s, feat_t), connector) in enumerate(zip(pairs, self.connectors)):
            margin = ofd_margin_from_features(feat_t)
            target = F.adaptive_avg_pool2d(feat_t, tuple(feat_s.shape[-2:]))
            total = total + ofd_loss(connector(feat_s), target, margin) / 2 ** (count - 1 - i)
        return {"loss_ofd": self.node.WEIGHT * total}
