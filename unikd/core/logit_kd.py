"""Logit distillation losses: classic KD (UniKD paper Eq. 1) and decoupled KD (Zhao et al., CVPR 2022).

Both work on [N, C] logits in float32 and only ever touch log-probabilities produced by log_softmax /
logsumexp, so logits of magnitude 1e4 give finite losses and gradients. Both are multiplied by
temperature^2 so that the gradient magnitude does not shrink as the temperature grows (Hinton et al.).

`standardize` (logit standardisation, Sun et al., CVPR 2024) z-scores both networks' logits per sample before
the temperature softmax (`standardize_logits`); every logit loss of the core takes the same switch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_logits(logits_s: Tensor, logits_t: Tensor, temperature: float) -> None:
    if logits_s.dim() != 2 or logits_s.shape != logits_t.shape:
        raise ValueError(
            f"logits must both be [N, C] with equal shapes, got {tuple(logits_s.shape)} and {tuple(logits_t.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


# sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py `normalize`: std + 1e-7 in the denominator
STANDARDIZE_EPS = 1e-7


def standardize_logits(logits: Tensor) -> Tensor:
    """Z-score of every row of [N, C] logits, in float32 (Sun et al., CVPR 2024, the Z-score pre-process):

        Z(z) = (z - mean(z)) / (eps + std(z))

    over the C classes, with the unbiased std (divisor C - 1: torch.std's default, which the official
    `normalize` uses) and eps = STANDARDIZE_EPS. The temperature then divides Z(z) as it divided z.
    """
    z = logits.float()
    return (z - z.mean(dim=-1, keepdim=True)) / (STANDARDIZE_EPS + z.std(dim=-1, keepdim=True))


def prepare_logits(logits_s: Tensor, logits_t: Tensor, standardize: bool) -> tuple[Tensor, Tensor]:
    """Both logits in float32, z-scored per sample (`standardize_logits`) when `standardize` is set."""
    if standardize:
        return standardize_logits(logits_s), standardize_logits(logits_t)
    return logits_s.float(), logits_t.float()


def _kl_per_sample(log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
    """KL(p_t || p_s) over the last dimension from log-probabilities; one value per row.

    exp(log_p_t) underflows to exactly 0 for vanishing teacher probabilities and multiplies a finite
    difference, so no 0 * inf can arise.
    """
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)


def per_sample_kd(logits_s: Tensor, logits_t: Tensor, temperature: float, standardize: bool = False) -> Tensor:
    """tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)) of every row, [N]; with `standardize`, z is Z(z)
    (`standardize_logits`) in both softmaxes."""
    _check_logits(logits_s, logits_t, temperature)
    z_s, z_t = prepare_logits(logits_s, logits_t, standardize)
    log_p_s = F.log_softmax(z_s / temperature, dim=-1)
    log_p_t = F.log_softmax(z_t / temperature, dim=-1)
    return _kl_per_sample(log_p_t, log_p_s) * temperature**2


def kd_loss(logits_s: Tensor, logits_t: Tensor, temperature: float, standardize: bool = False) -> Tensor:
    """tau^2 * KL(softmax(z_t/tau) || softmax(z_s/tau)), paper Eq. 1; summed over classes, averaged over N.

    With `standardize`, z is Z(z) (`standardize_logits`) in both softmaxes."""
    return per_sample_kd(logits_s, logits_t, temperature, standardize).mean()


def _non_target(logits: Tensor, target: Tensor) -> Tensor:
    """The K-1 non-target logits of every row, [N, C-1] (gathered, not masked with -inf)."""
    keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, target[:, None], False)
    return logits[keep].view(logits.shape[0], logits.shape[1] - 1)


def _binary_log_probs(logits: Tensor, target: Tensor) -> Tensor:
    """[log p_target, log(1 - p_target)] per row, [N, 2].

    log(1 - p_target) is computed as logsumexp(non-target logits) - logsumexp(all logits) instead of
    log1p(-p_target), which would be -inf (and its gradient NaN) once p_target rounds to 1.
    """
    log_z = torch.logsumexp(logits, dim=-1)
    log_p_target = logits.gather(1, target[:, None]).squeeze(1) - log_z
    log_p_rest = torch.logsumexp(_non_target(logits, target), dim=-1) - log_z
    return torch.stack([log_p_target, log_p_rest], dim=-1)


def _check_target(target: Tensor, batch: int, num_classes: int, method: str = "DKD") -> None:
    """Ground-truth targets of a target/non-target split: integer class indices, one per row, in [0, C)."""
    if num_classes < 2:
        raise ValueError(f"{method} needs at least 2 classes, got {num_classes}")
    bad_dtype = target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool
    if target.shape != (batch,) or bad_dtype:
        raise ValueError(
            f"target must be an integer tensor of shape [{batch}], "
            f"got dtype {target.dtype} and shape {tuple(target.shape)}"
        )
    low, high = (int(target.min()), int(target.max())) if target.numel() else (0, 0)
    if low < 0 or high >= num_classes:
        raise ValueError(f"target values must lie in [0, {num_classes}), got values in [{low}, {high}]")


def dkd_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    standardize: bool = False,
) -> Tensor:
    """Decoupled KD: tau^2 * (alpha * TCKD + beta * NCKD), each averaged over N.

    TCKD is KL(teacher || student) of the binary distributions (p_target, 1 - p_target); NCKD is
    KL(teacher || student) of the softmax restricted to the non-target classes. Per sample they satisfy
    KD = TCKD + (1 - p_target_teacher) * NCKD, which is why the weights can be tuned separately.
    `target` holds the ground-truth class index of every row, [N] integers in [0, C). With `standardize`,
    both logits are z-scored per sample over all C classes first (`standardize_logits`).
    """
    _check_logits(logits_s, logits_t, temperature)
    _check_target(target, *logits_s.shape)
    target = target.long()
    z_s, z_t = (z / temperature for z in prepare_logits(logits_s, logits_t, standardize))
    tckd = _kl_per_sample(_binary_log_probs(z_t, target), _binary_log_probs(z_s, target))
    nckd = _kl_per_sample(
        F.log_softmax(_non_target(z_t, target), dim=-1),
        F.log_softmax(_non_target(z_s, target), dim=-1),
    )
    return (alpha * tckd.mean() + beta * nckd.mean()) * temperature**2
