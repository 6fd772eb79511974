"""Normalized KD (Yang et al., ICCV 2023, "From Knowledge Distillation to Self-Knowledge Distillation").

NKD splits the KD cross-entropy into a target part and a normalised non-target part:

    L_NKD = -1/N sum_i p_t(y_i) log p_s(y_i)                            (softmax at temperature 1)
            - gamma * T^2 * 1/N sum_i sum_{c != y_i} q_t(c) log q_s(c)  (softmax at temperature T over
                                                                          the C-1 non-target logits only)

Renormalising over the non-target classes removes the factor (1 - p_t(y)) that shrinks the non-target
term in classic KD, so gamma sets its weight directly. Only the non-target part uses T (and T^2).
The defaults T = 1, gamma = 1.5 are the authors' ImageNet setting; their CIFAR-100 config uses
T = 3, gamma = 3.5.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .logit_kd import _check_logits, _check_target, _non_target, prepare_logits


def nkd_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    target: Tensor,
    temperature: float = 1.0,
    gamma: float = 1.5,
    standardize: bool = False,
) -> Tensor:
    """L_NKD (see the module docstring) for [N, C] logits and integer targets [N]; a scalar.

    The teacher only supplies targets, so its logits are detached (the official code detaches the
    target-class weight and runs the teacher without gradients). With `standardize`, both logits are
    z-scored per sample over all C classes first (`standardize_logits`), before both parts.
    """
    _check_logits(logits_s, logits_t, temperature)
    _check_target(target, *logits_s.shape, method="NKD")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    target = target.long()
    z_s, z_t = prepare_logits(logits_s, logits_t.detach(), standardize)

    log_p_s_target = F.log_softmax(z_s, dim=1).gather(1, target[:, None]).squeeze(1)
    p_t_target = F.softmax(z_t, dim=1).gather(1, target[:, None]).squeeze(1)
    loss_target = -(p_t_target * log_p_s_target).mean()

    log_q_s = F.log_softmax(_non_target(z_s, target) / temperature, dim=1)
    q_t = F.softmax(_non_target(z_t, target) / temperature, dim=1)
    loss_non_target = -(q_t * log_q_s).sum(dim=1).mean()
    return loss_target + gamma * temperature**2 * loss_non_target
