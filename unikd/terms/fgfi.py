"""Fine-grained feature imitation (Wang et al., CVPR 2019) on the anchor levels of a detector.

Official code: twangnh/Distilling-Object-Detectors (`trainval_net_sup.py`, `lib/model/faster_rcnn/vgg11.py`,
`lib/model/rpn/anchor_target_layer.py`). Each anchor level has a 3x3 adaptation conv; the loss is
`unikd.core.fgfi`'s L_imitation over the locations whose anchors fit a ground-truth box well (IoU strictly
above THRESHOLD_FACTOR, 0.5, times the object's best anchor IoU). As there, the adapter weights start tiny
(N(0, 1) folded into (-2, 2) by fmod, times INIT_STD 1e-4; the biases keep PyTorch's default) and imitation
counts zero for the first 400 iterations (`--ws 400`): START 401 in Detectron2's iterations counted from 1.
Necessary deviation: the official adapter is conv + ReLU because it imitates a post-ReLU VGG conv5 map; FPN
outputs are signed, so a ReLU would keep the adapter from matching the teacher's negative values and the
adapter here is the conv alone. The levels are those the front end lays anchors on (Detectron2: the RPN's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.fgfi import check_threshold_factor, masked_imitation_loss, near_object_masks
from .base import NEEDS_ANCHORS, NEEDS_FEATURES, NEEDS_GT_BOXES, Batch, Term, TermContext, TermOptions, option, register_term
from .features import level_adapters, tapped_pairs


@dataclass
class FGFIOptions(TermOptions):
    start: float = option(401.0, "progress before which the term counts zero (the official 400 warm steps)")
    threshold_factor: float = option(0.5, "a location is near an object when IoU > this x the object's best IoU")
    weight: float = option(0.01, "weight of L_imitation (squared errors summed over channels / 2 x locations)")
    init_std: float = option(1e-4, "std of the adapters' initial weights (fmod-folded normal); 0: PyTorch's init")

    def __post_init__(self) -> None:
        check_threshold_factor("threshold_factor", self.threshold_factor)
        if self.init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {self.init_std}")


def init_adapter_weight(conv: nn.Conv2d, std: float) -> None:
    """Official FGFI adapter init (trainval_net_sup.py, `normal_init(..., truncated=True)`): standard normal
    samples folded into (-2, 2) with fmod, scaled by `std`; the bias keeps PyTorch's default. `std` 0 leaves
    PyTorch's default weights."""
    if std > 0:
        with torch.no_grad():
            conv.weight.copy_(torch.fmod(torch.randn_like(conv.weight), 2.0) * std)


@register_term
class FGFITerm(Term):
    """loss_fgfi = WEIGHT * L_imitation over the near-object locations of every anchor level."""

    name = "fgfi"
    Options = FGFIOptions
    requires = frozenset({NEEDS_FEATURES, NEEDS_GT_BOXES, NEEDS_ANCHORS})

    def __init__(self, options: FGFIOptions, context: TermContext) -> None:
        super().__init__(options, context)
        if not context.anchor_features:
            raise ValueError(f"FGFI needs anchor levels, which {context.task} does not lay out")
        pairs = tapped_pairs("anchor levels", context.student_features, context.teacher_features,
                             list(context.anchor_features))
        self.levels = [s.name for s, _ in pairs]
        self.adapters = level_adapters(pairs, kernel_size=3)
        for adapter in self.adapters.values():
            init_adapter_weight(adapter, options.init_std)

    @torch.no_grad()
    def masks(self, batch: Batch) -> list[Tensor]:
        """Near-object masks [N, H, W] per level for the batch."""
        anchors = [batch.anchors[f] for f in self.levels]
        sizes = [tuple(batch.feature("student", f).shape[-2:]) for f in self.levels]
        per_image = [near_object_masks(gt, anchors, sizes, self.options.threshold_factor) for gt in batch.gt_boxes]
        return [torch.stack(level) for level in zip(*per_image)]

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        adapted = [self.adapters[f](batch.feature("student", f)) for f in self.levels]
        targets = [batch.feature("teacher", f) for f in self.levels]
        return {"loss_fgfi": self.options.weight * masked_imitation_loss(adapted, targets, self.masks(batch))}
