"""Decoupled knowledge distillation (Zhao et al., CVPR 2022) with its published CIFAR defaults."""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd_det.core import dkd_loss

from .base import LogitDistiller, register_distiller


@register_distiller("dkd")
class DKD(LogitDistiller):
    """L = CE_WEIGHT * CE + ramp * (ALPHA * TCKD + BETA * NCKD), ramp linear over WARMUP_EPOCHS."""

    CONFIG_NODE = "DKD"
    LOSS_NAME = "loss_dkd"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = CfgNode()
        node.CE_WEIGHT = 1.0
        node.ALPHA = 1.0
        node.BETA = 8.0
        node.TEMPERATURE = 4.0
        node.WARMUP_EPOCHS = 20.0
        return node

    def kd_term(self, logits: Tensor, logits_t: Tensor, targets: Tensor) -> Tensor:
        node = self.node
        return dkd_loss(logits, logits_t, targets, node.ALPHA, node.BETA, node.TEMPERATURE)
