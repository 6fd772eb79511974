"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): match the normalised spatial attention maps
sum_c |f_c|^p of every stage after the stem (mdistiller's setting: p 2, weight 1000)."""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core.attention import at_loss

from .terms import LossTerm, TermInputs, base_node, pair_from_deepest, register_term


@register_term("at")
class ATTerm(LossTerm):
    """loss_at = WEIGHT * sum over stage pairs of mean((a_s - a_t)^2); stages paired from the deepest."""

    CONFIG_NODE = "AT"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node()
        node.P = 2.0
        node.WEIGHT = 1000.0
        return node

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        pairs = pair_from_deepest(inputs.student.feats[1:], inputs.teacher.feats[1:])
        feats_s, feats_t = [s for s, _ in pairs], [t for _, t in pairs]
        return {"loss_at": self.node.WEIGHT * at_loss(feats_s, feats_t, self.node.P)}
