"""Multi-level logit distillation on ROI logits (DISTILL.MLKD): instance-, class- and batch-level
alignment of the student's and teacher's ROI class distributions over several temperatures
(`unikd.core.mlkd_loss`).

There is no official detection MLKD: the MLKD authors (Jin-Ying/Multi-Level-Logit-Distillation) publish
classification code only, so this term applies their classification loss (`mdistiller/distillers/
KD_ours.py`, as `unikd.core.mlkd` documents) to the ROI logits of the sampled proposals. An ROI has a
single view, so the strong view of that recipe is the same logits, and the instance level then counts
the same KD twice per temperature: once times the sample-mask fraction f (the weak-view term) and once
unmasked (the strong-view term), (1 + f) x KD in all. `STRONG_VIEW_KD` (default true, the classification
code's two terms) keeps that; false keeps the masked weak-view term alone, f x KD. The default stays with
the only official code because the class- and batch-level terms were tuned against that instance weight.
"""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec

from unikd.core import mlkd_loss
from unikd.core.mlkd import check_temperatures, sample_confidence_mask
from .base import DISTILL_TERM_REGISTRY, DistillContext, DistillTerm


@DISTILL_TERM_REGISTRY.register()
class MLKDDistill(DistillTerm):
    """Returns `loss_mlkd_kd`, `loss_mlkd_cc` and `loss_mlkd_bc`, each already weighted (module docstring)."""

    CONFIG_NODE = "MLKD"

    def __init__(self, cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]):
        super().__init__()
        node = cfg.DISTILL.MLKD
        self.temperatures = check_temperatures("DISTILL.MLKD.TEMPERATURES", node.TEMPERATURES)
        self.weight = node.WEIGHT
        self.strong_view_kd = node.STRONG_VIEW_KD

    def forward(self, ctx: DistillContext) -> dict[str, torch.Tensor]:
        logits_s, logits_t = ctx.student_logits, ctx.teacher_logits
        losses = mlkd_loss(
            logits_s, logits_s, logits_t, logits_t, self.temperatures, ("weak",) * len(self.temperatures), self.weight
        )
        if not self.strong_view_kd:
            # With both views the same logits, loss_kd = w * sum_tau (f + 1) KD_tau: keep the f part only.
            fraction = sample_confidence_mask(logits_t).float().mean()
            losses["loss_kd"] = losses["loss_kd"] * (fraction / (1 + fraction))
        return {name.replace("loss_", "loss_mlkd_", 1): value for name, value in losses.items()}
