"""Multi-level logit distillation (Jin et al., CVPR 2023): instance-, class- and batch-level alignment of the
softened outputs over several temperatures.

Official code: Jin-Ying/Multi-Level-Logit-Distillation, mdistiller/distillers/KD_ours.py (CE 0.1 on each
view, KD weight 0.9, temperatures 4, 3, 5, 2, 6; the view whose logits enter the unmasked instance term at
each temperature, `strong_kd_views`). Classification runs both networks on a weak and a strong view of the
batch (the front end computes the second view: `second_view`).

There is no official detection MLKD: the authors publish classification code only, so detection applies that
loss to the ROI logits of the sampled proposals. An ROI has one view, so both views are the same logits and
the instance level counts the same KD twice per temperature: once times the sample-mask fraction f (the weak
view's masked term) and once unmasked (the strong view's), (1 + f) x KD. `strong_view_kd` true (the
classification code's two terms) keeps that; false keeps the masked term alone, f x KD.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..core.mlkd import (
    OFFICIAL_STRONG_KD_VIEWS, OFFICIAL_TEMPERATURES, check_temperatures, mlkd_loss, sample_confidence_mask,
)
from .base import NEEDS_LOGITS, NEEDS_SECOND_VIEW, NEEDS_TARGETS, Batch, Term, TermContext, option, register_term
from .kd import StandardizeOptions


@dataclass
class MLKDOptions(StandardizeOptions):
    PRESETS = {"detection": {"second_view": False}}

    ce_weight: float = option(0.1, "classification: cross-entropy weight of each view when MLKD is the method")
    weight: float = option(0.9, "weight of each of the instance, class and batch levels (the official KD weight)")
    temperatures: list = option(list(OFFICIAL_TEMPERATURES), "the temperatures every level is computed at")
    strong_kd_views: list = option(
        list(OFFICIAL_STRONG_KD_VIEWS), "with a second view: per temperature, the view of the unmasked instance KD"
    )
    second_view: bool = option(True, "run both networks on a strong view too (false: one view, e.g. ROIs)")
    strong_view_kd: bool = option(True, "one view only: keep the unmasked instance KD of the absent strong view")

    def __post_init__(self) -> None:
        check_temperatures("temperatures", self.temperatures)
        if self.second_view and len(self.strong_kd_views) != len(self.temperatures):
            raise ValueError(f"strong_kd_views needs one view per temperature, got {len(self.strong_kd_views)} "
                             f"for {len(self.temperatures)}")
        if self.second_view and not self.strong_view_kd:
            raise ValueError("strong_view_kd false only applies with second_view false (one view)")


@register_term
class MLKDTerm(Term):
    """loss_mlkd_kd, loss_mlkd_cc and loss_mlkd_bc (WEIGHT each), and with a second view loss_mlkd_ce_strong
    (the strong view's cross-entropy at the method's CE weight)."""

    name = "mlkd"
    Options = MLKDOptions
    requires = frozenset({NEEDS_LOGITS})

    def __init__(self, options: MLKDOptions, context: TermContext) -> None:
        super().__init__(options, context)
        self.temperatures = check_temperatures("MLKD.TEMPERATURES", options.temperatures)

    def requirements(self) -> frozenset[str]:
        if self.options.second_view:
            return self.requires | {NEEDS_SECOND_VIEW, NEEDS_TARGETS}
        return self.requires

    def logit_losses(self) -> frozenset[str]:
        return frozenset({"kd"})

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        opts = self.options
        weak_s, weak_t = batch.student_logits, batch.teacher_logits
        if opts.second_view:
            strong_s, strong_t = batch.student_logits_second_view, batch.teacher_logits_second_view
            views = tuple(opts.strong_kd_views)
        else:  # one view: both are the same logits, so which one an instance term reads does not matter
            strong_s, strong_t, views = weak_s, weak_t, ("weak",) * len(self.temperatures)
        losses = mlkd_loss(weak_s, strong_s, weak_t, strong_t, self.temperatures, views, opts.weight,
                           opts.logit_standardize)
        if opts.second_view:
            losses["loss_ce_strong"] = batch.ce_weight * F.cross_entropy(strong_s.float(), batch.targets)
        elif not opts.strong_view_kd:
            # With both views the same logits, loss_kd = w * sum_tau (f + 1) KD_tau: keep the f part only.
            fraction = sample_confidence_mask(weak_t).float().mean()
            losses["loss_kd"] = losses["loss_kd"] * (fraction / (1 + fraction))
        return {f"loss_{self.name}_{key.removeprefix('loss_')}": value for key, value in losses.items()}
