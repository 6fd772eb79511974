"""Decoupled knowledge distillation (Zhao et al., CVPR 2022) with its published CIFAR defaults."""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core import dkd_loss

from .terms import LossTerm, TermInputs, base_node, register_term


@register_term("dkd")
class DKDTerm(LossTerm):
    """loss_dkd = ALPHA * TCKD + BETA * NCKD, ramped in over WARMUP_EPOCHS (20 on CIFAR)."""

    CONFIG_NODE = "DKD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node(ce_weight=1.0, warmup_epochs=20.0)
        node.ALPHA = 1.0
        node.BETA = 8.0
        node.TEMPERATURE = 4.0
        return node

    @classmethod
    def logit_losses(cls, node: CfgNode) -> frozenset[str]:
        return frozenset({"dkd"})

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        node = self.node
        logits_s, logits_t = inputs.student.logits, inputs.teacher.logits
        return {"loss_dkd": dkd_loss(logits_s, logits_t, inputs.targets, node.ALPHA, node.BETA, node.TEMPERATURE)}
