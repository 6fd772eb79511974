"""Relational KD (Park et al., CVPR 2019): distance and angle relations among the batch's pooled features
(mdistiller's setting: distance weight 25, angle weight 50)."""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core.relational import rkd_loss

from .terms import LossTerm, TermInputs, base_node, register_term


@register_term("rkd")
class RKDTerm(LossTerm):
    """loss_rkd = WEIGHT * (DISTANCE_WEIGHT * L_distance + ANGLE_WEIGHT * L_angle) on the pooled features."""

    CONFIG_NODE = "RKD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node()
        node.WEIGHT = 1.0
        node.DISTANCE_WEIGHT = 25.0
        node.ANGLE_WEIGHT = 50.0
        node.SQUARED = False
        node.EPS = 1e-12
        return node

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        node = self.node
        loss = rkd_loss(inputs.student.pooled, inputs.teacher.pooled, node.DISTANCE_WEIGHT, node.ANGLE_WEIGHT,
                        node.SQUARED, node.EPS)
        return {"loss_rkd": node.WEIGHT * loss}
