"""CWD (Shu et al., ICCV 2021): channel-wise distillation of the spatial distributions of the feature maps.

Official code: open-mmlab/mmrazor, `mmrazor/models/losses/cwd.py` (`ChannelWiseDivergence`). Each channel of a
map [N, C, H, W] is a distribution over its H*W locations, phi(y_c) = softmax(y_c / tau) (paper Eq. 2); the loss
of one map pair is (paper Eq. 3 with the official reduction)

    L_CWD = tau^2 / (N C) * sum_{n, c} KL(phi(y^T_{n,c}) || phi(y^S_{n,c}))

which is the logit KD loss on the N*C rows of H*W "logits" (`unikd.core.logit_kd.kd_loss`: tau^2 KL summed over
the row, averaged over the rows).
"""
from __future__ import annotations

from torch import Tensor

from .logit_kd import kd_loss


def cwd_loss(student: Tensor, teacher: Tensor, tau: float) -> Tensor:
    """L_CWD of one map pair of the same shape [N, C, H, W], in float32; the teacher map is detached."""
    if student.dim() != 4 or student.shape != teacher.shape:
        raise ValueError(f"CWD needs two maps [N, C, H, W] of one shape, got {tuple(student.shape)} "
                         f"and {tuple(teacher.shape)}")
    rows = student.shape[0] * student.shape[1]
    return kd_loss(student.reshape(rows, -1), teacher.detach().reshape(rows, -1), tau)
