"""Resizing a feature map down to a smaller grid by adaptive average pooling, the way the feature-matching
losses (AT, OFD) bring two maps to one size."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def average_pool_to(feat: Tensor, size: tuple[int, int]) -> Tensor:
    """`feat` [N, C, H, W] adaptive-average-pooled to `size` (H', W'); a map already of that size is returned
    as it is: the pool would be an identity that still reads and writes the map, forward and backward (a few
    percent of an AT step whose paired stages share their sizes)."""
    if tuple(feat.shape[-2:]) == tuple(size):
        return feat
    return F.adaptive_avg_pool2d(feat, size)
