"""Options of the UniKD loss (DESIGN.md section 3), validated on construction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .checks import check_choice
from .aff import NORMS

MODES = ("paper", "authors_code")
LOGIT_LOSSES = ("kd", "dkd", "none")
TARGET_FITS = ("gaussian_nll", "none")
K_REDUCTIONS = ("sum", "mean")


@dataclass
class UniKDOptions:
    """Switches and weights of UniKDLoss.

    mode: "paper" (AFF on both networks, closed-form Gaussian KL, Eq. 6) or "authors_code" (the authors'
        public code). authors_code fixes its own structure and therefore ignores fdp_shared (always two
        FDPs), logit_loss (always DKD), target_fit, detach_target and k_reduction (no fit term, no
        closed-form KL), and uses the independent AFF gate on the student only.
    channels: AFF width C.
    alpha: weight of the feature loss L_FL. beta: weight of the logit loss.
    temperature: logit temperature tau of the logit loss.
    fit_temperature: the teacher-fit target is teacher_logits / fit_temperature (None: use temperature).
        Detection uses tau = 1 for ROI-logit KD but a fit target scaled down by 4 (DESIGN section 3).
    logit_loss: "kd" (Eq. 1), "dkd" (uses dkd_alpha, dkd_beta) or "none".
    target_fit: "gaussian_nll" fits the teacher Gaussian to the teacher logits (weight fit_weight); "none".
    detach_target: use the teacher Gaussian as a constant target inside L_FL.
    fdp_shared: one FDP for both networks (paper) instead of one per network.
    aff_enabled: False gives the "FDP on the last stage" ablation (only the coarsest map, one expander).
    logvar_bound: s of the FDP's smooth bound logvar = s * tanh(raw / s).
    k_reduction: L_FL and L_fit averaged over the K labels ("mean", the default) or summed ("sum", Eq. 6
        as printed; gaussian_kl itself always sums).
        The fit's gradient w.r.t. the mean scales with K / var, so with "sum" and fit_weight 1 plain SGD
        at LR 0.05 diverged within ~20 iterations in the core's synthetic regression test; "mean" (or
        fit_weight = 1/K) trained stably (tests/test_core_unikd_training.py).
    norm: AFF expander normalisation, "bn" or "gn" (batch-independent; use it for detection).
    sample_temperature, supp_weight: authors_code only, the softmax-KL temperature between the sampled
        logits and the weight of the supplementary term.
    """

    mode: str = "paper"
    channels: int = 64
    alpha: float = 1.0
    beta: float = 1.0
    temperature: float = 4.0
    fit_temperature: float | None = None
    logit_loss: str = "kd"
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    target_fit: str = "gaussian_nll"
    fit_weight: float = 1.0
    detach_target: bool = True
    fdp_shared: bool = True
    aff_enabled: bool = True
    logvar_bound: float = 4.0
    k_reduction: str = "mean"
    norm: str = "bn"
    sample_temperature: float = 1.0
    supp_weight: float = 1.0

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("logit_loss", self.logit_loss, LOGIT_LOSSES)
        check_choice("target_fit", self.target_fit, TARGET_FITS)
        check_choice("k_reduction", self.k_reduction, K_REDUCTIONS)
        check_choice("norm", self.norm, NORMS)
        for name in ("channels", "temperature", "logvar_bound", "sample_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.fit_temperature is not None and self.fit_temperature <= 0:
            raise ValueError(f"fit_temperature must be > 0, got {self.fit_temperature}")

    @classmethod
    def from_node(cls, node: Any, **overrides: Any) -> "UniKDOptions":
        """Options from a config node that uses the UNIKD key names (Detectron2's DISTILL.UNIKD, the
        classification package's UNIKD); `overrides` replace single fields after the node is read."""
        fields = dict(
            mode=node.MODE,
            channels=node.AFF.CHANNELS,
            alpha=node.ALPHA,
            beta=node.BETA,
            temperature=node.TEMPERATURE,
            fit_temperature=node.FIT_TEMPERATURE,
            logit_loss=node.LOGIT_LOSS,
            dkd_alpha=node.DKD_ALPHA,
            dkd_beta=node.DKD_BETA,
            target_fit=node.TARGET_FIT,
            fit_weight=node.FIT_WEIGHT,
            detach_target=node.DETACH_TARGET,
            fdp_shared=node.FDP_SHARED,
            aff_enabled=node.AFF.ENABLED,
            logvar_bound=node.LOGVAR_BOUND,
            k_reduction=node.K_REDUCTION,
            sample_temperature=node.SAMPLE_TEMPERATURE,
            supp_weight=node.SUPP_WEIGHT,
        )
        fields.update(overrides)
        return cls(**fields)

    @property
    def fit_scale(self) -> float:
        """Divisor of the teacher logits in the fit target."""
        return self.fit_temperature if self.fit_temperature is not None else self.temperature
