"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): weight * (alpha * TCKD + beta * NCKD).

Classification: the CIFAR defaults of megvii-research/mdistiller (mdistiller/engine/cfg.py: alpha 1, beta 8,
tau 4, a 20-epoch linear warm-up; beta per pair in configs/cifar100/dkd/*.yaml, see the catalog).
Detection: on the ROI class logits, alpha 1, beta 0.25 at tau 1 without warm-up, as the official detection
code (megvii-research/mdistiller, detection/model/rcnn.py `rcnn_dkd_loss`, detection/configs/DKD/*.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.logit_kd import dkd_loss
from .base import NEEDS_LOGITS, NEEDS_TARGETS, option, register_term
from .kd import LogitTerm, LogitTermOptions


@dataclass
class DKDOptions(LogitTermOptions):
    PRESETS = {"detection": {"beta": 0.25, "temperature": 1.0, "warmup": 0.0}}

    warmup: float = option(20.0, "length of the linear ramp of the term's weight from `start`; 0: full at once")
    alpha: float = option(1.0, "weight of the target-class part TCKD")
    beta: float = option(8.0, "weight of the non-target part NCKD")


@register_term
class DKDTerm(LogitTerm):
    """loss_dkd = WEIGHT * (ALPHA * TCKD + BETA * NCKD) over the samples."""

    name = "dkd"
    Options = DKDOptions
    requires = frozenset({NEEDS_LOGITS, NEEDS_TARGETS})

    def logit_losses(self) -> frozenset[str]:
        return frozenset({"dkd"})

    def loss(self, logits_s: Tensor, logits_t: Tensor, target: Tensor | None) -> Tensor:
        opts = self.options
        return dkd_loss(logits_s, logits_t, target, opts.alpha, opts.beta, opts.temperature, opts.logit_standardize)
