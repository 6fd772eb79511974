"""FitNet (Romero et al., ICLR 2015): the student's hint-layer map, through a conv regressor, regresses onto the
teacher's map at the same stage with an MSE loss (mdistiller's CIFAR setting: stage 2, weight 100)."""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core.hint import HintRegressor, hint_loss

from .terms import LossTerm, TermContext, TermInputs, base_node, probe_outputs, register_term


@register_term("fitnet")
class FitNetTerm(LossTerm):
    """loss_fitnet = WEIGHT * MSE(regressor(f_s[HINT_LAYER]), f_t[HINT_LAYER])."""

    CONFIG_NODE = "FITNET"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node()
        node.HINT_LAYER = 2  # index into the stage features (0: the stem)
        node.WEIGHT = 100.0
        return node

    def __init__(self, node: CfgNode, context: TermContext) -> None:
        super().__init__(node, context)
        layer = node.HINT_LAYER
        shapes = []
        for name, model in (("student", context.student), ("teacher", context.teacher)):
            feats = probe_outputs(model, context.image_size).feats
            if not 0 <= layer < len(feats):
                raise ValueError(f"FITNET.HINT_LAYER {layer} is out of range: the {name} has {len(feats)} stage features")
            shapes.append(tuple(feats[layer].shape[1:]))
        self.regressor = HintRegressor(shapes[0], shapes[1])

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        layer = self.node.HINT_LAYER
        regressed = self.regressor(inputs.student.feats[layer])
        return {"loss_fitnet": self.node.WEIGHT * hint_loss(regressed, inputs.teacher.feats[layer])}
