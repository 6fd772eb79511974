"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): match normalised spatial attention maps.

A map F [N, C, H, W] is reduced to a spatial attention Q = vec(mean_c |F_c|^p) of length H*W and
L2-normalised per sample, a = Q / ||Q||_2. The loss over paired stages j is

    L_AT = sum_j mean_{n, k} (a_s[j]_{n,k} - a_t[j]_{n,k})^2,

the mean running over the batch and the H*W positions (the reduction used by mdistiller). When the two
maps of a pair differ in size, each is adaptive-average-pooled to (min(Hs, Ht), min(Ws, Wt)) before the
attention is taken, so the larger map is pooled down to the smaller one (mdistiller compares H only and
pools to a square; pooling per dimension also serves the non-square maps of a detector).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .pooling import average_pool_to


def _check_p(p: float) -> None:
    """p >= 1: for p < 1 the gradient of |x|^p is infinite at the exact zeros that ReLU maps contain."""
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")


def attention_map(feat: Tensor, p: float = 2.0) -> Tensor:
    """a = normalize(vec(mean_c |F_c|^p)), [N, H*W] in float32 with unit L2 norm per row."""
    if feat.dim() != 4:
        raise ValueError(f"attention_map expects [N, C, H, W], got shape {tuple(feat.shape)}")
    _check_p(p)
    feat = feat.float()
    # |x|^p is x^p for an even integer p: the abs would be one more pass over the map, forward and backward
    powered = feat.pow(p) if float(p).is_integer() and int(p) % 2 == 0 else feat.abs().pow(p)
    q = powered.mean(dim=1).flatten(1)
    return F.normalize(q, p=2.0, dim=1)


def _pool_to_common_size(feat_s: Tensor, feat_t: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pools both maps to (min H, min W); a map already at that size is unchanged."""
    size = (min(feat_s.shape[2], feat_t.shape[2]), min(feat_s.shape[3], feat_t.shape[3]))
    return average_pool_to(feat_s, size), average_pool_to(feat_t, size)


def _check_pair(index: int, feat_s: Tensor, feat_t: Tensor) -> None:
    if feat_s.dim() != 4 or feat_t.dim() != 4 or feat_s.shape[0] != feat_t.shape[0]:
        raise ValueError(
            f"AT pair {index} must be [N, C, H, W] maps with the same N, "
            f"got {tuple(feat_s.shape)} and {tuple(feat_t.shape)}"
        )


def at_loss(feats_s: list[Tensor], feats_t: list[Tensor], p: float = 2.0) -> Tensor:
    """L_AT = sum over pairs of mean((a_s - a_t)^2); channel counts may differ, the teacher is detached."""
    if not feats_s or len(feats_s) != len(feats_t):
        raise ValueError(f"need equally long, non-empty feature lists, got {len(feats_s)} and {len(feats_t)}")
    _check_p(p)
    total = torch.zeros((), device=feats_s[0].device)
    for index, (feat_s, feat_t) in enumerate(zip(feats_s, feats_t)):
        _check_pair(index, feat_s, feat_t)
        pooled_s, pooled_t = _pool_to_common_size(feat_s.float(), feat_t.detach().float())
        total = total + (attention_map(pooled_s, p) - attention_map(pooled_t, p)).pow(2).mean()
    return total
