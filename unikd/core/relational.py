"""Relation-based distillation: similarity-preserving KD and relational KD.

Both compare structures built between the N samples of a batch, so student and teacher may have
different feature widths; only N must agree. Inputs of any rank >= 2 are flattened to [N, D]. The math
runs in float32 and the teacher side is detached.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _flatten_pair(name: str, x_s: Tensor, x_t: Tensor, min_batch: int) -> tuple[Tensor, Tensor]:
    """[N, ...] -> [N, D] float32 pair (teacher detached) after checking the shared batch size."""
    if x_s.dim() < 2 or x_t.dim() < 2 or x_s.shape[0] != x_t.shape[0]:
        raise ValueError(
            f"{name} expects [N, ...] inputs with the same N, got {tuple(x_s.shape)} and {tuple(x_t.shape)}"
        )
    if x_s.shape[0] < min_batch:
        raise ValueError(f"{name} needs at least {min_batch} samples, got {x_s.shape[0]}")
    return x_s.flatten(1).float(), x_t.detach().flatten(1).float()


def _similarity(f: Tensor) -> Tensor:
    """SP's G = row-wise L2-normalised Gram matrix f f^T, [N, N]."""
    return F.normalize(f @ f.t(), p=2.0, dim=1)


def sp_loss(feat_s: Tensor, feat_t: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori, ICCV 2019): L_SP = ||G_s - G_t||_F^2 / N^2."""
    f_s, f_t = _flatten_pair("sp_loss", feat_s, feat_t, min_batch=1)
    n = f_s.shape[0]
    return (_similarity(f_s) - _similarity(f_t)).pow(2).sum() / (n * n)


def _pairwise_distances(e: Tensor, squared: bool, eps: float) -> Tensor:
    """psi_D(i, j) = ||e_i - e_j|| (or its square), [N, N], with an exact zero diagonal.

    ||e_i||^2 + ||e_j||^2 - 2 <e_i, e_j> is clamped at eps before the square root, so the root never sees
    0 (or a negative rounding error) and its gradient stays finite.
    """
    sq_norms = e.pow(2).sum(dim=1)
    d = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * (e @ e.t())).clamp(min=eps)
    if not squared:
        d = d.sqrt()
    off_diagonal = 1.0 - torch.eye(e.shape[0], device=e.device, dtype=e.dtype)
    return d * off_diagonal


def _normalised_distances(e: Tensor, squared: bool, eps: float) -> Tensor:
    """psi_D / mu with mu the mean of the positive (that is, off-diagonal) pairwise distances."""
    d = _pairwise_distances(e, squared, eps)
    return d / d[d > 0].mean()


def rkd_distance_loss(emb_s: Tensor, emb_t: Tensor, squared: bool = False, eps: float = 1e-12) -> Tensor:
    """RKD-D (Park et al., CVPR 2019): mean over the N^2 pairs of smooth-L1(psi_D^s / mu_s, psi_D^t / mu_t)."""
    e_s, e_t = _flatten_pair("rkd_distance_loss", emb_s, emb_t, min_batch=2)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return F.smooth_l1_loss(_normalised_distances(e_s, squared, eps), _normalised_distances(e_t, squared, eps))


def _angles(e: Tensor) -> Tensor:
    """psi_A[i, j, k] = <u_ij, u_ik> with u_ij = (e_j - e_i) / ||e_j - e_i||, [N, N, N].

    F.normalize maps the zero vector e_i - e_i to 0, so every triple with j == i or k == i has angle 0.
    """
    u = F.normalize(e[None, :, :] - e[:, None, :], p=2.0, dim=2)
    return torch.bmm(u, u.transpose(1, 2))


def rkd_angle_loss(emb_s: Tensor, emb_t: Tensor) -> Tensor:
    """RKD-A: mean over all N^3 triples of smooth-L1(psi_A^s, psi_A^t), degenerate triples included."""
    e_s, e_t = _flatten_pair("rkd_angle_loss", emb_s, emb_t, min_batch=2)
    return F.smooth_l1_loss(_angles(e_s), _angles(e_t))


def rkd_loss(
    emb_s: Tensor,
    emb_t: Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
    squared: bool = False,
    eps: float = 1e-12,
) -> Tensor:
    """L_RKD = distance_weight * RKD-D + angle_weight * RKD-A (defaults 25 and 50 as in mdistiller)."""
    distance = rkd_distance_loss(emb_s, emb_t, squared=squared, eps=eps)
    return distance_weight * distance + angle_weight * rkd_angle_loss(emb_s, emb_t)
