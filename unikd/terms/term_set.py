"""The enabled terms of one run, and everything about them that no single term owns.

A `TermSet` checks every loss key (`loss_<term>` or `loss_<term>_<part>`, and new), applies each term's
schedule in the front end's progress unit, warns once when two terms include the same classic logit loss
(from the terms' own `logit_losses()`), and says which inputs the front end must compute (`requirements`).
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from torch import Tensor, nn

from .base import Batch, Term, TermContext, TermOptions, term_class

logger = logging.getLogger(__name__)


def schedule_factor(progress: float, start: float, warmup: float) -> float:
    """A term's weight factor at `progress`: 0 before `start`, then a linear ramp over `warmup` (1 at once
    when `warmup` is 0), capped at 1."""
    if progress < start:
        return 0.0
    if warmup <= 0:
        return 1.0
    return min((progress - start) / warmup, 1.0)


def check_loss_key(term: str, key: str) -> None:
    """ValueError unless `key` is loss_<term> or loss_<term>_<part>."""
    if key != f"loss_{term}" and not key.startswith(f"loss_{term}_"):
        raise ValueError(f"loss {key!r} of term {term!r} does not carry the term's name (loss_{term}[_<part>])")


class TermSet(nn.ModuleDict):
    """The terms of a run, a ModuleDict keyed by name; `forward(batch, progress)` gives their scheduled losses."""

    def __init__(self, terms: Mapping[str, Term]) -> None:
        super().__init__(dict(terms))
        warn_double_counted(self)

    @classmethod
    def build(cls, options: Mapping[str, TermOptions], context: TermContext) -> "TermSet":
        """Instantiate the named terms with their options (validated now, before any training)."""
        return cls({name: term_class(name)(opts, context) for name, opts in options.items()})

    def names(self) -> list[str]:
        return list(self.keys())

    def requirements(self) -> frozenset[str]:
        """The union of what the terms need from the front end."""
        return frozenset().union(*(term.requirements() for term in self.values()))

    def check_supported(self, task: str, supported: Collection[str]) -> None:
        """ValueError naming every term that needs an input the front end of `task` cannot compute."""
        bad = {name: sorted(term.requirements() - set(supported)) for name, term in self.items()}
        bad = {name: needs for name, needs in bad.items() if needs}
        if bad:
            raise ValueError(
                f"{task} cannot run " + "; ".join(f"term {name!r}: it needs {', '.join(n)}" for name, n in bad.items())
            )

    def forward(self, batch: Batch, progress: float, taken: Collection[str] = ()) -> dict[str, Tensor]:
        """Every term's losses times its schedule factor at `progress`. A key that does not carry its term's
        name, or that another term or `taken` (the task's own losses) already uses, is refused: it would
        silently drop one loss from the sum."""
        losses: dict[str, Tensor] = {}
        for name, term in self.items():
            opts = term.options
            factor = schedule_factor(progress, opts.start, opts.warmup)
            for key, value in term.scheduled(term(batch), factor).items():
                check_loss_key(name, key)
                if key in losses or key in taken:
                    raise ValueError(f"loss {key!r} of term {name!r} clashes with another loss of that name")
                losses[key] = value
        return losses


def warn_double_counted(terms: Mapping[str, Term]) -> None:
    """Log one warning when two terms include the same logit loss (UniKD's own logit term beside `kd`, ...)."""
    owners: dict[str, list[str]] = {}
    for name, term in terms.items():
        for loss in term.logit_losses():
            owners.setdefault(loss, []).append(name)
    doubled = {loss: names for loss, names in owners.items() if len(names) > 1}
    if doubled:
        logger.warning(
            "these terms count the same logit loss more than once: %s; set UNIKD.LOGIT_LOSS none (or drop a "
            "term) unless that is intended",
            "; ".join(f"{loss} in {' and '.join(names)}" for loss, names in sorted(doubled.items())),
        )
