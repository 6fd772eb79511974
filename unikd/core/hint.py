"""FitNet hints (Romero et al., ICLR 2015): regress a student map onto a teacher map with an L2 loss.

The student's hint-layer output F_s [N, Cs, Hs, Ws] goes through a small regressor r (conv + BN + ReLU)
that produces the teacher's shape [N, Ct, Ht, Wt]; the loss is L_hint = mean((r(F_s) - F_t)^2). The
regressor chooses its convolution from the size ratio k between the two maps (the same in H and W):

    k = 1            1x1 conv
    Hs = k * Ht      strided conv: kernel 2k - 1, stride k, padding k - 1   (k = 2: 3x3, stride 2)
    Ht = k * Hs      transposed conv: kernel 2k - k mod 2, stride k, padding floor(k / 2)  (k = 2: 4x4)

Both resampling layers are exact for every integer k (output size = input size * k or / k); for k = 1
and k = 2 they are the layers of mdistiller's ConvReg. The layer depends only on k, so a regressor built
for one input resolution serves any other with the same ratio (the shapes given only choose the layer).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

Shape3 = tuple[int, int, int]


def _check_shape(name: str, shape: Shape3) -> None:
    if len(shape) != 3 or any(int(d) <= 0 for d in shape):
        raise ValueError(f"{name} must be three positive ints (C, H, W), got {shape}")


def _integer_ratio(big: tuple[int, int], small: tuple[int, int]) -> int | None:
    """k when big == k * small in both H and W, else None."""
    (bh, bw), (sh, sw) = big, small
    if bh % sh or bw % sw or bh // sh != bw // sw:
        return None
    return bh // sh


def _resampling_conv(student_shape: Shape3, teacher_shape: Shape3) -> nn.Module:
    """The convolution that maps the student's (C, H, W) onto the teacher's (see the module docstring)."""
    cs, hs, ws = student_shape
    ct, ht, wt = teacher_shape
    if (hs, ws) == (ht, wt):
        return nn.Conv2d(cs, ct, kernel_size=1)
    down = _integer_ratio((hs, ws), (ht, wt)) if hs >= ht and ws >= wt else None
    if down is not None:
        return nn.Conv2d(cs, ct, kernel_size=2 * down - 1, stride=down, padding=down - 1)
    up = _integer_ratio((ht, wt), (hs, ws)) if ht >= hs and wt >= ws else None
    if up is not None:
        return nn.ConvTranspose2d(cs, ct, kernel_size=2 * up - up % 2, stride=up, padding=up // 2)
    raise ValueError(
        f"student size {hs}x{ws} and teacher size {ht}x{wt} differ by no common integer factor; "
        "the hint regressor supports equal sizes or an integer ratio shared by H and W"
    )


class HintRegressor(nn.Module):
    """FitNet regressor r: [N, Cs, Hs, Ws] -> [N, Ct, Ht, Wt] as conv + BatchNorm + ReLU.

    The ReLU makes the regressed hint non-negative, which matches teacher hints taken after a ReLU.
    """

    def __init__(self, student_shape: Shape3, teacher_shape: Shape3) -> None:
        super().__init__()
        _check_shape("student_shape", student_shape)
        _check_shape("teacher_shape", teacher_shape)
        self.student_shape = tuple(int(d) for d in student_shape)
        self.teacher_shape = tuple(int(d) for d in teacher_shape)
        self.conv = _resampling_conv(self.student_shape, self.teacher_shape)
        self.bn = nn.BatchNorm2d(self.teacher_shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """Returns r(x): [N, Ct, Ht, Wt] for an input of the constructor's shape, the same ratio otherwise."""
        if x.dim() != 4 or x.shape[1] != self.student_shape[0]:
            raise ValueError(f"expected a student map [N, {self.student_shape[0]}, H, W], got {tuple(x.shape)}")
        return F.relu(self.bn(self.conv(x)))


def hint_loss(regressed: Tensor, target: Tensor) -> Tensor:
    """L_hint = mean over all elements of (r(F_s) - F_t)^2, in float32; the teacher map is detached."""
    if regressed.shape != target.shape:
        raise ValueError(f"hint shapes differ: regressed {tuple(regressed.shape)} vs target {tuple(target.shape)}")
    return F.mse_loss(regressed.float(), target.detach().float())
