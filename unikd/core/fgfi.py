"""Fine-grained feature imitation (FGFI; Wang et al., CVPR 2019): imitate the teacher only near objects.

Near-object mask. For one image with ground-truth boxes g and anchors a (all pyramid levels together),
let m_g = max_a IoU(g, a). An anchor is near g when IoU(g, a) > psi * m_g, strictly (psi =
threshold_factor, 0.5 in the paper), as the official code does (twangnh/Distilling-Object-Detectors,
lib/model/rpn/anchor_target_layer.py: `IOU_map[...] > max_iou * 0.5`). So an object whose best anchor
has a positive IoU marks at least that anchor, and an anchor exactly at the threshold is not near. A
feature location (i, j) of a level is imitated, I_ij = 1, when any anchor centred there is near any
object. The official detector has one feature level; here m_g is taken over the anchors of all levels.

Imitation loss over the masked locations of all levels, summed over channels (paper Eq. 2):

    L_imitation = 1 / (2 N_p) * sum_levels sum_(i,j) sum_c I_ij (f_adapt(s)_ijc - t_ijc)^2,  N_p = sum I_ij.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


def check_threshold_factor(name: str, value: float) -> float:
    """Return `value`; raise ValueError naming `name` unless it is a valid psi, in (0, 1) (at 1 the strict
    comparison would mark no anchor)."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def near_object_masks(
    gt_boxes: Tensor, anchors: list[Tensor], level_sizes: list[tuple[int, int]], threshold_factor: float
) -> list[Tensor]:
    """Per-level boolean masks [H_l, W_l] of one image (module docstring).

    `gt_boxes` is [G, 4] (XYXY); `anchors[l]` is [H_l * W_l * A, 4] in location-major order (all A anchors
    of location 0 first), as Detectron2's anchor generators lay them out.
    """
    check_threshold_factor("threshold_factor", threshold_factor)
    if len(anchors) != len(level_sizes):
        raise ValueError(f"{len(anchors)} anchor levels for {len(level_sizes)} feature levels")
    for level, (level_anchors, (height, width)) in enumerate(zip(anchors, level_sizes)):
        if level_anchors.shape[0] % (height * width):
            raise ValueError(
                f"level {level}: {level_anchors.shape[0]} anchors do not tile a {height}x{width} feature map"
            )
    if gt_boxes.numel() == 0:
        return [torch.zeros(size, dtype=torch.bool, device=gt_boxes.device) for size in level_sizes]
    ious = [box_iou(gt_boxes.float(), level_anchors.float()) for level_anchors in anchors]
    best = torch.stack([iou.max(dim=1).values for iou in ious], dim=1).max(dim=1).values  # [G]
    threshold = (threshold_factor * best)[:, None]
    return [
        (iou > threshold).any(dim=0).view(height, width, -1).any(dim=2)
        for iou, (height, width) in zip(ious, level_sizes)
    ]


def masked_imitation_loss(adapted: list[Tensor], targets: list[Tensor], masks: list[Tensor]) -> Tensor:
    """L_imitation (module docstring) for per-level maps [N, C, H, W] and masks [N, H, W]; the teacher is
    detached. Without any masked location (no objects) the loss is a zero that keeps the graph."""
    if not adapted or not len(adapted) == len(targets) == len(masks):
        raise ValueError(f"need equally long, non-empty level lists, got {len(adapted)}, {len(targets)}, {len(masks)}")
    total = adapted[0].new_zeros((), dtype=torch.float32)
    count = adapted[0].new_zeros((), dtype=torch.float32)  # a tensor: no host sync per level
    for level, (s, t, mask) in enumerate(zip(adapted, targets, masks)):
        if s.dim() != 4 or s.shape != t.shape or mask.shape != (s.shape[0], *s.shape[-2:]):
            raise ValueError(
                f"level {level}: expected equal [N, C, H, W] maps and an [N, H, W] mask, got "
                f"{tuple(s.shape)}, {tuple(t.shape)} and {tuple(mask.shape)}"
            )
        squared = (s.float() - t.detach().float()).pow(2).sum(dim=1)
        total = total + (squared * mask).sum()
        count = count + mask.sum()
    return total / (2 * count.clamp(min=1))
