"""Normalized KD (Yang et al., ICCV 2023): the target class's teacher-weighted log-likelihood plus the KL of the
normalised non-target distributions; NKD* in the UniKD paper's table is the hybrid `[nkd, dkd]`."""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core.nkd import nkd_loss

from .terms import LossTerm, TermInputs, base_node, register_term


@register_term("nkd")
class NKDTerm(LossTerm):
    """loss_nkd = WEIGHT * NKD(student, teacher; TEMPERATURE, GAMMA)."""

    CONFIG_NODE = "NKD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node()
        node.WEIGHT = 1.0
        node.TEMPERATURE = 1.0
        node.GAMMA = 1.5
        return node

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        node = self.node
        loss = nkd_loss(inputs.student.logits, inputs.teacher.logits, inputs.targets, node.TEMPERATURE, node.GAMMA)
        return {"loss_nkd": node.WEIGHT * loss}
