"""Loss terms and the distillers composed of them.

Most methods add one or more terms to the student's cross-entropy: L = CE_WEIGHT * CE + sum_k ramp_k * L_k,
where every term L_k compares the student's and the teacher's outputs on the same batch and ramps in
linearly over its node's WARMUP_EPOCHS. A term is one `LossTerm` subclass decorated with `register_term`,
which also registers the single-term distiller of the same name (`DISTILLER.NAME: fitnet`). Hybrids are
configuration, not classes: `DISTILLER.NAME: hybrid` with `HYBRID.TERMS: [kd, fitnet]` sums the named terms,
each configured by its own node, with the cross-entropy weight `HYBRID.CE_WEIGHT`.

Every term node holds `CE_WEIGHT` (the cross-entropy weight when the term is the whole method; a hybrid
uses `HYBRID.CE_WEIGHT` instead) and `WARMUP_EPOCHS`. Every loss key of a term carries the term's name,
`loss_<name>` or `loss_<name>_<part>` (MLKD: `loss_mlkd_kd`, `loss_mlkd_cc`, ...), so the terms of a hybrid
never overwrite each other's losses; the distiller enforces it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from yacs.config import CfgNode

from ..models import ModelOutput
from .base import Distiller, cross_entropy, linear_warmup, register_distiller

logger = logging.getLogger(__name__)


@dataclass
class TermInputs:
    """What a term sees of one training step. `indices` are the batch's positions in the training set."""

    images: Tensor
    targets: Tensor
    indices: Tensor | None
    student: ModelOutput
    teacher: ModelOutput
    ce_weight: float


@dataclass
class TermContext:
    """What a term is built from: the two networks, the class count, the input size and the training labels."""

    student: nn.Module
    teacher: nn.Module
    num_classes: int
    image_size: int
    train_labels: Tensor | None


class LossTerm(nn.Module):
    """One distillation term; `forward` returns named, weighted scalars (before the warm-up ramp).

    Terms own their trainable parts (regressors, embeddings), which train with the student's optimizer, and
    may run extra forward passes of the student and teacher (MLKD's strong view) through `context`.
    """

    NAME: str = ""  # set by register_term; every loss key is loss_<NAME> or loss_<NAME>_<part>
    CONFIG_NODE: str = ""
    NEEDS_INDICES = False

    def __init__(self, node: CfgNode, context: TermContext) -> None:
        super().__init__()
        self.node = node

    @classmethod
    def default_config(cls) -> CfgNode:
        """The node's defaults; subclasses extend `base_node()`."""
        return base_node()

    @classmethod
    def logit_losses(cls, node: CfgNode) -> frozenset[str]:
        """The classic logit losses ("kd", "dkd") this term includes with `node`, so that a hybrid that
        counts one twice (UniKD's own logit term next to the `kd` term) can say so."""
        return frozenset()

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        raise NotImplementedError

    def warm_up(self, losses: dict[str, Tensor], progress: float) -> dict[str, Tensor]:
        """`losses` at `progress` (fractional epochs done): all ramped in linearly over WARMUP_EPOCHS."""
        ramp = linear_warmup(progress, self.node.WARMUP_EPOCHS)
        return {key: ramp * value for key, value in losses.items()}


def named_losses(term: str, losses: dict[str, Tensor]) -> dict[str, Tensor]:
    """{loss_<part>: v} -> {loss_<term>_<part>: v}: a term's name on the keys of a core loss's parts."""
    return {f"loss_{term}_{key.removeprefix('loss_')}": value for key, value in losses.items()}


def check_term_key(term: str, key: str) -> None:
    """Raise unless `key` is loss_<term> or loss_<term>_<part> (module docstring)."""
    if key != f"loss_{term}" and not key.startswith(f"loss_{term}_"):
        raise KeyError(f"loss {key!r} of term {term!r} does not carry the term's name (loss_{term}[_<part>])")


def base_node(ce_weight: float = 1.0, warmup_epochs: float = 0.0) -> CfgNode:
    """The keys every term node has."""
    node = CfgNode()
    node.CE_WEIGHT = ce_weight
    node.WARMUP_EPOCHS = warmup_epochs
    return node


_TERMS: dict[str, type[LossTerm]] = {}


def get_term_class(name: str) -> type[LossTerm]:
    if name not in _TERMS:
        raise KeyError(f"unknown loss term {name!r}; available: {', '.join(sorted(_TERMS))}")
    return _TERMS[name]


def registered_terms() -> dict[str, type[LossTerm]]:
    return dict(_TERMS)


class TermDistiller(Distiller):
    """CE plus the sum of `term_names()` terms, all on one student and one teacher forward pass."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        cfg: CfgNode,
        num_classes: int,
        train_labels: Tensor | None = None,
        image_size: int = 32,
    ) -> None:
        super().__init__(student, teacher, cfg, num_classes)
        names = self.term_names()
        if not names:
            raise ValueError(f"{type(self).__name__} has no loss terms; list them in HYBRID.TERMS")
        if len(set(names)) != len(names):
            raise ValueError(f"loss terms are listed more than once: {list(names)}")
        context = TermContext(student, self.teacher, num_classes, image_size, train_labels)
        classes = {name: get_term_class(name) for name in names}
        self.terms = nn.ModuleDict({name: cls(cfg[cls.CONFIG_NODE], context) for name, cls in classes.items()})
        warn_double_counted(self.terms)
        self.NEEDS_INDICES = any(term.NEEDS_INDICES for term in self.terms.values())

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
        return cls(student, teacher, cfg, num_classes, train_labels, input_size(cfg, family))

    def term_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def ce_weight(self) -> float:
        return self.node.CE_WEIGHT

    def compute_losses(
        self, images: Tensor, targets: Tensor, progress: float, indices: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.NEEDS_INDICES and indices is None:
            raise ValueError(f"{', '.join(self.terms)} needs the batch's training-set indices")
        out_t = self.teacher_outputs(images)
        out_s = self.student(images)
        inputs = TermInputs(images, targets, indices, out_s, out_t, self.ce_weight())
        losses = {"loss_ce": inputs.ce_weight * cross_entropy(out_s.logits, targets)}
        for name, term in self.terms.items():
            for key, value in term.warm_up(term(inputs), progress).items():
                check_term_key(name, key)
                if key in losses:
                    raise KeyError(f"loss {key!r} of term {name!r} clashes with another term's loss")
                losses[key] = value
        return out_s.logits, losses


def warn_double_counted(terms: nn.ModuleDict) -> None:
    """Log one warning when two terms include the same logit loss (e.g. UNIKD.LOGIT_LOSS kd and the kd term)."""
    owners: dict[str, list[str]] = {}
    for name, term in terms.items():
        for loss in type(term).logit_losses(term.node):
            owners.setdefault(loss, []).append(name)
    doubled = {loss: names for loss, names in owners.items() if len(names) > 1}
    if doubled:
        logger.warning(
            "these terms count the same logit loss more than once: %s; set UNIKD.LOGIT_LOSS none (or drop a "
            "term) unless that is intended",
            "; ".join(f"{loss} in {' and '.join(names)}" for loss, names in sorted(doubled.items())),
        )


def register_term(name: str) -> Callable[[type[LossTerm]], type[LossTerm]]:
    """Class decorator: register a LossTerm as `name`, and the distiller `name` made of it alone."""

    def decorate(cls: type[LossTerm]) -> type[LossTerm]:
        if name in _TERMS:
            raise KeyError(f"loss term {name!r} is already registered")
        _TERMS[name] = cls
        cls.NAME = name
        single = type(
            f"{cls.__name__}Distiller",
            (TermDistiller,),
            {
                "CONFIG_NODE": cls.CONFIG_NODE,
                "default_config": classmethod(lambda _: cls.default_config()),
                "term_names": lambda self: (name,),
                "__doc__": f"CE_WEIGHT * CE + the {name!r} term ({cls.__name__}).",
            },
        )
        register_distiller(name)(single)
        return cls

    return decorate


@register_distiller("hybrid")
class Hybrid(TermDistiller):
    """HYBRID.CE_WEIGHT * CE + the terms listed in HYBRID.TERMS, each configured by its own node."""

    CONFIG_NODE = "HYBRID"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = CfgNode()
        node.TERMS = []  # names of registered loss terms, e.g. [kd, fitnet]
        node.CE_WEIGHT = 1.0
        return node

    def term_names(self) -> tuple[str, ...]:
        return tuple(self.node.TERMS)


def input_size(cfg: CfgNode, family: str) -> int:
    """The side of the training images: 224 for ImageNet, the synthetic size, else 32 (CIFAR family)."""
    if family == "imagenet":
        return 224
    return cfg.DATASET.SYNTHETIC.IMAGE_SIZE if cfg.DATASET.NAME == "synthetic" else 32


def probe_outputs(model: nn.Module, image_size: int) -> ModelOutput:
    """A model's outputs on two blank images, to read feature shapes (BatchNorm statistics untouched)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, image_size, image_size, device=next(model.parameters()).device))
    model.train(was_training)
    return out


def stage_maps(output: ModelOutput, preact: bool) -> list[Tensor]:
    """The stage maps after the stem: before their last activation when `preact` (the activated maps where
    an architecture has no pre-activation tensor, e.g. MobileNetV2), else after it."""
    maps = output.preact_feats if preact and output.preact_feats is not None else output.feats
    return list(maps[1:])


def pair_from_deepest(feats_s: list[Tensor], feats_t: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """As many student/teacher features as both have, aligned at the deepest."""
    count = min(len(feats_s), len(feats_t))
    return list(zip(feats_s[len(feats_s) - count :], feats_t[len(feats_t) - count :]))
