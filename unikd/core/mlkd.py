"""Multi-level logit distillation (Jin et al., CVPR 2023), as the authors' code computes it.

Three alignments of the softmax outputs P = softmax(z / tau) in [N, C], each summed over several
temperatures tau:

    instance level   KD_tau = tau^2 * 1/N sum_i KL(P_t[i] || P_s[i])
    class level      CC_tau = 1/C * || P_t^T P_t - P_s^T P_s ||_F^2      (C x C Gram matrices)
    batch level      BC_tau = 1/N * || P_t P_t^T - P_s P_s^T ||_F^2      (N x N Gram matrices)

(the two correlation terms carry no tau^2 factor in the official code).

Confidence masks come from the teacher on the weak view at temperature 1: the sample mask keeps the
samples whose max probability is <= the batch median, the class mask keeps the classes whose summed
probability is <= the median over classes (numpy.percentile(x, 50), i.e. linear interpolation).

How the official KD_ours.forward_train combines them (kd weight w = cfg.KD.LOSS.KD_WEIGHT = 0.9,
temperatures (cfg.KD.TEMPERATURE = 4, 3, 5, 2, 6)):

    loss_kd = w * sum_tau [ f_s * KD_tau(weak) + KD_tau(v_tau) ]
    loss_cc = w * sum_tau   f_c * CC_tau(weak)
    loss_bc = w * sum_tau   f_s * BC_tau(weak)

where f_s and f_c are the fractions of True in the sample and class masks. The masks scale the
batch-averaged losses instead of selecting samples because the code multiplies the already reduced
loss by the mask and averages (`(loss * mask).mean()`, the per-sample `reduce=False` is commented out).
v_tau is the strong view for tau = 4, 3, 5 and the weak view for tau = 2, 6 (the code's strong-view KD
sum uses the weak logits for its last two temperatures); `strong_kd_views` makes this explicit.
The class- and batch-level losses of the strong view are computed there but not returned, so they do
not train. Cross-entropy (cfg.KD.LOSS.CE_WEIGHT = 0.1 times CE(weak) + CE(strong)) is the caller's.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_choice
from .logit_kd import _check_logits, per_sample_kd

OFFICIAL_TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)
OFFICIAL_STRONG_KD_VIEWS = ("strong", "strong", "strong", "weak", "weak")
_VIEWS = ("weak", "strong")


def _probs(logits: Tensor, temperature: float) -> Tensor:
    return F.softmax(logits.float() / temperature, dim=1)


def class_correlation_loss(logits_s: Tensor, logits_t: Tensor, temperature: float) -> Tensor:
    """||P_t^T P_t - P_s^T P_s||_F^2 / C: how the classes co-occur across the batch, as the code does it."""
    _check_logits(logits_s, logits_t, temperature)
    p_s, p_t = _probs(logits_s, temperature), _probs(logits_t, temperature)
    diff = p_t.T @ p_t - p_s.T @ p_s
    return diff.pow(2).sum() / logits_s.shape[1]


def batch_correlation_loss(logits_s: Tensor, logits_t: Tensor, temperature: float) -> Tensor:
    """||P_t P_t^T - P_s P_s^T||_F^2 / N: how alike the samples of the batch are, as the code does it."""
    _check_logits(logits_s, logits_t, temperature)
    p_s, p_t = _probs(logits_s, temperature), _probs(logits_t, temperature)
    diff = p_t @ p_t.T - p_s @ p_s.T
    return diff.pow(2).sum() / logits_s.shape[0]


def _at_most_median(values: Tensor) -> Tensor:
    """values <= their median, the median taken like numpy.percentile(values, 50).

    Both take the rank (n - 1) / 2 and, for even n, the midpoint b - (b - a) / 2 of the two middle
    values in float32, so the masks agree. The one exception is two middle values that are adjacent
    subnormal floats (< 1.2e-38), where numpy rounds (b - a) / 2 first; probabilities that small
    cannot be a sample's max probability and are never a median class sum in practice.
    """
    return values <= torch.quantile(values, 0.5, interpolation="linear")


def _check_teacher(logits_t: Tensor) -> None:
    if logits_t.dim() != 2 or logits_t.shape[0] == 0 or logits_t.shape[1] == 0:
        raise ValueError(f"teacher logits must be a non-empty [N, C] tensor, got shape {tuple(logits_t.shape)}")


def sample_confidence_mask(logits_t: Tensor) -> Tensor:
    """[N] bool: the teacher's max probability (temperature 1) is <= its median over the batch."""
    _check_teacher(logits_t)
    confidence = F.softmax(logits_t.detach().float(), dim=1).amax(dim=1)
    return _at_most_median(confidence)


def class_confidence_mask(logits_t: Tensor) -> Tensor:
    """[C] bool: the teacher's probability summed over the batch is <= its median over the classes."""
    _check_teacher(logits_t)
    class_confidence = F.softmax(logits_t.detach().float(), dim=1).sum(dim=0)
    return _at_most_median(class_confidence)


def check_temperatures(name: str, temperatures: Sequence[float]) -> tuple[float, ...]:
    """Return the temperatures as floats; raise ValueError naming `name` unless non-empty and all > 0."""
    if not temperatures or any(tau <= 0 for tau in temperatures):
        raise ValueError(f"{name} must be a non-empty sequence of values > 0, got {tuple(temperatures)}")
    return tuple(float(tau) for tau in temperatures)


def _check_mlkd_args(logits: Sequence[Tensor], temperatures: Sequence[float], strong_kd_views: Sequence[str]) -> None:
    shapes = {tuple(z.shape) for z in logits}
    if len(shapes) != 1 or logits[0].dim() != 2:
        raise ValueError(f"all four logits must be [N, C] with equal shapes, got {[tuple(z.shape) for z in logits]}")
    check_temperatures("temperatures", temperatures)
    if len(strong_kd_views) != len(temperatures):
        raise ValueError(
            f"strong_kd_views needs one view per temperature, got {len(strong_kd_views)} for {len(temperatures)}"
        )
    for view in strong_kd_views:
        check_choice("strong_kd_views entry", view, _VIEWS)


def mlkd_loss(
    logits_s_weak: Tensor,
    logits_s_strong: Tensor,
    logits_t_weak: Tensor,
    logits_t_strong: Tensor,
    temperatures: Sequence[float] = OFFICIAL_TEMPERATURES,
    strong_kd_views: Sequence[str] = OFFICIAL_STRONG_KD_VIEWS,
    weight: float = 0.9,
    standardize: bool = False,
) -> dict[str, Tensor]:
    """The MLKD distillation terms {"loss_kd", "loss_cc", "loss_bc"} (see the module docstring).

    `standardize` z-scores the logits of the instance-level KD terms only (`standardize_logits`): the
    logit-standardisation code (sunshangquan/logit-standardization-KD, mdistiller/distillers/MLKD.py) passes
    its switch to kd_loss and not to cc_loss, bc_loss or the confidence masks.

    `strong_kd_views[k]` names the view ("weak" or "strong") whose logits enter the unmasked
    instance-level term at `temperatures[k]`; pass ("strong",) * len(temperatures) for a pure
    strong-view term. The teacher only supplies targets, so its logits are detached.
    """
    _check_mlkd_args((logits_s_weak, logits_s_strong, logits_t_weak, logits_t_strong), temperatures, strong_kd_views)
    views = {
        "weak": (logits_s_weak, logits_t_weak.detach()),
        "strong": (logits_s_strong, logits_t_strong.detach()),
    }
    weak = views["weak"]
    sample_fraction = sample_confidence_mask(logits_t_weak).float().mean()
    class_fraction = class_confidence_mask(logits_t_weak).float().mean()
    loss_kd = sum(
        per_sample_kd(*weak, tau, standardize).mean() * sample_fraction
        + per_sample_kd(*views[view], tau, standardize).mean()
        for tau, view in zip(temperatures, strong_kd_views)
    )
    loss_cc = sum(class_correlation_loss(*weak, tau) for tau in temperatures) * class_fraction
    loss_bc = sum(batch_correlation_loss(*weak, tau) for tau in temperatures) * sample_fraction
    return {"loss_kd": weight * loss_kd, "loss_cc": weight * loss_cc, "loss_bc": weight * loss_bc}
