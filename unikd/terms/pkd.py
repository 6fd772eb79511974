"""PKD (Cao et al., NeurIPS 2022): each tapped student map imitates its teacher map after both are normalised per
channel (`unikd.core.pkd`: MSE / 2 of the normalised maps = 1 - Pearson r); L = weight * sum over the pairs.

Detection values: open-mmlab/mmrazor, `configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py`
(`loss_pkd_fpn0..3`, `PKDLoss` with `loss_weight=6` each, on the neck's outputs `data_idx` 0..3). mmdet's
Faster R-CNN FPN has five outputs P2..P6 (P6 a max pool of P5, as Detectron2's `LastLevelMaxPool`), so data_idx
0..3 are Detectron2's `p2`..`p5`: p6 is not distilled. The official loss normalises over the whole batch (per
channel over N, H, W) and averages over every element of the batch; this is what the term does on Detectron2's
padded batch (mmdet pads its batch the same way). The official config has no connector: both FPNs have 256
channels; a student of another width gets a 1x1 conv (`AlignedMapsTerm`). The paper gives no classification
setting; the classification preset taps every `stage*` the two networks declare (paired from the deepest), which
needs paired stages of one reduction (our choice, not the authors').
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.pkd import pkd_loss
from .base import NEEDS_FEATURES, Batch, TermOptions, option, register_term
from .features import AlignedMapsTerm

PKD_LEVELS = ["p2", "p3", "p4", "p5"]  # mmrazor pkd config: data_idx 0..3 of mmdet's FPN (P2..P5)


@dataclass
class PKDOptions(TermOptions):
    PRESETS = {"classification": {"in_features": ["stage*"]}}  # no official setting: every stage, same-size pairs

    in_features: list = option(PKD_LEVELS, "the tapped features (names or patterns), paired from the deepest")
    weight: float = option(6.0, "weight of each pair's loss, summed over the pairs (mmrazor: loss_weight=6)")


@register_term
class PKDTerm(AlignedMapsTerm):
    """loss_pkd = WEIGHT * sum over the tapped pairs of MSE(norm(f_s), norm(f_t)) / 2."""

    name = "pkd"
    Options = PKDOptions
    requires = frozenset({NEEDS_FEATURES})

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        loss = sum(pkd_loss(s, t) for s, t in self.map_pairs(batch))
        return {"loss_pkd": self.options.weight * loss}
