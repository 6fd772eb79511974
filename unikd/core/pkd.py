"""PKD (Cao et al., NeurIPS 2022): feature imitation through the Pearson correlation coefficient.

Official code: open-mmlab/mmrazor, `mmrazor/models/losses/pkd_loss.py` (`PKDLoss`). Each map is normalised per
channel over the batch and the locations, f^ = (f - mu_c) / (sigma_c + 1e-6) with mu_c, sigma_c the mean and the
(unbiased, torch.std) standard deviation of channel c over (N, H, W); the loss of one map pair is

    L_PKD = 1 / (2 N C H W) * sum (f^_s - f^_t)^2   ( = 1 - r, r the Pearson correlation, paper Eq. 4)

i.e. `F.mse_loss(norm_S, norm_T) / 2`. As there, a student map of another size is first resized bilinearly to
the teacher's (`resize_stu=True`).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

PKD_EPS = 1e-6  # mmrazor pkd_loss.py: feat / (std + 1e-6)


def pearson_normalise(feat: Tensor, eps: float = PKD_EPS) -> Tensor:
    """f^ = (f - mu_c) / (sigma_c + eps) per channel c, statistics over the batch and the locations (N, H, W)."""
    mean = feat.mean(dim=(0, 2, 3), keepdim=True)
    std = feat.std(dim=(0, 2, 3), keepdim=True)
    return (feat - mean) / (std + eps)


def pkd_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """L_PKD = mean (f^_s - f^_t)^2 / 2 of one map pair, in float32; the teacher map is detached."""
    if student.dim() != 4 or teacher.dim() != 4:
        raise ValueError(f"PKD needs two feature maps [N, C, H, W], got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    teacher = teacher.detach().float()
    student = student.float()
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(student, teacher.shape[-2:], mode="bilinear")
    if student.shape != teacher.shape:
        raise ValueError(f"PKD shapes differ: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
    return F.mse_loss(pearson_normalise(student), pearson_normalise(teacher)) / 2
