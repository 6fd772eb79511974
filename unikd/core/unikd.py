"""The UniKD loss module: AFF + FDP + Gaussian KL feature loss + logit loss (docs/DESIGN.md section 5).

Paper mode, per batch of images or ROIs:

    L_FL  = KL(N_s || N_t)                        (Eq. 6, N_t detached when detach_target)
    L_fit = NLL(teacher_logits / tau_fit | N_t)   (keeps N_t tied to the teacher's knowledge)
    L_L   = tau^2 * KL(p_t || p_s)                (Eq. 1) or DKD

and the returned terms are alpha * L_FL, fit_weight * L_fit and beta * L_L; with k_reduction "mean" (default) L_FL
and L_fit are divided by K. The caller adds its task loss. The teacher is constant for this loss: teacher
features and logits are detached on entry, so no gradient can reach the teacher network even when its
outputs were computed with autograd on. The teacher-side AFF (aff_t) and the FDP are trainable.

authors_code mode reproduces the authors' public code (see `unikd.terms.unikd.UniKDOptions`): a reparameterised sample per
network, a softmax-KL between the samples, a supplementary softmax-KL tying each sample to its own network's
logits, and DKD as the logit term. Their detection code differs again and is `DetectionAuthorsUniKD`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

from .aff import AdaptiveFeatureFusion
from .checks import check_choice
from .fdp import FeatureDistributionPredictor
from .gaussian import gaussian_kl, gaussian_nll
from .logit_kd import dkd_loss, kd_loss

if TYPE_CHECKING:  # the options live with the term (unikd.terms.unikd), which imports this module
    from ..terms.unikd import UniKDOptions

RegionPool = Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


def _sample(mu: Tensor, logvar: Tensor) -> Tensor:
    """Reparameterised sample z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class UniKDLoss(nn.Module):
    """UniKD distillation terms between a student and a frozen teacher.

    student_channels / teacher_channels: channel counts of the feature maps each network provides, ordered
    finest to coarsest. num_outputs: the label dimension K (classes for images or ROIs).
    """

    def __init__(
        self,
        student_channels: list[int],
        teacher_channels: list[int],
        num_outputs: int,
        options: "UniKDOptions",
    ) -> None:
        super().__init__()
        opts = options
        self.options = opts
        self.num_outputs = num_outputs
        self.paper_mode = opts.mode == "paper"
        self.logit_loss = opts.logit_loss if self.paper_mode else "dkd"
        self.shared_fdp = self.paper_mode and opts.fdp_shared

        gate = "complementary" if self.paper_mode else "independent"
        self.aff_s = self._make_aff(student_channels, gate)
        # authors_code: no teacher AFF, the FDP reads the teacher's raw finest map.
        self.aff_t = self._make_aff(teacher_channels, gate) if self.paper_mode else None
        teacher_width = opts.aff.channels if self.paper_mode else teacher_channels[0]

        if self.shared_fdp:
            self.fdp = self._make_fdp(opts.aff.channels)
        else:
            self.fdp_s = self._make_fdp(opts.aff.channels)
            self.fdp_t = self._make_fdp(teacher_width)

    def _make_aff(self, channels: list[int], gate: str) -> AdaptiveFeatureFusion:
        levels = channels if self.options.aff.enabled else channels[-1:]
        return AdaptiveFeatureFusion(levels, self.options.aff.channels, norm=self.options.norm, gate=gate)

    def _make_fdp(self, channels: int) -> FeatureDistributionPredictor:
        return FeatureDistributionPredictor(channels, self.num_outputs, logvar_bound=self.options.logvar_bound)

    def _fdps(self) -> tuple[FeatureDistributionPredictor, FeatureDistributionPredictor]:
        """(student FDP, teacher FDP); the same module twice when shared."""
        if self.shared_fdp:
            return self.fdp, self.fdp
        return self.fdp_s, self.fdp_t

    def _levels(self, feats: list[Tensor]) -> list[Tensor]:
        """All maps for AFF, or only the last (coarsest) one for the no-AFF ablation."""
        return list(feats) if self.options.aff.enabled else list(feats[-1:])

    def fuse(self, feats_s: list[Tensor], feats_t: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Fused student and teacher maps (authors_code: the teacher's raw finest map)."""
        feats_t = [f.detach() for f in feats_t]
        fused_s = self.aff_s(self._levels(feats_s))
        fused_t = self.aff_t(self._levels(feats_t)) if self.aff_t is not None else feats_t[0]
        return fused_s, fused_t

    def distribution_terms(
        self, region_s: Tensor, region_t: Tensor, logits_s: Tensor, logits_t: Tensor
    ) -> dict[str, Tensor]:
        """Feature-distribution terms from pooled or ROI-aligned regions ([N, C, H, W] or [N, C]).

        paper: {"loss_feat": alpha * L_FL, "loss_fit": fit_weight * L_fit} ("loss_fit" absent when
        target_fit is "none"). authors_code: {"loss_feat", "loss_supp"}. logits_* are [N, K], one row per
        region.
        """
        fdp_s, fdp_t = self._fdps()
        mu_s, logvar_s = fdp_s(region_s)
        mu_t, logvar_t = fdp_t(region_t)
        logits_t = logits_t.detach()
        if not self.paper_mode:
            return self._sampled_terms(mu_s, logvar_s, mu_t, logvar_t, logits_s, logits_t)

        opts = self.options
        k_scale = 1.0 / self.num_outputs if opts.k_reduction == "mean" else 1.0
        target_mu, target_logvar = (mu_t.detach(), logvar_t.detach()) if opts.detach_target else (mu_t, logvar_t)
        terms = {"loss_feat": opts.alpha * k_scale * gaussian_kl(mu_s, logvar_s, target_mu, target_logvar)}
        if opts.target_fit == "gaussian_nll":
            fit = gaussian_nll(mu_t, logvar_t, logits_t / opts.fit_scale)
            terms["loss_fit"] = opts.fit_weight * k_scale * fit
        return terms

    def _sampled_terms(
        self, mu_s: Tensor, logvar_s: Tensor, mu_t: Tensor, logvar_t: Tensor, logits_s: Tensor, logits_t: Tensor
    ) -> dict[str, Tensor]:
        """authors_code: softmax-KL between the two samples plus the supplementary sample-to-logits terms.

        Nothing is detached between the samples, as in the authors' code; kd_loss includes tau'^2 (1 at the
        CIFAR setting tau' = 1).
        """
        opts = self.options
        z_s, z_t = _sample(mu_s, logvar_s), _sample(mu_t, logvar_t)
        tau = opts.sample_temperature
        return {
            "loss_feat": opts.alpha * kd_loss(z_s, z_t, tau),
            "loss_supp": opts.supp_weight * (kd_loss(z_s, logits_s, tau) + kd_loss(z_t, logits_t, tau)),
        }

    def logit_terms(self, logits_s: Tensor, logits_t: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """{"loss_logit": beta * KD or DKD}; empty when logit_loss is "none". DKD needs `target` ([N] labels).

        `logit_standardize` z-scores both logits per sample first (`standardize_logits`)."""
        opts = self.options
        logits_t = logits_t.detach()
        if self.logit_loss == "none":
            return {}
        if self.logit_loss == "kd":
            return {"loss_logit": opts.beta * kd_loss(logits_s, logits_t, opts.temperature, opts.logit_standardize)}
        if target is None:
            raise ValueError("the DKD logit loss needs `target` (ground-truth class of every row)")
        loss = dkd_loss(logits_s, logits_t, target, opts.dkd_alpha, opts.dkd_beta, opts.temperature,
                        opts.logit_standardize)
        return {"loss_logit": opts.beta * loss}

    def forward(
        self,
        feats_s: list[Tensor],
        feats_t: list[Tensor],
        logits_s: Tensor,
        logits_t: Tensor,
        target: Tensor | None = None,
        region_pool: RegionPool | None = None,
    ) -> dict[str, Tensor]:
        """All UniKD terms, each a weighted scalar; the caller adds them to its task loss.

        region_pool maps a fused map to regions (e.g. ROIAlign for detection); by default the fused map is
        passed on whole and the FDP pools it globally.
        """
        pool = region_pool if region_pool is not None else _identity
        fused_s, fused_t = self.fuse(feats_s, feats_t)
        terms = self.distribution_terms(pool(fused_s), pool(fused_t), logits_s, logits_t)
        terms.update(self.logit_terms(logits_s, logits_t, target))
        return terms


REG_TARGETS = ("teacher", "student")


class DetectionAuthorsUniKD(nn.Module):
    """UniKD as the authors' detection code computes it (FabienCode/mdistiller at c22a722,
    detection/model/rcnn.py: the "UniKD" branch of `RCNNKD.forward` and `featPro`).

    Inputs are per ROI, for the same boxes: each network's own box-pooler features [R, C, P, P] (no AFF,
    no fusion), its class logits [R, K+1] and box deltas [R, D]. Each network has its own predictor: the
    globally pooled box feature feeds a class FDP (K+1 outputs) and, with `reg_head`, a box-regression FDP
    (D outputs); the log-variances are unbounded unless `logvar_bound` is set. One reparameterised sample
    is drawn from each Gaussian, in the order student class, student box, teacher class, teacher box.
    With KD(a, b) the softmax-KL at `sample_temperature` (gradient through both arguments, as the authors'
    `kd_loss`), the returned terms are

        loss_feat  = alpha * [KD(s_cls, t_cls) + KD(s_reg, t_reg)]
        loss_supp  = supp_weight * [KD(s_cls, z_s) + KD(s_reg, d_target) + KD(t_cls, z_t) + KD(t_reg, d_t)]
        loss_logit = beta * DKD(z_s, z_t; dkd_alpha, dkd_beta, temperature)

    where z are the class logits, d the box deltas, and d_target the teacher's deltas d_t (`reg_target`
    "teacher", the authors' code) or the student's own ("student"). The teacher's inputs are detached;
    the student's logits are not, so the supplementary term also pulls them towards the student's sample.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        num_classes: int,
        reg_dim: int,
        options: "UniKDOptions",
        *,
        reg_head: bool = True,
        reg_target: str = "teacher",
        logvar_bound: float | None = None,
    ) -> None:
        """`options` gives alpha, beta, supp_weight, sample_temperature and the DKD temperature, dkd_alpha and
        dkd_beta; its other fields belong to UniKDLoss."""
        super().__init__()
        self.reg_target = check_choice("reg_target", reg_target, REG_TARGETS)
        self.options = options
        self.reg_dim = reg_dim

        def fdp(channels: int, outputs: int) -> FeatureDistributionPredictor:
            return FeatureDistributionPredictor(channels, outputs, logvar_bound=logvar_bound)

        self.cls_s, self.cls_t = fdp(student_channels, num_classes), fdp(teacher_channels, num_classes)
        self.reg_s = fdp(student_channels, reg_dim) if reg_head else None
        self.reg_t = fdp(teacher_channels, reg_dim) if reg_head else None

    @staticmethod
    def _samples(
        cls_fdp: FeatureDistributionPredictor, reg_fdp: FeatureDistributionPredictor | None, box_features: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """One network's class sample and box sample (None without the regression head), in that order."""
        z_cls = _sample(*cls_fdp(box_features))
        return z_cls, (_sample(*reg_fdp(box_features)) if reg_fdp is not None else None)

    def forward(
        self,
        box_features_s: Tensor,
        box_features_t: Tensor,
        logits_s: Tensor,
        logits_t: Tensor,
        deltas_s: Tensor,
        deltas_t: Tensor,
        target: Tensor,
    ) -> dict[str, Tensor]:
        """{"loss_feat", "loss_supp", "loss_logit"}, each weighted (class docstring); `target` [R] are the
        ROIs' sampling labels (DKD)."""
        if self.reg_s is not None and deltas_t.shape[1] != self.reg_dim:
            raise ValueError(
                f"the teacher's box deltas have {deltas_t.shape[1]} columns, the regression FDP predicts "
                f"{self.reg_dim}: student and teacher need the same class-agnostic box regression setting"
            )
        logits_t, deltas_t = logits_t.detach(), deltas_t.detach()
        s_cls, s_reg = self._samples(self.cls_s, self.reg_s, box_features_s)
        t_cls, t_reg = self._samples(self.cls_t, self.reg_t, box_features_t.detach())
        opts = self.options
        tau = opts.sample_temperature
        feat = kd_loss(s_cls, t_cls, tau)
        supp = kd_loss(s_cls, logits_s, tau) + kd_loss(t_cls, logits_t, tau)
        if s_reg is not None:
            reg_target = deltas_t if self.reg_target == "teacher" else deltas_s
            feat = feat + kd_loss(s_reg, t_reg, tau)
            supp = supp + kd_loss(s_reg, reg_target, tau) + kd_loss(t_reg, deltas_t, tau)
        logit = dkd_loss(logits_s, logits_t, target, opts.dkd_alpha, opts.dkd_beta, opts.temperature,
                         opts.logit_standardize)
        return {"loss_feat": opts.alpha * feat, "loss_supp": opts.supp_weight * supp, "loss_logit": opts.beta * logit}
