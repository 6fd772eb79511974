"""UniKD (Harmonizing Knowledge Transfer in Neural Network with Unified Distillation, ECCV 2024) as one term.

Paper mode (the default). Each network's tapped maps (finest to coarsest) are fused by its own AFF to the
finest of them (Eq. 4); the fused maps are pooled per sample (globally for images, ROIAlign on the student's
sampled proposals in detection) and the shared FDP predicts a diagonal Gaussian over the logit width K. The
teacher-side Gaussian is fitted to the teacher's logits divided by the fit temperature and the student's is
pulled to it by the closed-form KL (Eq. 6); the logit term (Eq. 1, or DKD) completes the loss
(`unikd.core.unikd.UniKDLoss`; reductions and stability choices in docs/DESIGN.md sections 5 and 8).

authors_code mode reproduces the authors' research code, which differs per task (FabienCode/mdistiller at
c22a722): in classification (mdistiller/distillers/UniLogits.py) the student's AFF against the teacher's
stage-1 pre-activation map, sampled softmax-KLs and DKD, the warm-up ramping only the logit loss; in
detection (detection/model/rcnn.py, detection/configs/UniKD/*.yaml) each network's own box-pooler features
feed its own class and box-regression FDPs (`unikd.core.unikd.DetectionAuthorsUniKD`). One necessary
deviation there: the log-variances are bounded smoothly (AUTHORS_CODE.LOGVAR_BOUND 10; 0 = the authors'
unbounded ones), since unbounded ones overflowed to NaN at the second iteration of the stability test.

Detection preset: tau 1 (at 4 the tau^2-scaled term made from-scratch demo students diverge within 25
iterations), the fit target the ROI logits / 4, log-variance bound 2, GroupNorm (per-GPU detection batches
are 1-8 images), DKD beta 0.25 and supplementary weight 0.1 (the authors' detection configs).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.aff import NORMS
from ..core.checks import check_choice
from ..core.unikd import REG_TARGETS, DetectionAuthorsUniKD, UniKDLoss
from .base import (
    NEEDS_FEATURES, NEEDS_LOGITS, NEEDS_REGION_OUTPUTS, NEEDS_TARGETS, Batch, Term, TermContext, option,
    register_term,
)
from .features import log_taps, select_features
from .fitnet import FPN_LEVELS
from .kd import StandardizeOptions

MODES = ("paper", "authors_code")
LOGIT_LOSSES = ("kd", "dkd", "none")
TARGET_FITS = ("gaussian_nll", "none")
K_REDUCTIONS = ("sum", "mean")


@dataclass
class AFFOptions:
    enabled: bool = option(True, "fuse the tapped levels with AFF; false: the FDP reads the coarsest map alone")
    channels: int = option(32, "AFF width C")


@dataclass
class AuthorsCodeOptions:
    reg_head: bool = option(True, "detection: the FDPs' box-regression head and its KD terms (the authors')")
    reg_target: str = option("teacher", "detection: deltas the student's box sample is tied to (teacher | student)")
    logvar_bound: float = option(10.0, "detection: smooth bound of the FDPs' log-variances; 0: unbounded")
    teacher_feature: str = option("stage1", "classification: the teacher map (pre-activation) its FDP reads")


@dataclass
class UniKDOptions(StandardizeOptions):
    """UniKD's switches and weights (module docstring); validated on construction.

    The fit's gradient w.r.t. the mean scales with K / var, so with k_reduction "sum" and fit_weight 1 plain
    SGD at LR 0.05 diverged within ~20 iterations in the core's synthetic regression test; "mean" (or
    fit_weight = 1/K) trained stably (tests/test_core_unikd_training.py)."""

    PRESETS = {"detection": {
        "in_features": FPN_LEVELS, "num_levels": 0, "temperature": 1.0, "fit_temperature": 4.0, "dkd_beta": 0.25,
        "logvar_bound": 2.0, "norm": "gn", "supp_weight": 0.1,
    }}

    mode: str = option("paper", "paper | authors_code (the authors' research code)")
    in_features: list = option(["stem", "stage*"], "the tapped features, finest to coarsest")
    num_levels: int = option(2, "fuse the deepest NUM_LEVELS of the tapped features (0: all of them)")
    alpha: float = option(1.0, "weight of the feature-distribution KL, L_FL")
    beta: float = option(1.0, "weight of the logit term L_L")
    logit_loss: str = option("kd", "the logit term: kd (Eq. 1) | dkd | none (authors_code: always dkd)")
    temperature: float = option(4.0, "temperature tau of the logit term")
    fit_temperature: float | None = option(None, "the fit target is the teacher logits / this (None: tau)")
    dkd_alpha: float = option(1.0, "DKD's alpha when the logit term is DKD")
    dkd_beta: float = option(8.0, "DKD's beta when the logit term is DKD")
    target_fit: str = option("gaussian_nll", "fit the teacher Gaussian to the teacher logits: gaussian_nll | none")
    fit_weight: float = option(1.0, "weight of the teacher fit")
    detach_target: bool = option(True, "use the teacher Gaussian as a constant target inside L_FL")
    fdp_shared: bool = option(True, "one FDP for both networks (paper) instead of one per network")
    logvar_bound: float = option(4.0, "s of the FDP's smooth bound logvar = s * tanh(raw / s)")
    k_reduction: str = option("mean", "L_FL and L_fit averaged (mean) or summed (sum, Eq. 6 as printed) over K")
    norm: str = option("bn", "AFF expander normalisation: bn | gn (batch-independent)")
    pooler_resolution: int = option(4, "detection: ROIAlign output size on the fused map before the FDP's pool")
    sample_temperature: float = option(1.0, "authors_code: softmax-KL temperature between the sampled logits")
    supp_weight: float = option(1.0, "authors_code: weight of the supplementary term")
    aff: AFFOptions = option(AFFOptions, "Adaptive Features Fusion")
    authors_code: AuthorsCodeOptions = option(AuthorsCodeOptions, "authors_code mode only")

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("logit_loss", self.logit_loss, LOGIT_LOSSES)
        check_choice("target_fit", self.target_fit, TARGET_FITS)
        check_choice("k_reduction", self.k_reduction, K_REDUCTIONS)
        check_choice("norm", self.norm, NORMS)
        check_choice("authors_code.reg_target", self.authors_code.reg_target, REG_TARGETS)
        for name, value in (("aff.channels", self.aff.channels), ("temperature", self.temperature),
                            ("logvar_bound", self.logvar_bound), ("sample_temperature", self.sample_temperature)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.fit_temperature is not None and self.fit_temperature <= 0:
            raise ValueError(f"fit_temperature must be > 0, got {self.fit_temperature}")

    @property
    def fit_scale(self) -> float:
        """Divisor of the teacher logits in the fit target."""
        return self.fit_temperature if self.fit_temperature is not None else self.temperature


@register_term
class UniKDTerm(Term):
    """loss_unikd_feat (alpha * L_FL), loss_unikd_fit (the teacher fit; loss_unikd_supp in authors_code mode)
    and loss_unikd_logit (beta * L_L; LOGIT_LOSS none leaves the logits to another term of the set)."""

    name = "unikd"
    Options = UniKDOptions
    requires = frozenset({NEEDS_FEATURES, NEEDS_LOGITS, NEEDS_TARGETS})

    def __init__(self, options: UniKDOptions, context: TermContext) -> None:
        super().__init__(options, context)
        self.authors_code = options.mode == "authors_code"
        # The authors wrote one code per task: their detection variant reads each network's box branch.
        self.on_regions = self.authors_code and context.region_feature_channels is not None
        if self.on_regions:
            bound = options.authors_code.logvar_bound
            channels_s, channels_t = context.region_feature_channels
            self.loss = DetectionAuthorsUniKD(
                channels_s, channels_t, context.num_outputs, context.box_delta_outputs, options,
                reg_head=options.authors_code.reg_head, reg_target=options.authors_code.reg_target,
                logvar_bound=bound if bound > 0 else None,
            )
            return
        key = "UNIKD.IN_FEATURES"
        student = select_features(key, context.student_features, options.in_features, "student", options.num_levels)
        if self.authors_code:
            teacher = select_features("UNIKD.AUTHORS_CODE.TEACHER_FEATURE", context.teacher_features,
                                      [options.authors_code.teacher_feature], "teacher")
        else:
            teacher = select_features(key, context.teacher_features, options.in_features, "teacher",
                                      options.num_levels)
        log_taps(key, student, teacher)
        self.student_levels = [spec.name for spec in student]
        self.teacher_levels = [spec.name for spec in teacher]
        self.loss = UniKDLoss([s.channels for s in student], [t.channels for t in teacher], context.num_outputs,
                              options)

    def requirements(self) -> frozenset[str]:
        if self.on_regions:
            return frozenset({NEEDS_LOGITS, NEEDS_TARGETS, NEEDS_REGION_OUTPUTS})
        return self.requires

    def logit_losses(self) -> frozenset[str]:
        if self.authors_code:
            return frozenset({"dkd"})
        return frozenset({self.options.logit_loss}) - {"none"}

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        if self.on_regions:
            student, teacher = batch.student_regions, batch.teacher_regions
            losses = self.loss(student.box_features, teacher.box_features, batch.student_logits,
                               batch.teacher_logits, student.deltas, teacher.deltas, batch.targets)
        else:
            preact = self.authors_code  # the authors' classification code reads the teacher's pre-activation map
            region_pool = None
            if batch.region_pool is not None:
                size = self.options.pooler_resolution
                region_pool = lambda fused: batch.region_pool(fused, size)  # noqa: E731
            losses = self.loss(
                [batch.feature("student", name) for name in self.student_levels],
                [batch.feature("teacher", name, preact) for name in self.teacher_levels],
                batch.student_logits, batch.teacher_logits, target=batch.targets, region_pool=region_pool,
            )
        return {f"loss_{self.name}_{key.removeprefix('loss_')}": value for key, value in losses.items()}

    def scheduled(self, losses: dict[str, Tensor], factor: float) -> dict[str, Tensor]:
        """authors_code in classification: only the DKD logit loss ramps in (UniLogits.py: only `loss_logits`
        carries min(epoch / WARMUP, 1)); otherwise every UniKD loss."""
        if not self.authors_code or self.on_regions:
            return super().scheduled(losses, factor)
        logit_key = f"loss_{self.name}_logit"
        return {key: factor * value if key == logit_key else value for key, value in losses.items()}
