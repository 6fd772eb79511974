"""CWD (Shu et al., ICCV 2021): per channel, the student's spatial softmax imitates the teacher's
(`unikd.core.cwd`: tau^2 / (N C) * sum of the channels' KL); L = weight * sum over the tapped pairs.

Detection values: open-mmlab/mmrazor, `configs/distill/mmdet/cwd/cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py`
(`loss_cwd_fpn0..4`, `ChannelWiseDivergence` with `tau=1, loss_weight=10` each, on the neck's outputs
`data_idx` 0..4): mmdet's five FPN outputs P2..P6 are Detectron2's `p2`..`p6`. The official reduction divides the
batch's summed KL by N * C (per batch, not per image). The official config has no connector (both FPNs have 256
channels); a student of another width gets a 1x1 conv (`AlignedMapsTerm`). mmrazor ships no classification
setting; the classification preset taps every `stage*` the two networks declare (paired from the deepest), which
needs paired stages of one reduction (our choice, not the authors').
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.cwd import cwd_loss
from .base import NEEDS_FEATURES, Batch, TermOptions, option, register_term
from .features import AlignedMapsTerm

CWD_LEVELS = ["p2", "p3", "p4", "p5", "p6"]  # mmrazor cwd config: data_idx 0..4 of mmdet's FPN (P2..P6)


@dataclass
class CWDOptions(TermOptions):
    PRESETS = {"classification": {"in_features": ["stage*"]}}  # no official setting: every stage, same-size pairs

    in_features: list = option(CWD_LEVELS, "the tapped features (names or patterns), paired from the deepest")
    tau: float = option(1.0, "temperature of the per-channel spatial softmax (mmrazor: tau=1)")
    weight: float = option(10.0, "weight of each pair's loss, summed over the pairs (mmrazor: loss_weight=10)")

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")


@register_term
class CWDTerm(AlignedMapsTerm):
    """loss_cwd = WEIGHT * sum over the tapped pairs of tau^2 / (N C) * sum_{n,c} KL(phi(t_nc) || phi(s_nc))."""

    name = "cwd"
    Options = CWDOptions
    requires = frozenset({NEEDS_FEATURES})

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        loss = sum(cwd_loss(s, t, self.options.tau) for s, t in self.map_pairs(batch))
        return {"loss_cwd": self.options.weight * loss}
