"""FGD (Yang et al., CVPR 2022): focal and global distillation of detector feature maps.

Official code: yzd-v/FGD, `mmdet/distillation/losses/fgd.py` (`FeatureLoss`). On one map pair [N, C, H, W]
(the student's aligned to the teacher's channels), with the teacher's attention:

    spatial attention  A^S = H W softmax(mean_c |F| / T)       over the H W locations     (paper Eq. 3)
    channel attention  A^C = C softmax(mean_hw |F| / T)         over the C channels
    masks              M_ij = 1 / (H_r W_r) inside a ground-truth box r (the largest where boxes overlap),
                       N^bg = 1 / #background locations outside every box, 0 inside            (Eq. 5-6)
    L_fea   = sum M A^S_t A^C_t (F_t - F_s)^2 / N   (fg with M, bg with N^bg)               (Eq. 7)
    L_at    = (sum |A^C_t - A^C_s| + sum |A^S_t - A^S_s|) / N                                  (Eq. 8)
    L_global = sum (G(F_t) - G(F_s))^2 / N,  G(F) = F + W2 ReLU(LN(W1 context(F)))             (Eq. 10-11)

each sum over the batch, divided by the images N (the official `/len(...)`); context(F) is the GcBlock's
softmax-attention pooling. The weights alpha, beta, gamma, lambda combine the four parts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fgd_attention(feat: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(spatial attention [N, H, W], channel attention [N, C]) of a map [N, C, H, W] (paper Eq. 3-4)."""
    n, c, h, w = feat.shape
    value = feat.abs()
    spatial = h * w * F.softmax(value.mean(dim=1).reshape(n, -1) / temperature, dim=1).reshape(n, h, w)
    channel = c * F.softmax(value.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial, channel


def box_masks(gt_boxes: list[Tensor], size: tuple[int, int], stride: float) -> tuple[Tensor, Tensor]:
    """(foreground, background) masks [N, H, W] of a level of the given stride (paper Eq. 5-6).

    Box r, divided by the stride, covers the cells floor(x0)..ceil(x1) by floor(y0)..ceil(y1) (inclusive, as the
    official code) and weighs 1 / (its cell count) there; where boxes overlap the larger weight wins. The
    background mask is 1 / (the image's count of uncovered cells) at each uncovered cell."""
    height, width = size
    device = gt_boxes[0].device if gt_boxes else None
    fg = torch.zeros(len(gt_boxes), height, width, device=device)
    for image, boxes in enumerate(gt_boxes):
        cells = boxes.detach().float() / stride
        x0, y0 = cells[:, 0].floor().long(), cells[:, 1].floor().long()
        x1, y1 = cells[:, 2].ceil().long(), cells[:, 3].ceil().long()
        area = 1.0 / ((y1 + 1 - y0) * (x1 + 1 - x0)).float()
        for j in range(len(boxes)):
            region = fg[image, y0[j]:y1[j] + 1, x0[j]:x1[j] + 1]
            region.copy_(torch.maximum(region, area[j]))
    bg = (fg == 0).float()
    return fg, bg / bg.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)


class GlobalContext(nn.Module):
    """The GcBlock of FGD's global loss: G(F) = F + W2 ReLU(LN(W1 sum_hw softmax(W_k F)_hw F_hw)) (paper Eq. 11).

    Initialised as the official `reset_parameters`: W_k Kaiming-normal (fan_in, ReLU gain) with a zero bias, the
    last conv W2 zero, so G starts as the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, feat: Tensor) -> Tensor:
        """G(F): [N, C, H, W] -> [N, C, H, W]."""
        n, c = feat.shape[:2]
        weights = F.softmax(self.conv_mask(feat).reshape(n, 1, -1), dim=2)  # [N, 1, HW]
        context = torch.einsum("ncl,nkl->nc", feat.reshape(n, c, -1), weights).reshape(n, c, 1, 1)
        return feat + self.channel_add(context)


def fgd_losses(student: Tensor, teacher: Tensor, fg: Tensor, bg: Tensor, temperature: float,
               global_student: GlobalContext, global_teacher: GlobalContext) -> dict[str, Tensor]:
    """The four unweighted FGD parts of one map pair of equal shape (module docstring), in float32; the teacher
    map is detached. Keys: fg, bg (L_fea), mask (L_at), global (L_global)."""
    if student.dim() != 4 or student.shape != teacher.shape:
        raise ValueError(f"FGD needs two maps [N, C, H, W] of one shape, got {tuple(student.shape)} "
                         f"and {tuple(teacher.shape)}")
    student, teacher = student.float(), teacher.detach().float()
    n = student.shape[0]
    spatial_t, channel_t = fgd_attention(teacher, temperature)
    spatial_s, channel_s = fgd_attention(student, temperature)
    weighted = (spatial_t[:, None] * channel_t[:, :, None, None]) * (student - teacher).pow(2)
    return {
        "fg": (weighted * fg[:, None]).sum() / n,
        "bg": (weighted * bg[:, None]).sum() / n,
        "mask": ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n,
        "global": (global_student(student) - global_teacher(teacher)).pow(2).sum() / n,
    }
