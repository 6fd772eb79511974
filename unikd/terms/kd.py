"""Classic knowledge distillation (Hinton et al.; UniKD paper Eq. 1): weight * tau^2 KL(p_t || p_s).

Classification: mdistiller's CIFAR recipe, CE 0.1 and KD 0.9 at tau 4 (megvii-research/mdistiller,
mdistiller/engine/cfg.py). Detection: on the ROI class logits of the student's sampled proposals (teacher
logits from the teacher's box head on the same boxes, background = index K), weight 1 at tau 1, as the
public Detectron2 ROI-KD configs; `bg_mode fg` keeps only the ROIs matched to an object.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.checks import check_choice
from ..core.logit_kd import kd_loss
from .base import NEEDS_LOGITS, NEEDS_TARGETS, Batch, Term, TermContext, TermOptions, option, register_term

BACKGROUND_MODES = ("all", "fg")


@dataclass
class StandardizeOptions(TermOptions):
    """The logit-standardisation switch every term on the logits has (Sun et al., CVPR 2024;
    sunshangquan/logit-standardization-KD, cfg.EXPERIMENT.LOGIT_STAND, default off as there)."""

    logit_standardize: bool = option(False, "z-score both networks' logits per sample before the temperature softmax")


@dataclass
class LogitTermOptions(StandardizeOptions):
    """Options of the terms on the logits of the samples (images or ROIs)."""

    weight: float = option(1.0, "weight of the loss")
    temperature: float = option(4.0, "softmax temperature tau")
    bg_mode: str = option("all", "detection: distil 'all' ROIs, or only the 'fg' ones matched to an object")

    def __post_init__(self) -> None:
        check_choice("bg_mode", self.bg_mode, BACKGROUND_MODES)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


class LogitTerm(Term):
    """A term on (student logits, teacher logits, targets) of the samples, with the background selection."""

    def __init__(self, options: LogitTermOptions, context: TermContext) -> None:
        super().__init__(options, context)
        if options.bg_mode == "fg" and context.background_class is None:
            raise ValueError(f"{self.name.upper()}.BG_MODE fg needs a background class, which {context.task} has not")
        self.background_class = context.background_class

    def requirements(self) -> frozenset[str]:
        needs = type(self).requires
        return needs | {NEEDS_TARGETS} if self.options.bg_mode == "fg" else needs

    def samples(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None] | None:
        """(student logits, teacher logits, targets) of the distilled samples; None when bg_mode fg leaves none."""
        logits_s, logits_t, target = batch.student_logits, batch.teacher_logits, batch.targets
        if self.options.bg_mode == "fg":
            keep = target != self.background_class
            if not keep.any():
                return None
            logits_s, logits_t, target = logits_s[keep], logits_t[keep], target[keep]
        return logits_s, logits_t, target

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        samples = self.samples(batch)
        if samples is None:
            return {f"loss_{self.name}": batch.student_logits.sum() * 0.0}
        return {f"loss_{self.name}": self.options.weight * self.loss(*samples)}

    def loss(self, logits_s: Tensor, logits_t: Tensor, target: Tensor | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass
class KDOptions(LogitTermOptions):
    PRESETS = {"detection": {"weight": 1.0, "temperature": 1.0}}

    ce_weight: float = option(0.1, "classification: cross-entropy weight when KD is the whole method")
    weight: float = option(0.9, "weight of tau^2 KL(p_t || p_s)")


@register_term
class KDTerm(LogitTerm):
    """loss_kd = WEIGHT * tau^2 KL(p_t || p_s) over the samples."""

    name = "kd"
    Options = KDOptions
    requires = frozenset({NEEDS_LOGITS})

    def logit_losses(self) -> frozenset[str]:
        return frozenset({"kd"})

    def loss(self, logits_s: Tensor, logits_t: Tensor, target: Tensor | None) -> Tensor:
        return kd_loss(logits_s, logits_t, self.options.temperature, self.options.logit_standardize)
