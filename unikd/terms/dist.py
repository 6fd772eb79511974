"""DIST (Huang et al., NeurIPS 2022): the inter- and intra-class Pearson correlations of the softened outputs.

Official code: hunto/image_classification_sota, lib/models/losses/dist_kd.py and kd_loss.py (the method
`dist_t<tau>` is DIST(beta 1, gamma 1, tau)), with the settings of hunto/DIST_KD's README: CIFAR-100
configs/strategies/distill/dist_cifar.yaml (`kd: dist_t4`, kd_loss_weight 2, ori_loss_weight 1) and ImageNet
configs/strategies/distill/resnet_dist.yaml (`kd: dist`, i.e. tau 1, kd_loss_weight 2, ori_loss_weight 1).
There is no official detection DIST; the detection preset takes the ImageNet tau 1 on the ROI logits.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.dist import dist_loss
from .base import NEEDS_LOGITS, option, register_term
from .kd import LogitTerm, LogitTermOptions


@dataclass
class DISTOptions(LogitTermOptions):
    PRESETS = {"detection": {"temperature": 1.0}}  # resnet_dist.yaml `kd: dist` (tau 1); no detection code

    weight: float = option(2.0, "weight of the DIST loss (the official kd_loss_weight)")
    beta: float = option(1.0, "weight beta of the inter-class relation (per sample, across classes)")
    gamma: float = option(1.0, "weight gamma of the intra-class relation (per class, across the batch)")


@register_term
class DISTTerm(LogitTerm):
    """loss_dist = WEIGHT * tau^2 * (BETA * (1 - mean inter-class rho) + GAMMA * (1 - mean intra-class rho))."""

    name = "dist"
    Options = DISTOptions
    requires = frozenset({NEEDS_LOGITS})

    def loss(self, logits_s: Tensor, logits_t: Tensor, target: Tensor | None) -> Tensor:
        opts = self.options
        return dist_loss(logits_s, logits_t, opts.beta, opts.gamma, opts.temperature, opts.logit_standardize)
