"""Knowledge review (ReviewKD; Chen et al., CVPR 2021): residual fusion of student levels + HCL loss.

Student levels F_1 .. F_L (finest first) are fused from the coarsest level down by attention-based
fusion (ABF) modules. Level L is only transformed; every finer level i mixes its own transformed map X_i
with the mixed map Y_{i+1} passed on from the coarser level, resized to X_i's size (nearest):

    X_i = BN(Conv1x1(F_i)),  [g1; g2] = sigmoid(Conv1x1([X_i; Y_{i+1}])),  Y_i = g1 * X_i + g2 * Y_{i+1},
    O_i = BN(Conv3x3(Y_i)) with the teacher's channel count of level i.

When the teacher's level i has another size than the student's (ShuffleNet and MobileNet students on
CIFAR), Y_i is first resized (nearest) to the teacher's size and the 3x3 conv runs there; the resized
Y_i is also what the finer level receives (dvlab-research/ReviewKD, CIFAR-100/model/reviewkd.py, and
megvii-research/mdistiller, mdistiller/distillers/ReviewKD.py: ABF.forward's `out_shape`).

Each O_i is compared with the teacher's level i by the hierarchical context loss (HCL):

    HCL(O, T) = [MSE(O, T) + sum_k w_k MSE(P_k(O), P_k(T))] / (1 + sum_k w_k),  w_k = 2^-k,

where P_k adaptive-average-pools to the k-th used size in pool_sizes (default 4, 2, 1), an l x l grid.
A size is used only when it is smaller than the map's height, l < H, whatever its width, and w halves
per used size (dvlab-research/ReviewKD, Detection/model/kd_trans.py and CIFAR-100/model/reviewkd.py,
`hcl`: `if l >= h: continue`). The total is the sum over levels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Bias-free conv ('same' padding) + BN; conv weights use kaiming_uniform_(a=1) as in the authors' ABF."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


class AttentionBasedFusion(nn.Module):
    """One ABF: returns (O_i, Y_i), the output for the loss and the mixed map passed to the finer level.

    With fuse=False (the coarsest level) it takes no residual and Y_i = X_i. With `out_size`, Y_i is resized
    (nearest) to it before the output conv (module docstring).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        if min(in_channels, mid_channels, out_channels) <= 0:
            raise ValueError(f"channel counts must be > 0, got {in_channels}, {mid_channels}, {out_channels}")
        self.transform = _conv_bn(in_channels, mid_channels, kernel_size=1)
        self.output = _conv_bn(mid_channels, out_channels, kernel_size=3)
        self.attention = nn.Conv2d(2 * mid_channels, 2, kernel_size=1) if fuse else None

    def _mix(self, x: Tensor, residual: Tensor) -> Tensor:
        """Y = g1 * X + g2 * Up(residual), the gates being two sigmoid maps [N, 1, H, W] from [X; Up(residual)]."""
        residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
        gates = torch.sigmoid(self.attention(torch.cat([x, residual], dim=1)))
        return x * gates[:, :1] + residual * gates[:, 1:]

    def forward(
        self, x: Tensor, residual: Tensor | None = None, out_size: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """x: student level [N, C_in, H, W]; residual: Y of the coarser level [N, C_mid, h, w] iff fusing;
        out_size: the (H', W') of O_i and Y_i (None: x's own size)."""
        if x.dim() != 4 or x.shape[1] != self.transform[0].in_channels:
            raise ValueError(f"expected [N, {self.transform[0].in_channels}, H, W], got shape {tuple(x.shape)}")
        if (residual is None) != (self.attention is None):
            raise ValueError("a residual must be given exactly when the module fuses (fuse=True)")
        mixed = self.transform(x)
        if residual is not None:
            mixed = self._mix(mixed, residual)
        if out_size is not None and tuple(mixed.shape[-2:]) != tuple(out_size):
            mixed = F.interpolate(mixed, size=tuple(out_size), mode="nearest")
        return self.output(mixed), mixed


class ReviewFusion(nn.Module):
    """The ABF chain over L student levels given finest first; outputs follow the same order.

    in_channels[i] / out_channels[i] are the student / teacher channel counts of level i; mid_channels is
    the shared width of the mixed maps (the authors use min(512, coarsest student width) on CIFAR).
    """

    def __init__(self, in_channels: list[int], out_channels: list[int], mid_channels: int) -> None:
        super().__init__()
        if not in_channels or len(in_channels) != len(out_channels):
            raise ValueError(
                f"in_channels and out_channels must be equally long and non-empty, got {in_channels}, {out_channels}"
            )
        last = len(in_channels) - 1
        self.fusions = nn.ModuleList(
            AttentionBasedFusion(c_in, mid_channels, c_out, fuse=i < last)
            for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels))
        )

    def forward(self, feats_s: list[Tensor], out_sizes: list[tuple[int, int]] | None = None) -> list[Tensor]:
        """[F_1 .. F_L] (finest first) -> [O_1 .. O_L] with the teacher's channels, O_i at out_sizes[i]
        (the teacher's level sizes) or, without out_sizes, at F_i's size."""
        if len(feats_s) != len(self.fusions):
            raise ValueError(f"expected {len(self.fusions)} student levels, got {len(feats_s)}")
        sizes = list(out_sizes) if out_sizes is not None else [None] * len(feats_s)
        if len(sizes) != len(feats_s):
            raise ValueError(f"expected {len(feats_s)} output sizes, got {len(sizes)}")
        coarse_to_fine: list[Tensor] = []
        residual = None
        for fusion, feat, size in zip(self.fusions[::-1], feats_s[::-1], sizes[::-1]):
            out, residual = fusion(feat, residual, size)
            coarse_to_fine.append(out)
        return coarse_to_fine[::-1]


def _pyramid_mse(o: Tensor, t: Tensor, pool_sizes: tuple[int, ...]) -> Tensor:
    """HCL of one level (module docstring)."""
    loss, weight, total_weight = F.mse_loss(o, t), 1.0, 1.0
    for size in pool_sizes:
        if size >= o.shape[-2]:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(o, size), F.adaptive_avg_pool2d(t, size))
        total_weight += weight
    return loss / total_weight


def hcl_loss(feats_s: list[Tensor], feats_t: list[Tensor], pool_sizes: tuple[int, ...] = (4, 2, 1)) -> Tensor:
    """Sum over levels of HCL(O_i, T_i); each pair must be [N, C, H, W] of equal shape. Teacher detached."""
    if not feats_s or len(feats_s) != len(feats_t):
        raise ValueError(f"need equally long, non-empty level lists, got {len(feats_s)} and {len(feats_t)}")
    if any(not isinstance(size, int) or size <= 0 for size in pool_sizes):
        raise ValueError(f"pool_sizes must be positive ints, got {pool_sizes}")
    total = torch.zeros((), device=feats_s[0].device)
    for level, (o, t) in enumerate(zip(feats_s, feats_t)):
        if o.dim() != 4 or o.shape != t.shape:
            raise ValueError(
                f"level {level}: student and teacher maps must be [N, C, H, W] of equal shape, "
                f"got {tuple(o.shape)} and {tuple(t.shape)}"
            )
        total = total + _pyramid_mse(o.float(), t.detach().float(), tuple(pool_sizes))
    return total
