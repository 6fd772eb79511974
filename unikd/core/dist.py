"""DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022): relations, not values.

With the softened predictions Y = softmax(Z / tau) in [N, C] of both networks (the paper's losses):

    rho(a, b) = <a - mean(a), b - mean(b)> / (||a - mean(a)|| * ||b - mean(b)|| + eps)    (Pearson, eps 1e-8)
    L_inter   = 1 - 1/N sum_i rho(Y_s[i, :], Y_t[i, :])      each sample's class ranking
    L_intra   = 1 - 1/C sum_c rho(Y_s[:, c], Y_t[:, c])      each class's ranking of the batch
    L_DIST    = tau^2 * (beta * L_inter + gamma * L_intra)

Official code: hunto/image_classification_sota, lib/models/losses/dist_kd.py (the eps added to the product of
the norms), used by lib/models/losses/kd_loss.py.
"""
from __future__ import annotations

from torch import Tensor

from .logit_kd import _check_logits, prepare_logits

PEARSON_EPS = 1e-8  # hunto/image_classification_sota lib/models/losses/dist_kd.py, cosine_similarity


def pearson_rows(a: Tensor, b: Tensor, eps: float = PEARSON_EPS) -> Tensor:
    """rho(a[i], b[i]) of every row of two [N, M] tensors, [N]: the cosine of the rows centred on their means."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    standardize: bool = False,
) -> Tensor:
    """L_DIST (module docstring) of [N, C] logits; a scalar. The inter-class part correlates the rows of Y, the
    intra-class part its columns. With `standardize`, both logits are z-scored per sample first."""
    _check_logits(logits_s, logits_t, temperature)
    z_s, z_t = prepare_logits(logits_s, logits_t, standardize)
    y_s = (z_s / temperature).softmax(dim=1)
    y_t = (z_t / temperature).softmax(dim=1)
    inter = 1 - pearson_rows(y_s, y_t).mean()
    intra = 1 - pearson_rows(y_s.T, y_t.T).mean()
    return temperature**2 * (beta * inter + gamma * intra)
