"""The term API: a distillation method written once, for every task.

A term is an `nn.Module` registered in `TERM_REGISTRY`. It declares

* `name`: the registry key, the prefix of its losses (`loss_<name>` or `loss_<name>_<part>`) and, upper-cased,
  its config node (`cfg.DISTILL.<NAME>` in Detectron2, `<NAME>` in classification);
* `Options`: a dataclass of its settings; each field carries its default and a one-line doc, and the front
  ends generate their yacs nodes from it (`unikd.terms.options`), with `PRESETS` per task where the papers'
  settings differ;
* `requires`: what the front end must compute for it (the `NEEDS_*` names below);

and computes its losses from one `Batch`, built by the front end from whatever the task provides. The
schedule (start, linear ramp), the key checks and the double-count warning are the `TermSet`'s, not the
term's. See docs/DESIGN.md section 3 for a worked example.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from fvcore.common.registry import Registry
from torch import Tensor, nn

from ..core.features import FeatureSpec


# What a term can ask the front end for (Term.requires). A front end that cannot supply one refuses the term.
NEEDS_LOGITS = "logits"  # both networks' logits over the samples (images, or the student's sampled ROIs)
NEEDS_TARGETS = "targets"  # the samples' labels (ROI sampling labels in detection)
NEEDS_FEATURES = "features"  # both networks' named feature maps
NEEDS_POOLED = "pooled"  # both networks' globally pooled feature vectors
NEEDS_INDICES = "indices"  # the samples' positions in the training set
NEEDS_GT_BOXES = "gt_boxes"  # ground-truth boxes per image
NEEDS_ANCHORS = "anchors"  # the student's anchors per feature level, laid out on the batch
NEEDS_REGION_OUTPUTS = "region_outputs"  # both networks' whole box-branch pass on the student's sampled boxes
NEEDS_SECOND_VIEW = "second_view"  # both networks' logits on a second (strongly augmented) view of the batch
REQUIREMENTS = frozenset({
    NEEDS_LOGITS, NEEDS_TARGETS, NEEDS_FEATURES, NEEDS_POOLED, NEEDS_INDICES, NEEDS_GT_BOXES, NEEDS_ANCHORS,
    NEEDS_REGION_OUTPUTS, NEEDS_SECOND_VIEW,
})


@dataclass
class RegionOutputs:
    """One network's box-branch pass over R boxes: pooled box features [R, C, P, P], class logits [R, K+1]
    and box deltas [R, 4K] (or [R, 4] class-agnostic)."""

    box_features: Tensor
    scores: Tensor
    deltas: Tensor


@dataclass
class Batch:
    """What the terms see of one training step; a front end fills the fields its enabled terms require.

    Samples are images (classification) or the student's sampled ROIs (detection). `*_features` map declared
    names to maps, `*_preact` the same names to their pre-activation maps where a network has them.
    `region_pool(map, size)` turns a map aligned with the input into one size x size map per sample (ROIAlign
    on the sampled boxes in detection); None means one sample per image, pooled globally.
    """

    student_logits: Tensor | None = None
    teacher_logits: Tensor | None = None
    targets: Tensor | None = None
    student_features: dict[str, Tensor] = field(default_factory=dict)
    teacher_features: dict[str, Tensor] = field(default_factory=dict)
    student_preact: dict[str, Tensor] = field(default_factory=dict)
    teacher_preact: dict[str, Tensor] = field(default_factory=dict)
    student_pooled: Tensor | None = None
    teacher_pooled: Tensor | None = None
    region_pool: Callable[[Tensor, int], Tensor] | None = None
    indices: Tensor | None = None
    gt_boxes: list[Tensor] | None = None
    anchors: dict[str, Tensor] | None = None
    student_regions: RegionOutputs | None = None
    teacher_regions: RegionOutputs | None = None
    student_logits_second_view: Tensor | None = None
    teacher_logits_second_view: Tensor | None = None
    ce_weight: float = 1.0

    def feature(self, network: str, name: str, preact: bool = False) -> Tensor:
        """`network`'s ("student" | "teacher") map `name`; with `preact`, the map before its last activation
        where the network has one, else the activated map."""
        maps = self.student_features if network == "student" else self.teacher_features
        before = self.student_preact if network == "student" else self.teacher_preact
        return before[name] if preact and name in before else maps[name]


@dataclass
class TermContext:
    """What a term is built from: the task, both networks' declared features (finest first), the logit width
    (classes; K + 1 with background in detection) and task facts some terms need."""

    task: str
    student_features: list[FeatureSpec]
    teacher_features: list[FeatureSpec]
    num_outputs: int
    student_pooled_channels: int | None = None
    teacher_pooled_channels: int | None = None
    background_class: int | None = None  # label index of background samples (detection's K)
    train_labels: Tensor | None = None
    region_feature_channels: tuple[int, int] | None = None  # (student, teacher) box-feature channels
    box_delta_outputs: int | None = None  # box-delta columns of the box predictor
    anchor_features: list[str] | None = None  # the levels the front end lays anchors on (Detectron2: the RPN's)


def option(default: Any, doc: str) -> Any:
    """A dataclass field of term options: its default and its one-line doc (shown in the generated configs)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": doc})
    if isinstance(default, type):  # a nested options dataclass: its own defaults
        return field(default_factory=default, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class TermOptions:
    """Options every term has: its schedule, in the front end's progress unit (Detectron2 iterations counted
    from 1, classification epochs as a fraction), and the classification cross-entropy weight.

    Subclasses add their own fields with `option(default, doc)`; `PRESETS` maps a task to the fields whose
    default differs there (each value names its source where it comes from an official code)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    start: float = option(0.0, "progress before which the term counts zero (its losses are still computed)")
    warmup: float = option(0.0, "length of the linear ramp of the term's weight from `start`; 0: full at once")
    ce_weight: float = option(1.0, "classification: cross-entropy weight when this term is the whole method")


TERM_REGISTRY = Registry("DISTILL_TERM")
TERM_REGISTRY.__doc__ = """Registry of distillation terms (fvcore). Register a `Term` subclass with

    @register_term
    class MyTerm(Term):
        name = "mine"
        Options = MyOptions
        requires = frozenset({NEEDS_LOGITS})

and enable it by configuration: `DISTILL.MINE.ENABLED True` in Detectron2, `DISTILLER.NAME mine` (or
`HYBRID.TERMS [kd, mine]`) in classification. Look a term up by its `name` with `term_class(name)`."""


class Term(nn.Module):
    """Base class of a distillation term (module docstring). Subclasses set `name`, `Options`, `requires`, and
    implement `forward(batch)`, returning losses keyed `loss_<name>` or `loss_<name>_<part>`, already weighted
    by their own options (the TermSet applies the schedule)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[TermOptions]] = TermOptions
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: TermOptions, context: TermContext) -> None:
        super().__init__()
        self.options = options

    def requirements(self) -> frozenset[str]:
        """What this term needs with its options (`requires` unless the options change it)."""
        return type(self).requires

    def logit_losses(self) -> frozenset[str]:
        """The classic logit losses ("kd", "dkd") this term includes, so that a set counting one twice says so."""
        return frozenset()

    def scheduled(self, losses: dict[str, Tensor], factor: float) -> dict[str, Tensor]:
        """`losses` under the schedule factor; a term whose official code ramps only some parts overrides it."""
        return {key: factor * value for key, value in losses.items()}

    def forward(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def register_term(cls: type[Term]) -> type[Term]:
    """Class decorator: add a Term subclass to TERM_REGISTRY, refusing an empty or taken `name`."""
    if not cls.name or not cls.name.isidentifier() or cls.name != cls.name.lower():
        raise ValueError(f"{cls.__name__}.name must be a lower-case identifier, got {cls.name!r}")
    taken = {other.name: other for _, other in TERM_REGISTRY}
    if cls.name in taken:
        raise ValueError(f"term name {cls.name!r} is taken by {taken[cls.name].__name__}")
    bad = set(cls.requires) - REQUIREMENTS
    if bad:
        raise ValueError(f"{cls.__name__}.requires names unknown inputs {sorted(bad)}; known: {sorted(REQUIREMENTS)}")
    TERM_REGISTRY.register(cls)
    return cls


def registered_terms() -> dict[str, type[Term]]:
    """{name: class} of every registered term."""
    return {cls.name: cls for _, cls in sorted(TERM_REGISTRY)}


def term_class(name: str) -> type[Term]:
    """The registered term called `name`; KeyError listing the available ones otherwise."""
    terms = registered_terms()
    if name not in terms:
        raise KeyError(f"unknown distillation term {name!r}; available: {', '.join(sorted(terms))}")
    return terms[name]
