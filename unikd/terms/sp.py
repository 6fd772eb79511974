"""Similarity-preserving KD (Tung & Mori, ICCV 2019): the student's batch similarity matrix of its last stage
matches the teacher's (megvii-research/mdistiller, mdistiller/distillers/SP.py: the last stage, weight 3000)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.relational import sp_loss
from .base import NEEDS_FEATURES, Batch, Term, TermContext, TermOptions, option, register_term
from .features import tapped_pairs


@dataclass
class SPOptions(TermOptions):
    in_features: list = option(["stage*"], "the tapped features; NUM_LEVELS keeps the deepest")
    num_levels: int = option(1, "how many of the deepest tapped features are compared (0: all)")
    weight: float = option(3000.0, "weight of ||G_s - G_t||_F^2 / N^2")


@register_term
class SPTerm(Term):
    """loss_sp = WEIGHT * sum over the tapped pairs of ||G_s - G_t||_F^2 / N^2."""

    name = "sp"
    Options = SPOptions
    requires = frozenset({NEEDS_FEATURES})

    def __init__(self, options: SPOptions, context: TermContext) -> None:
        super().__init__(options, context)
        pairs = tapped_pairs("SP.IN_FEATURES", context.student_features, context.teacher_features,
                             options.in_features, options.num_levels)
        self.pairs = [(s.name, t.name) for s, t in pairs]

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        loss = sum(sp_loss(batch.feature("student", s), batch.feature("teacher", t)) for s, t in self.pairs)
        return {"loss_sp": self.options.weight * loss}
