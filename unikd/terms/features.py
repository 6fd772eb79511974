"""Choosing and pairing the feature maps a term taps, by the names the networks declare.

Detection declares its FPN levels (`p2`..`p6`), classification each zoo model's `stem`, `stage1`.. and
`pool` (the pooled vector as a 1x1 map). A term's `in_features` option lists names or shell-style patterns
(`stage*`), matched in the declared order (finest first); `num_levels` keeps the deepest matches.
"""
from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from typing import TypeVar

from torch import Tensor, nn

from .base import Batch, FeatureSpec, Term, TermContext, TermOptions

T = TypeVar("T")
logger = logging.getLogger(__name__)


def _described(specs: list[FeatureSpec]) -> str:
    return ", ".join(f"{s.name} ({s.channels} ch, /{s.reduction})" for s in specs)


def log_taps(key: str, student: list[FeatureSpec], teacher: list[FeatureSpec]) -> None:
    """Say in the log which student and teacher features a term taps: with models of one's own (timm,
    torchvision, another backbone) the pairing is chosen from their declarations, so the run records it."""
    logger.info("%s: student %s <- teacher %s", key, _described(student), _described(teacher))


def select_features(
    key: str, specs: list[FeatureSpec], patterns: list[str], network: str, num_levels: int = 0
) -> list[FeatureSpec]:
    """The declared features matching `patterns`, finest first, the deepest `num_levels` of them if > 0.

    ValueError for an empty pattern list, a pattern that matches nothing, or fewer matches than num_levels."""
    if not patterns:
        raise ValueError(f"{key} is empty")
    names = [spec.name for spec in specs]
    for pattern in patterns:
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ValueError(f"{key} {pattern!r} matches no feature of the {network} (it declares {names})")
    chosen = [spec for spec in specs if any(fnmatchcase(spec.name, p) for p in patterns)]
    if num_levels > 0:
        if len(chosen) < num_levels:
            raise ValueError(
                f"{key} {list(patterns)} gives {len(chosen)} features of the {network}, fewer than the "
                f"{num_levels} levels asked for"
            )
        chosen = chosen[-num_levels:]
    return chosen


def pair_from_deepest(student: list[T], teacher: list[T]) -> list[tuple[T, T]]:
    """As many student/teacher entries as both have, aligned at the deepest (the official codes' pairing
    when the two networks have different stage counts; the same as pairing by name when they agree)."""
    count = min(len(student), len(teacher))
    return list(zip(student[len(student) - count:], teacher[len(teacher) - count:]))


def tapped_pairs(
    key: str, context_student: list[FeatureSpec], context_teacher: list[FeatureSpec], patterns: list[str],
    num_levels: int = 0,
) -> list[tuple[FeatureSpec, FeatureSpec]]:
    """The student/teacher feature pairs a term taps: each side selected by `patterns`, paired from the deepest
    (and logged, `log_taps`)."""
    pairs = pair_from_deepest(
        select_features(key, context_student, patterns, "student", num_levels),
        select_features(key, context_teacher, patterns, "teacher", num_levels),
    )
    log_taps(key, [s for s, _ in pairs], [t for _, t in pairs])
    return pairs


def level_adapters(pairs: list[tuple[FeatureSpec, FeatureSpec]], kernel_size: int) -> nn.ModuleDict:
    """One size-preserving conv per pair, keyed by the student's feature name, mapping the student's channels
    to the teacher's. No normalisation or ReLU: FPN outputs are signed and detection batches too small for
    BatchNorm."""
    return nn.ModuleDict({
        s.name: nn.Conv2d(s.channels, t.channels, kernel_size, padding=kernel_size // 2) for s, t in pairs
    })


def channel_aligners(pairs: list[tuple[FeatureSpec, FeatureSpec]]) -> nn.ModuleDict:
    """A 1x1 conv per pair whose channel counts differ (yzd-v/FGD, mmdet/distillation/losses/fgd.py: `align`,
    built only when student_channels != teacher_channels), keyed by the student's feature name."""
    return level_adapters([(s, t) for s, t in pairs if s.channels != t.channels], kernel_size=1)


class AlignedMapsTerm(Term):
    """Base of the terms that compare each tapped student map with its teacher map directly (PKD, CWD, FGD): the
    options' `in_features` choose the pairs, and a student map whose channel count differs from the teacher's
    passes through a 1x1 conv first (`channel_aligners`). The maps are compared position by position, so each
    pair must have one reduction (ValueError naming the pair otherwise)."""

    def __init__(self, options: TermOptions, context: TermContext) -> None:
        super().__init__(options, context)
        key = f"{self.name.upper()}.IN_FEATURES"
        pairs = tapped_pairs(key, context.student_features, context.teacher_features, options.in_features)
        for s, t in pairs:
            if s.reduction != t.reduction:
                raise ValueError(
                    f"{key} pairs the student's {s.name} (/{s.reduction}) with the teacher's {t.name} "
                    f"(/{t.reduction}): {self.name} compares maps of one size; tap features of one reduction"
                )
        self.pairs = [(s.name, t.name) for s, t in pairs]
        self.aligners = channel_aligners(pairs)

    def map_pairs(self, batch: Batch) -> list[tuple[Tensor, Tensor]]:
        """(aligned student map, teacher map) per tapped pair, finest first."""
        maps = []
        for s, t in self.pairs:
            student = batch.feature("student", s)
            maps.append((self.aligners[s](student) if s in self.aligners else student, batch.feature("teacher", t)))
        return maps
