"""The classification front end of the term API: distillers made of `unikd.terms` terms.

L = CE_WEIGHT * CE + the scheduled sum of the terms' losses, all on one student and one teacher forward pass
(plus a second, strongly augmented view when a term requires it: MLKD). Every registered term is also a
method of its own (`DISTILLER.NAME: fitnet`, CE weight from its node's CE_WEIGHT); hybrids are configuration:
`DISTILLER.NAME: hybrid` with `HYBRID.TERMS: [kd, fitnet]` sums the named terms, each configured by its own
node, with the cross-entropy weight `HYBRID.CE_WEIGHT`. A term's node is generated from its options dataclass
(`unikd.terms.options_node(Options, "classification")`), and its schedule runs in fractional epochs.
"""
from __future__ import annotations

from functools import cache

from torch import Tensor, nn
from yacs.config import CfgNode

from unikd.terms import Batch, FeatureSpec, TermContext, TermSet, options_from_node, registered_terms, term_class
from unikd.terms.base import (
    NEEDS_FEATURES, NEEDS_INDICES, NEEDS_LOGITS, NEEDS_POOLED, NEEDS_SECOND_VIEW, NEEDS_TARGETS,
)

from ..data.strong_view import strong_view
from ..models import ModelOutput
from .base import Distiller, cross_entropy, no_grad_forward, register_distiller

TASK = "classification"
# What this front end computes for a term (unikd.terms.base NEEDS_*).
SUPPORTED = frozenset({NEEDS_LOGITS, NEEDS_TARGETS, NEEDS_FEATURES, NEEDS_POOLED, NEEDS_INDICES, NEEDS_SECOND_VIEW})
POOLED_NAME = "pool"  # the pooled vector as a 1x1 map, a feature every zoo model has


def feature_specs(model: nn.Module) -> list[FeatureSpec]:
    """A zoo model's declared stage features, then its pooled vector as the 1x1 map `pool` (reduction 0:
    global, whatever the input size)."""
    return [*model.feature_info, FeatureSpec(POOLED_NAME, model.pooled_channels, 0)]


def named_maps(model: nn.Module, output: ModelOutput) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """({name: activated map}, {name: pre-activation map}) of one forward, by the model's declared names."""
    names = [spec.name for spec in model.feature_info]
    maps = dict(zip(names, output.feats))
    maps[POOLED_NAME] = output.pooled[:, :, None, None]
    preact = dict(zip(names, output.preact_feats)) if output.preact_feats is not None else {}
    return maps, preact


class TermDistiller(Distiller):
    """CE plus the scheduled losses of `term_names()`, built from their config nodes (module docstring)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        cfg: CfgNode,
        num_classes: int,
        train_labels: Tensor | None = None,
    ) -> None:
        super().__init__(student, teacher, cfg, num_classes)
        names = self.term_names()
        if not names:
            raise ValueError(f"{type(self).__name__} has no loss terms; list them in HYBRID.TERMS")
        if len(set(names)) != len(names):
            raise ValueError(f"loss terms are listed more than once: {list(names)}")
        context = TermContext(
            task=TASK,
            student_features=feature_specs(student),
            teacher_features=feature_specs(self.teacher),
            num_outputs=num_classes,
            student_pooled_channels=student.pooled_channels,
            teacher_pooled_channels=self.teacher.pooled_channels,
            train_labels=train_labels,
        )
        options = {name: options_from_node(term_class(name).Options, cfg[name.upper()]) for name in names}
        self.terms = TermSet.build(options, context)
        self.terms.check_supported(TASK, SUPPORTED)
        self.needs = self.terms.requirements()
        self.NEEDS_INDICES = NEEDS_INDICES in self.needs

    @classmethod
    def from_config(
        cls,
        cfg: CfgNode,
        student: nn.Module,
        teacher: nn.Module | None,
        num_classes: int,
        family: str,
        train_labels: Tensor | None = None,
    ) -> "TermDistiller":
        return cls(student, teacher, cfg, num_classes, train_labels)

    def term_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def ce_weight(self) -> float:
        return self.node.CE_WEIGHT

    def batch(self, images: Tensor, targets: Tensor, indices: Tensor | None, out_s: ModelOutput,
              out_t: ModelOutput) -> Batch:
        """The terms' view of one step; the strong view is computed only when a term requires it."""
        student_maps, student_preact = named_maps(self.student, out_s)
        teacher_maps, teacher_preact = named_maps(self.teacher, out_t)
        batch = Batch(
            student_logits=out_s.logits, teacher_logits=out_t.logits, targets=targets,
            student_features=student_maps, teacher_features=teacher_maps,
            student_preact=student_preact, teacher_preact=teacher_preact,
            student_pooled=out_s.pooled, teacher_pooled=out_t.pooled, indices=indices, ce_weight=self.ce_weight(),
        )
        if NEEDS_SECOND_VIEW in self.needs:
            strong = strong_view(images)
            batch.student_logits_second_view = self.student(strong).logits
            batch.teacher_logits_second_view = no_grad_forward(self.teacher, strong).logits
        return batch

    def compute_losses(
        self, images: Tensor, targets: Tensor, progress: float, indices: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.NEEDS_INDICES and indices is None:
            raise ValueError(f"{', '.join(self.terms.names())} needs the batch's training-set indices")
        out_t = self.teacher_outputs(images)
        out_s = self.student(images)
        losses = {"loss_ce": self.ce_weight() * cross_entropy(out_s.logits, targets)}
        losses.update(self.terms(self.batch(images, targets, indices, out_s, out_t), progress, taken=losses))
        return out_s.logits, losses


@cache
def single_term_distiller(name: str) -> type[TermDistiller]:
    """The method made of the registered term `name` alone (`DISTILLER.NAME: <name>`)."""
    term = term_class(name)
    return type(
        f"{term.__name__}Distiller",
        (TermDistiller,),
        {
            "CONFIG_NODE": name.upper(),
            "term_names": lambda self: (name,),
            "__doc__": f"CE_WEIGHT * CE + the {name!r} term ({term.__name__}).",
        },
    )


def term_distillers() -> dict[str, type[TermDistiller]]:
    """{name: single-term distiller} of every registered term."""
    return {name: single_term_distiller(name) for name in registered_terms()}


@register_distiller("hybrid")
class Hybrid(TermDistiller):
    """HYBRID.CE_WEIGHT * CE + the terms listed in HYBRID.TERMS, each configured by its own node."""

    CONFIG_NODE = "HYBRID"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = CfgNode()
        node.TERMS = []  # names of registered terms, e.g. [kd, fitnet]
        node.CE_WEIGHT = 1.0
        return node

    def term_names(self) -> tuple[str, ...]:
        return tuple(self.node.TERMS)


