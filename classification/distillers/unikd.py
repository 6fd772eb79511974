"""UniKD for classification (DESIGN section 3): AFF over the last stages of each network, FDP on the globally
pooled fused map, the closed-form Gaussian KL, the teacher fit and a logit term, all from unikd.core.

The AFF channel lists come from the models' `stage_channels`, so any zoo pair works without per-pair
channel settings. In `authors_code` mode the teacher side is its stage-1 pre-activation map and the
warm-up ramps only the DKD logit term, as in the authors' research code (FabienCode/mdistiller,
mdistiller/distillers/UniLogits.py: only `loss_logits` carries min(epoch / WARMUP, 1)); in paper mode it
ramps every UniKD loss.
"""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core import UniKDLoss, UniKDOptions

from ..models import ModelOutput
from .base import linear_warmup
from .terms import LossTerm, TermContext, TermInputs, base_node, named_losses, register_term, stage_maps


def tapped_levels(output: ModelOutput, num_levels: int) -> list[Tensor]:
    """The last `num_levels` stage features, finest first."""
    return list(output.feats[-num_levels:])


def authors_teacher_map(output: ModelOutput) -> Tensor:
    """The teacher map the authors' code feeds its FDP: stage 1 before its final activation."""
    return stage_maps(output, preact=True)[0]


@register_term("unikd")
class UniKDTerm(LossTerm):
    """The UniKD terms loss_unikd_feat (alpha * L_FL), loss_unikd_fit (the teacher fit; loss_unikd_supp in
    authors_code mode) and loss_unikd_logit (beta * L_L; LOGIT_LOSS none leaves L_L to another term of a
    hybrid, e.g. `HYBRID.TERMS: [unikd, nkd]`)."""

    CONFIG_NODE = "UNIKD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node(ce_weight=1.0)
        node.MODE = "paper"  # paper | authors_code
        node.NUM_LEVELS = 2  # AFF fuses the last NUM_LEVELS entries of each model's stage features
        node.ALPHA = 1.0
        node.BETA = 1.0
        node.LOGIT_LOSS = "kd"  # kd | dkd | none (authors_code always uses dkd)
        node.TEMPERATURE = 4.0
        node.FIT_TEMPERATURE = None  # None: the fit target is teacher logits / TEMPERATURE
        node.DKD_ALPHA = 1.0
        node.DKD_BETA = 8.0
        node.TARGET_FIT = "gaussian_nll"  # gaussian_nll | none
        node.FIT_WEIGHT = 1.0
        node.DETACH_TARGET = True
        node.FDP_SHARED = True
        node.LOGVAR_BOUND = 4.0
        node.K_REDUCTION = "mean"  # mean | sum over the K labels
        node.SAMPLE_TEMPERATURE = 1.0  # authors_code only
        node.SUPP_WEIGHT = 1.0  # authors_code only
        node.AFF = CfgNode()
        node.AFF.ENABLED = True
        node.AFF.CHANNELS = 32
        return node

    def __init__(self, node: CfgNode, context: TermContext) -> None:
        super().__init__(node, context)
        student, teacher, levels = context.student, context.teacher, node.NUM_LEVELS
        for name, model in (("student", student), ("teacher", teacher)):
            if not 1 <= levels <= len(model.stage_channels):
                raise ValueError(
                    f"UNIKD.NUM_LEVELS {levels} does not fit the {name}: it has "
                    f"{len(model.stage_channels)} stage features"
                )
        self.authors_code = node.MODE == "authors_code"
        teacher_channels = (
            [teacher.stage_channels[1]] if self.authors_code else list(teacher.stage_channels[-levels:])
        )
        options = UniKDOptions.from_node(node)
        self.unikd = UniKDLoss(list(student.stage_channels[-levels:]), teacher_channels, context.num_classes, options)

    @classmethod
    def logit_losses(cls, node: CfgNode) -> frozenset[str]:
        if node.MODE == "authors_code":
            return frozenset({"dkd"})
        return frozenset({node.LOGIT_LOSS}) - {"none"}

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        levels, out_s, out_t = self.node.NUM_LEVELS, inputs.student, inputs.teacher
        feats_t = [authors_teacher_map(out_t)] if self.authors_code else tapped_levels(out_t, levels)
        losses = self.unikd(tapped_levels(out_s, levels), feats_t, out_s.logits, out_t.logits, inputs.targets)
        return named_losses(self.NAME, losses)

    def warm_up(self, losses: dict[str, Tensor], progress: float) -> dict[str, Tensor]:
        """authors_code: only the DKD logit loss ramps in (module docstring); paper mode: every loss."""
        if not self.authors_code:
            return super().warm_up(losses, progress)
        logit_key = f"loss_{self.NAME}_logit"
        ramp = linear_warmup(progress, self.node.WARMUP_EPOCHS)
        return {key: ramp * value if key == logit_key else value for key, value in losses.items()}
