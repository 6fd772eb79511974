"""Overhaul of feature distillation (OFD; Heo et al., ICCV 2019).

The student's pre-ReLU map goes through a connector r (1x1 conv + BN) to the teacher's channels and is
compared with the teacher's pre-ReLU map F_t after a margin ReLU, target = max(F_t, m_c). The per-channel
margin m_c is the expected value of a negative teacher response,

    m_c = E[x | x < 0],  x ~ N(mu_c, sigma_c^2)  =  mu_c - sigma_c * phi(mu_c / sigma_c) / Phi(-mu_c / sigma_c),

with phi and Phi the standard normal pdf and cdf. As in the authors' code, m_c = -3 sigma_c instead when
P(x < 0) = Phi(-mu_c / sigma_c) <= 0.001, where the ratio is numerically unreliable.

Deviation from the original: the authors read (mu_c, sigma_c) from the teacher's BatchNorm right before the
ReLU (beta as mean, |gamma| as std). Our backbones expose no such BatchNorm, so ofd_margin_from_features
estimates them as the per-channel mean and standard deviation of a batch of teacher pre-activation maps.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEGATIVE_MASS_FLOOR = 0.001
FALLBACK_STDS = 3.0
MIN_STD = 1e-6


def gaussian_negative_margin(mean: Tensor, std: Tensor) -> Tensor:
    """m = E[x | x < 0] for x ~ N(mean, std^2), elementwise, with the -3 std fallback (module docstring).

    |std| is used, as the original takes |gamma|, and it is floored at MIN_STD so a constant channel
    gets the limit of the formula (m = mean when mean < 0, about 0 otherwise) instead of 0/0.
    """
    if mean.shape != std.shape:
        raise ValueError(f"mean and std must have the same shape, got {tuple(mean.shape)} and {tuple(std.shape)}")
    mean, std = mean.float(), std.float().abs().clamp(min=MIN_STD)
    a = mean / std
    negative_mass = torch.special.ndtr(-a)
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    conditional = mean - std * pdf / negative_mass.clamp(min=NEGATIVE_MASS_FLOOR)
    return torch.where(negative_mass > NEGATIVE_MASS_FLOOR, conditional, -FALLBACK_STDS * std)


def ofd_margin_from_features(preact: Tensor) -> Tensor:
    """Margin [C] from the per-channel mean and (population) std of teacher pre-activations [N, C, H, W].

    The statistics run over N, H and W and carry no gradient: the margin is a constant of the loss.
    """
    if preact.dim() != 4:
        raise ValueError(f"expected teacher pre-activation maps [N, C, H, W], got shape {tuple(preact.shape)}")
    x = preact.detach().float()
    return gaussian_negative_margin(x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3), correction=0))


def ofd_loss(student: Tensor, teacher: Tensor, margin: Tensor) -> Tensor:
    """Partial L2 distance between r(F_s) and the margin-ReLU teacher target, divided by the batch size.

    T = max(F_t, m_c); L = (1 / N) * sum over the elements with (S > T) or (T > 0) of (S - T)^2. Where the
    target is negative and the student is already below it, nothing is penalised: after the ReLU both
    are 0. The authors' loss is this sum; their training loops divide it by the batch size (and scale it
    by 1e-3 on CIFAR, 1e-4 on ImageNet, which is left to the caller's loss weight).
    """
    if student.dim() != 4 or student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher must be [N, C, H, W] maps of equal shape, "
            f"got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if margin.shape != (student.shape[1],):
        raise ValueError(f"margin must have shape [{student.shape[1]}], got {tuple(margin.shape)}")
    s = student.float()
    target = torch.maximum(teacher.detach().float(), margin.detach().float().to(s.device).view(1, -1, 1, 1))
    mask = (s > target) | (target > 0)
    return F.mse_loss(s, target, reduction="none").mul(mask).sum() / s.shape[0]


class OFDConnector(nn.Module):
    """r: 1x1 conv (no bias) + BatchNorm from student to teacher channels, initialised as by the authors.

    Conv weights ~ N(0, 2 / (k * k * C_out)) (He init, fan-out), BN gamma = 1 and beta = 0.
    """

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        if student_channels <= 0 or teacher_channels <= 0:
            raise ValueError(f"channel counts must be > 0, got {student_channels} and {teacher_channels}")
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)
        fan_out = self.conv.kernel_size[0] * self.conv.kernel_size[1] * teacher_channels
        nn.init.normal_(self.conv.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        """[N, Cs, H, W] -> [N, Ct, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.conv.in_channels:
            raise ValueError(f"expected [N, {self.conv.in_channels}, H, W], got shape {tuple(x.shape)}")
        return self.bn(self.conv(x))
