"""Closed-form losses between diagonal Gaussians (UniKD paper Eq. 6 and the teacher-fit NLL).

Both losses take tensors of shape [..., K]: they are summed over the last (label) dimension K and
averaged over every leading dimension (images or ROIs). They are computed in float32 whatever the input
dtype, because exp() of a half-precision log-variance overflows at about 11.

Stability: the functions are exact. The only guard is a WIDE hard clamp of every log-variance to
[-LOGVAR_CLAMP, LOGVAR_CLAMP]; it never binds for the FDP outputs (the FDP bounds its log-variance
smoothly to a much narrower range) and exists only so that exp() cannot overflow float32 for arbitrary
caller inputs (exp(2 * 30) ~ 1e26 < 3.4e38).
"""
from __future__ import annotations

import torch
from torch import Tensor

LOGVAR_CLAMP = 30.0


def _prepare(*tensors: Tensor) -> list[Tensor]:
    """Checks that all tensors share one shape of rank >= 1 and returns them as float32."""
    shape = tensors[0].shape
    if len(shape) == 0:
        raise ValueError("Gaussian parameters must have at least one dimension (the label dimension K)")
    for t in tensors[1:]:
        if t.shape != shape:
            raise ValueError(f"shape mismatch between Gaussian parameters: {tuple(shape)} vs {tuple(t.shape)}")
    return [t.float() for t in tensors]


def _clamp_logvar(logvar: Tensor) -> Tensor:
    """Hard clamp against float32 overflow only (see the module docstring)."""
    return logvar.clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)


def gaussian_kl(mu_s: Tensor, logvar_s: Tensor, mu_t: Tensor, logvar_t: Tensor) -> Tensor:
    """KL(N(mu_s, var_s) || N(mu_t, var_t)) of diagonal Gaussians, paper Eq. 6.

    KL = 1/2 * sum_k [var_s/var_t + (mu_t - mu_s)^2/var_t - 1 + logvar_t - logvar_s], summed over K and
    averaged over the leading dimensions. var_s/var_t is evaluated as exp(logvar_s - logvar_t) so the ratio
    stays finite even when both variances are tiny or huge.
    """
    mu_s, logvar_s, mu_t, logvar_t = _prepare(mu_s, logvar_s, mu_t, logvar_t)
    logvar_s, logvar_t = _clamp_logvar(logvar_s), _clamp_logvar(logvar_t)
    per_dim = (
        torch.exp(logvar_s - logvar_t)
        + (mu_t - mu_s).pow(2) * torch.exp(-logvar_t)
        - 1.0
        + logvar_t
        - logvar_s
    )
    return 0.5 * per_dim.sum(dim=-1).mean()


def gaussian_nll(mu: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
    """Negative log-likelihood of `target` under N(mu, exp(logvar)): the UniKD teacher-fit term L_fit.

    L_fit = 1/2 * sum_k [logvar + (target - mu)^2 / exp(logvar)], summed over K and averaged over the leading
    dimensions. The constant K/2 * log(2 pi) is dropped: it has no gradient and would only offset the
    logged value.
    """
    mu, logvar, target = _prepare(mu, logvar, target)
    logvar = _clamp_logvar(logvar)
    per_dim = logvar + (target - mu).pow(2) * torch.exp(-logvar)
    return 0.5 * per_dim.sum(dim=-1).mean()
