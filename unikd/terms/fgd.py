"""FGD (Yang et al., CVPR 2022): focal (foreground / background masks from the ground-truth boxes, spatial and
channel attention) and global (GcBlock relation) distillation of each tapped FPN level (`unikd.core.fgd`).

Official code: yzd-v/FGD, `mmdet/distillation/losses/fgd.py` and, for the values,
`configs/distillers/fgd/fgd_faster_rcnn_r101_fpn_2x_distill_faster_rcnn_r50_fpn_2x_coco.py`: temp 0.5,
alpha 5e-5, beta 2.5e-5, gamma 5e-5, lambda 5e-7, one `FeatureLoss` per hooked `neck.fpn_convs.0..3.conv`,
i.e. mmdet's P2..P5 (Detectron2's `p2`..`p5`; P6 is a max pool, not hooked). Each level has its own GcBlocks
and, where the channel counts differ, the official 1x1 `align` conv on the student (`AlignedMapsTerm`).
Necessary deviation: the official code scales the boxes to a level by (map side / the image's unpadded side),
which stretches the boxes of an image smaller than the padded batch; the Batch carries no image sizes, so the
boxes are divided by the level's stride (the same scale for an image that fills the batch).
Detection-only: it needs ground-truth boxes.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..core.fgd import GlobalContext, box_masks, fgd_losses
from .base import NEEDS_FEATURES, NEEDS_GT_BOXES, Batch, TermContext, TermOptions, option, register_term
from .features import AlignedMapsTerm

PARTS = ("fg", "bg", "mask", "global")
FGD_LEVELS = ["p2", "p3", "p4", "p5"]  # FGD Faster R-CNN config: neck.fpn_convs.0..3 (P2..P5)


@dataclass
class FGDOptions(TermOptions):
    in_features: list = option(FGD_LEVELS, "the tapped features (names or patterns), paired from the deepest")
    temperature: float = option(0.5, "temperature T of the spatial and channel attention (FGD config: temp)")
    alpha_fgd: float = option(5e-5, "weight of the foreground feature loss (FGD Faster R-CNN config)")
    beta_fgd: float = option(2.5e-5, "weight of the background feature loss (FGD Faster R-CNN config)")
    gamma_fgd: float = option(5e-5, "weight of the attention (mask) loss (FGD Faster R-CNN config)")
    lambda_fgd: float = option(5e-7, "weight of the global (GcBlock relation) loss (FGD Faster R-CNN config)")

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@register_term
class FGDTerm(AlignedMapsTerm):
    """loss_fgd_<part> = <part weight> * sum over the tapped levels of the part (fg, bg, mask, global)."""

    name = "fgd"
    Options = FGDOptions
    requires = frozenset({NEEDS_FEATURES, NEEDS_GT_BOXES})

    def __init__(self, options: FGDOptions, context: TermContext) -> None:
        super().__init__(options, context)
        teacher = {spec.name: spec for spec in context.teacher_features}
        self.strides = {t: teacher[t].reduction for _, t in self.pairs}
        self.global_student = nn.ModuleDict({s: GlobalContext(teacher[t].channels) for s, t in self.pairs})
        self.global_teacher = nn.ModuleDict({s: GlobalContext(teacher[t].channels) for s, t in self.pairs})

    def part_weights(self) -> dict[str, float]:
        """Each part's weight: alpha (fg), beta (bg), gamma (mask), lambda (global)."""
        o = self.options
        return dict(zip(PARTS, (o.alpha_fgd, o.beta_fgd, o.gamma_fgd, o.lambda_fgd)))

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        totals = dict.fromkeys(PARTS, 0.0)
        for (s, t), (student, teacher) in zip(self.pairs, self.map_pairs(batch)):
            fg, bg = box_masks(batch.gt_boxes, tuple(teacher.shape[-2:]), self.strides[t])
            parts = fgd_losses(student, teacher, fg.to(teacher.device), bg.to(teacher.device),
                               self.options.temperature, self.global_student[s], self.global_teacher[s])
            totals = {part: totals[part] + value for part, value in parts.items()}
        return {f"loss_fgd_{part}": w * totals[part] for part, w in self.part_weights().items()}
