"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): match the normalised spatial attention maps
sum_c |f_c|^p of the tapped stages, paired from the deepest (megvii-research/mdistiller,
mdistiller/distillers/AT.py: every stage after the stem, p 2, weight 1000)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.attention import at_loss
from .base import NEEDS_FEATURES, Batch, Term, TermContext, TermOptions, option, register_term
from .features import tapped_pairs


@dataclass
class ATOptions(TermOptions):
    in_features: list = option(["stage*"], "the tapped features, paired from the deepest")
    p: float = option(2.0, "exponent p of the attention map sum_c |f_c|^p")
    weight: float = option(1000.0, "weight of the summed attention losses")


@register_term
class ATTerm(Term):
    """loss_at = WEIGHT * sum over stage pairs of mean((a_s - a_t)^2)."""

    name = "at"
    Options = ATOptions
    requires = frozenset({NEEDS_FEATURES})

    def __init__(self, options: ATOptions, context: TermContext) -> None:
        super().__init__(options, context)
        pairs = tapped_pairs("AT.IN_FEATURES", context.student_features, context.teacher_features, options.in_features)
        self.pairs = [(s.name, t.name) for s, t in pairs]

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        feats_s = [batch.feature("student", s) for s, _ in self.pairs]
        feats_t = [batch.feature("teacher", t) for _, t in self.pairs]
        return {"loss_at": self.options.weight * at_loss(feats_s, feats_t, self.options.p)}
