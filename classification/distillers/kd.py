"""Classic knowledge distillation (Hinton et al.; UniKD paper Eq. 1) with mdistiller's CIFAR weights."""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core import kd_loss

from .terms import LossTerm, TermInputs, base_node, register_term


@register_term("kd")
class KDTerm(LossTerm):
    """loss_kd = KD_WEIGHT * tau^2 KL(p_t || p_s); as a method, with CE_WEIGHT 0.1 and KD_WEIGHT 0.9."""

    CONFIG_NODE = "KD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node(ce_weight=0.1)
        node.TEMPERATURE = 4.0
        node.KD_WEIGHT = 0.9
        return node

    @classmethod
    def logit_losses(cls, node: CfgNode) -> frozenset[str]:
        return frozenset({"kd"})

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        node = self.node
        return {"loss_kd": node.KD_WEIGHT * kd_loss(inputs.student.logits, inputs.teacher.logits, node.TEMPERATURE)}
