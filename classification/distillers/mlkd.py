"""Multi-level logit distillation (Jin et al., CVPR 2023): instance-, class- and batch-level alignment of the
softmax outputs over several temperatures, on a weak (crop + flip) and a strong view of each batch, with the
official code's weights (CE 0.1 on each view, KD 0.9, temperatures 4, 3, 5, 2, 6)."""
from __future__ import annotations

from torch import Tensor, nn
from yacs.config import CfgNode

from unikd.core.mlkd import OFFICIAL_STRONG_KD_VIEWS, OFFICIAL_TEMPERATURES, mlkd_loss

from ..data.strong_view import strong_view
from .base import cross_entropy, no_grad_forward
from .terms import LossTerm, TermContext, TermInputs, base_node, named_losses, register_term


@register_term("mlkd")
class MLKDTerm(LossTerm):
    """loss_mlkd_ce_strong (the strong view's CE) + loss_mlkd_kd, loss_mlkd_cc and loss_mlkd_bc (KD_WEIGHT each).

    The strong view runs through the student (with gradients) and the teacher (without) once more.
    """

    CONFIG_NODE = "MLKD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node(ce_weight=0.1)
        node.KD_WEIGHT = 0.9
        node.TEMPERATURES = list(OFFICIAL_TEMPERATURES)
        # the view whose logits enter the unmasked instance-level term at each temperature (official code)
        node.STRONG_KD_VIEWS = list(OFFICIAL_STRONG_KD_VIEWS)
        return node

    def __init__(self, node: CfgNode, context: TermContext) -> None:
        super().__init__(node, context)
        # held outside the module tree: the student is trained and checkpointed by the distiller
        self._networks: tuple[nn.Module, nn.Module] = (context.student, context.teacher)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        node = self.node
        student, teacher = self._networks
        strong = strong_view(inputs.images)
        logits_s_strong = student(strong).logits
        logits_t_strong = no_grad_forward(teacher, strong).logits
        losses = mlkd_loss(inputs.student.logits, logits_s_strong, inputs.teacher.logits, logits_t_strong,
                           tuple(node.TEMPERATURES), tuple(node.STRONG_KD_VIEWS), node.KD_WEIGHT)
        losses["loss_ce_strong"] = inputs.ce_weight * cross_entropy(logits_s_strong, inputs.targets)
        return named_losses(self.NAME, losses)
