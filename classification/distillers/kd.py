"""Classic knowledge distillation (Hinton et al.; UniKD paper Eq. 1) with mdistiller's CIFAR weights."""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd_det.core import kd_loss

from .base import LogitDistiller, register_distiller


@register_distiller("kd")
class KD(LogitDistiller):
    """L = CE_WEIGHT * CE + ramp * KD_WEIGHT * tau^2 KL(p_t || p_s)."""

    CONFIG_NODE = "KD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = CfgNode()
        node.TEMPERATURE = 4.0
        node.CE_WEIGHT = 0.1
        node.KD_WEIGHT = 0.9
        node.WARMUP_EPOCHS = 0.0
        return node

    def kd_term(self, logits: Tensor, logits_t: Tensor, targets: Tensor) -> Tensor:
        return self.node.KD_WEIGHT * kd_loss(logits, logits_t, self.node.TEMPERATURE)
