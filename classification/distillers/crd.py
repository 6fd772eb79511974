"""Contrastive representation distillation (Tian et al., ICLR 2020) with the published memory bank: 128-d
embeddings of the pooled features, a memory entry per training image for each network, 16384 negatives of
other classes per anchor, NCE temperature 0.07, memory momentum 0.5, weight 0.8.

The memory is keyed by the batch's training-set indices, which the loaders provide, and holds one row per
training image (`train_labels`); it is part of the checkpoint, so resumed runs continue with it. The K
negatives of an anchor are distinct whenever its class leaves K other samples (REPLACEMENT auto, the
CIFAR-100 samplers of HobbitLong/RepDistiller and megvii-research/mdistiller); REPLACEMENT always draws them
with replacement, as mdistiller's ImageNet sampler (mdistiller/dataset/imagenet.py), which the catalog's
ImageNet configs use.
"""
from __future__ import annotations

from torch import Tensor
from yacs.config import CfgNode

from unikd.core.checks import check_choice
from unikd.core.crd import REPLACEMENT_MODES, ContrastSampler, CRDLoss

from .terms import LossTerm, TermContext, TermInputs, base_node, register_term

CONTRAST_MODES = ("exact", "relax")


@register_term("crd")
class CRDTerm(LossTerm):
    """loss_crd = WEIGHT * (NCE of the student side + NCE of the teacher side)."""

    CONFIG_NODE = "CRD"
    NEEDS_INDICES = True

    @classmethod
    def default_config(cls) -> CfgNode:
        node = base_node()
        node.WEIGHT = 0.8
        node.FEAT_DIM = 128
        node.NCE_K = 16384
        node.NCE_TEMPERATURE = 0.07
        node.NCE_MOMENTUM = 0.5
        node.MODE = "exact"  # exact: the positive is the anchor itself | relax: a sample of its class
        node.REPLACEMENT = "auto"  # auto: distinct negatives when K others exist (CIFAR) | always (ImageNet)
        return node

    def __init__(self, node: CfgNode, context: TermContext) -> None:
        super().__init__(node, context)
        check_choice("CRD.MODE", node.MODE, CONTRAST_MODES)
        check_choice("CRD.REPLACEMENT", node.REPLACEMENT, REPLACEMENT_MODES)
        if context.train_labels is None:
            raise ValueError("CRD needs the training set's labels (train_labels) to size and sample its memory")
        self.sampler = ContrastSampler(context.train_labels.long())
        self.crd = CRDLoss(context.student.pooled_channels, context.teacher.pooled_channels,
                           self.sampler.num_data, node.FEAT_DIM, node.NCE_K, node.NCE_TEMPERATURE,
                           node.NCE_MOMENTUM)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        index = inputs.indices.to(self.sampler.order.device)
        contrast = self.sampler(index, self.node.NCE_K, mode=self.node.MODE, replacement=self.node.REPLACEMENT)
        loss = self.crd(inputs.student.pooled, inputs.teacher.pooled, index, contrast)
        return {"loss_crd": self.node.WEIGHT * loss}
