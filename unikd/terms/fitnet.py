"""FitNet (Romero et al., ICLR 2015): each tapped student map, through an adapter, regresses onto the teacher's
map of the same pair with an MSE loss; L = weight * sum over pairs of mean (adapter(s) - t)^2.

Classification: mdistiller's CIFAR setting (megvii-research/mdistiller, mdistiller/distillers/FitNet.py and
engine/cfg.py: hint layer 2, i.e. `stage2`, weight 100, the ConvReg regressor conv + BN + ReLU whose conv
resamples by the pair's size ratio: `adapter conv_bn_relu`). Detection: every FPN level with a plain 1x1 conv
(`adapter conv`: FPN outputs are signed, so no ReLU), weight 1.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..core.checks import check_choice
from ..core.hint import HintRegressor, hint_loss
from .base import NEEDS_FEATURES, Batch, Term, TermContext, TermOptions, option, register_term
from .features import level_adapters, tapped_pairs

ADAPTERS = ("conv_bn_relu", "conv")
FPN_LEVELS = ["p2", "p3", "p4", "p5", "p6"]


@dataclass
class FitNetOptions(TermOptions):
    PRESETS = {"detection": {"in_features": FPN_LEVELS, "weight": 1.0, "adapter": "conv"}}

    in_features: list = option(["stage2"], "the tapped features (names or patterns), paired from the deepest")
    weight: float = option(100.0, "weight of the summed hint losses")
    adapter: str = option("conv_bn_relu", "conv_bn_relu: resampling conv + BN + ReLU (ConvReg) | conv: 1x1 conv")

    def __post_init__(self) -> None:
        check_choice("adapter", self.adapter, ADAPTERS)


def nominal_shapes(student_channels: int, student_reduction: int, teacher_channels: int,
                   teacher_reduction: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(C, H, W) of both maps on an input of side student_reduction * teacher_reduction: the regressor's layer
    depends only on the size ratio, which the declared reductions give without a probe forward."""
    side = student_reduction * teacher_reduction
    return ((student_channels, side // student_reduction, side // student_reduction),
            (teacher_channels, side // teacher_reduction, side // teacher_reduction))


@register_term
class FitNetTerm(Term):
    """loss_fitnet = WEIGHT * sum over the tapped pairs of MSE(adapter(f_s), f_t)."""

    name = "fitnet"
    Options = FitNetOptions
    requires = frozenset({NEEDS_FEATURES})

    def __init__(self, options: FitNetOptions, context: TermContext) -> None:
        super().__init__(options, context)
        pairs = tapped_pairs("FITNET.IN_FEATURES", context.student_features, context.teacher_features,
                             options.in_features)
        self.pairs = [(s.name, t.name) for s, t in pairs]
        if options.adapter == "conv":
            self.adapters = level_adapters(pairs, kernel_size=1)
        else:
            self.adapters = nn.ModuleDict({
                s.name: HintRegressor(*nominal_shapes(s.channels, s.reduction, t.channels, t.reduction))
                for s, t in pairs
            })

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        loss = sum(
            hint_loss(self.adapters[s](batch.feature("student", s)), batch.feature("teacher", t))
            for s, t in self.pairs
        )
        return {"loss_fitnet": self.options.weight * loss}
