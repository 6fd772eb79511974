"""Relational KD (Park et al., CVPR 2019): distance and angle relations among the batch's pooled features
(megvii-research/mdistiller, mdistiller/distillers/RKD.py: distance weight 25, angle weight 50)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.relational import rkd_loss
from .base import NEEDS_POOLED, Batch, Term, TermOptions, option, register_term


@dataclass
class RKDOptions(TermOptions):
    weight: float = option(1.0, "weight of the whole relational loss")
    distance_weight: float = option(25.0, "weight of the distance relation")
    angle_weight: float = option(50.0, "weight of the angle relation")
    squared: bool = option(False, "compare squared distances")
    eps: float = option(1e-12, "floor of the distances before the square root")


@register_term
class RKDTerm(Term):
    """loss_rkd = WEIGHT * (DISTANCE_WEIGHT * L_distance + ANGLE_WEIGHT * L_angle) on the pooled features."""

    name = "rkd"
    Options = RKDOptions
    requires = frozenset({NEEDS_POOLED})

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        opts = self.options
        loss = rkd_loss(batch.student_pooled, batch.teacher_pooled, opts.distance_weight, opts.angle_weight,
                        opts.squared, opts.eps)
        return {"loss_rkd": opts.weight * loss}
