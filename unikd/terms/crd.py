"""Contrastive representation distillation (Tian et al., ICLR 2020) with the published memory bank: 128-d
embeddings of the pooled features, a memory entry per training image for each network, 16384 negatives of
other classes per anchor, NCE temperature 0.07, memory momentum 0.5, weight 0.8 (HobbitLong/RepDistiller,
train_student.py).

The memory is keyed by the batch's training-set indices and holds one row per training image (the front
end's `train_labels`); it is part of the checkpoint, so resumed runs continue with it. The K negatives of an
anchor are distinct whenever its class leaves K other samples (REPLACEMENT auto, the CIFAR-100 samplers of
HobbitLong/RepDistiller and megvii-research/mdistiller); REPLACEMENT always draws them with replacement, as
mdistiller's ImageNet sampler (mdistiller/dataset/imagenet.py), which the catalog's ImageNet configs use.
On several processes every rank draws the global batch's contrast indices and updates its memory with every
rank's share (unikd/core/crd.py), so the memory and the draws are the single process's.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.checks import check_choice
from ..core.crd import REPLACEMENT_MODES, ContrastSampler, CRDLoss
from ..core.distributed import current_world, gather_rows, row_counts
from .base import NEEDS_INDICES, NEEDS_POOLED, Batch, Term, TermContext, TermOptions, option, register_term

CONTRAST_MODES = ("exact", "relax")


@dataclass
class CRDOptions(TermOptions):
    weight: float = option(0.8, "weight of the two NCE losses")
    feat_dim: int = option(128, "embedding width")
    nce_k: int = option(16384, "negatives per anchor")
    nce_temperature: float = option(0.07, "NCE temperature")
    nce_momentum: float = option(0.5, "memory momentum")
    mode: str = option("exact", "exact: the positive is the anchor itself | relax: a sample of its class")
    replacement: str = option("auto", "auto: distinct negatives when K others exist (CIFAR) | always (ImageNet)")

    def __post_init__(self) -> None:
        check_choice("CRD.MODE", self.mode, CONTRAST_MODES)
        check_choice("CRD.REPLACEMENT", self.replacement, REPLACEMENT_MODES)


@register_term
class CRDTerm(Term):
    """loss_crd = WEIGHT * (NCE of the student side + NCE of the teacher side)."""

    name = "crd"
    Options = CRDOptions
    requires = frozenset({NEEDS_POOLED, NEEDS_INDICES})

    def __init__(self, options: CRDOptions, context: TermContext) -> None:
        super().__init__(options, context)
        if context.train_labels is None:
            raise ValueError("CRD needs the training set's labels (train_labels) to size and sample its memory")
        if context.student_pooled_channels is None or context.teacher_pooled_channels is None:
            raise ValueError(f"CRD needs both networks' pooled features, which {context.task} does not declare")
        self.sampler = ContrastSampler(context.train_labels.long())
        self.crd = CRDLoss(context.student_pooled_channels, context.teacher_pooled_channels,
                           self.sampler.num_data, options.feat_dim, options.nce_k, options.nce_temperature,
                           options.nce_momentum)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        opts = self.options
        index = batch.indices.to(self.sampler.order.device)
        contrast = self._contrast(index)
        loss = self.crd(batch.student_pooled, batch.teacher_pooled, index, contrast)
        return {"loss_crd": opts.weight * loss}

    def _contrast(self, index: Tensor) -> Tensor:
        """Contrast indices of the batch `index`. In a distributed run every rank draws them for the whole global
        batch (all ranks' indices, in rank order) and keeps its own rows: the draws are the single process's, and
        the ranks' random streams stay alike."""
        opts, world = self.options, current_world()
        if not world.distributed:
            return self.sampler(index, opts.nce_k, mode=opts.mode, replacement=opts.replacement)
        sizes = row_counts(len(index), world)
        everyone = self.sampler(gather_rows(index, world, sizes), opts.nce_k, mode=opts.mode,
                                replacement=opts.replacement)
        start = sum(sizes[: world.rank])
        return everyone[start : start + len(index)]
