"""Normalized KD (Yang et al., ICCV 2023): the target class's teacher-weighted log-likelihood plus the KL of the
normalised non-target distributions; NKD* in the UniKD paper's table is the set [nkd, dkd]. Per-setting
temperature and gamma in the catalog (yzd-v/cls_KD configs)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.nkd import nkd_loss
from .base import NEEDS_LOGITS, NEEDS_TARGETS, Batch, Term, option, register_term
from .kd import StandardizeOptions


@dataclass
class NKDOptions(StandardizeOptions):
    weight: float = option(1.0, "weight of the NKD loss")
    temperature: float = option(1.0, "temperature of the non-target part")
    gamma: float = option(1.5, "weight gamma of the non-target part")


@register_term
class NKDTerm(Term):
    """loss_nkd = WEIGHT * NKD(student, teacher; TEMPERATURE, GAMMA)."""

    name = "nkd"
    Options = NKDOptions
    requires = frozenset({NEEDS_LOGITS, NEEDS_TARGETS})

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        opts = self.options
        loss = nkd_loss(batch.student_logits, batch.teacher_logits, batch.targets, opts.temperature, opts.gamma,
                        opts.logit_standardize)
        return {"loss_nkd": opts.weight * loss}
