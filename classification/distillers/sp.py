"""Similarity-preserving KD (Tung & Mori, ICCV 2019): the student's batch similarity matrix of its last stage
matches the teacher's (mdistiller's setting: weight 3000)."""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core.relational import sp_loss

from .terms import LossTerm, TermInputs, base_node, register_term


@register_term("sp")
class SPTerm(LossTerm):
    """loss_sp = WEIGHT * ||G_s - G_t||_F^2 / N^2 on the last stage features."""

    CONFIG_NODE = "SP"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node()
        node.WEIGHT = 3000.0
        return node

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        return {"loss_sp": self.node.WEIGHT * sp_loss(inputs.student.feats[-1], inputs.teacher.feats[-1])}
