"""What every distillation loss term sees, and the registry that builds the enabled ones.

A term is an `nn.Module` (it may own trainable adapters) registered in `DISTILL_TERM_REGISTRY`
with a `CONFIG_NODE` naming its `cfg.DISTILL.<NODE>` sub-node. Adding a method is one module with
one registered class plus one config sub-node that has an `ENABLED` key.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes
from fvcore.common.registry import Registry
from torch import nn

from ..roi_tap import ROIRecord

DISTILL_TERM_REGISTRY = Registry("DISTILL_TERM")
DISTILL_TERM_REGISTRY.__doc__ = "Distillation loss terms; each is built from cfg.DISTILL.<CONFIG_NODE>."


@dataclass
class DistillContext:
    """One training iteration's tensors, shared by all terms.

    Logits are [R, K+1] over the R sampled proposals of the batch (background = index K);
    `gt_classes` [R] are their sampling labels; `boxes` hold those proposals per image and
    `gt_boxes` each image's ground-truth boxes. `student_roi` and `teacher_roi` are each network's whole
    box-branch pass on those boxes (pooled box features, logits, box deltas), for terms that need more
    than the logits.
    """

    student_features: dict[str, torch.Tensor]
    teacher_features: dict[str, torch.Tensor]
    boxes: list[Boxes]
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    gt_classes: torch.Tensor
    image_shape: tuple[int, int]
    gt_boxes: list[Boxes]
    student_roi: ROIRecord | None = None
    teacher_roi: ROIRecord | None = None


class DistillTerm(nn.Module):
    """Base class of a loss term: `forward(ctx)` returns named, weighted scalar losses.

    Each key starts with `loss_` and has the term's name (`CONFIG_NODE` in lower case) as one of its
    `_`-separated words, so the keys of different terms, and the detector's own, stay apart; DistillRCNN
    refuses a key that breaks this or that another loss already uses."""

    CONFIG_NODE: str = ""
    # DistillRCNN gives the term weight 0 before this training iteration (EventStorage.iter) and its
    # normal weight from it on, as FGFI's official warm step does; 0 means active from the start.
    start_iter: int = 0

    def forward(self, ctx: DistillContext) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def check_in_features(
    key: str, in_features: list[str], student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]
) -> list[str]:
    """Fail fast on an empty level list or a level missing from either backbone; returns the list."""
    in_features = list(in_features)
    if not in_features:
        raise ValueError(f"{key} is empty")
    for network, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
        missing = [name for name in in_features if name not in shapes]
        if missing:
            raise ValueError(f"{key} {missing} not produced by the {network} backbone (it has {sorted(shapes)})")
    return in_features


def level_adapters(
    in_features: list[str],
    student_shapes: dict[str, ShapeSpec],
    teacher_shapes: dict[str, ShapeSpec],
    kernel_size: int,
) -> nn.ModuleDict:
    """One conv per level mapping the student's channels to the teacher's, size-preserving. No
    normalisation or ReLU: FPN outputs are signed and detection batches too small for BatchNorm."""
    return nn.ModuleDict({
        name: nn.Conv2d(student_shapes[name].channels, teacher_shapes[name].channels, kernel_size,
                        padding=kernel_size // 2)
        for name in in_features
    })


def enabled_term_classes(cfg: CfgNode) -> list[type[DistillTerm]]:
    """The registered term classes whose `cfg.DISTILL.<CONFIG_NODE>.ENABLED` is true."""
    return [cls for _, cls in sorted(DISTILL_TERM_REGISTRY) if cfg.DISTILL[cls.CONFIG_NODE].ENABLED]


def build_distill_terms(
    cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher_shapes: dict[str, ShapeSpec]
) -> nn.ModuleDict:
    """Instantiate every enabled term (validating its options now, before training starts)."""
    return nn.ModuleDict(
        {cls.CONFIG_NODE.lower(): cls(cfg, student_shapes, teacher_shapes) for cls in enabled_term_classes(cfg)}
    )
