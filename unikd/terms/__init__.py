"""The distillation terms both front ends run; importing this package registers every term.

See `base` for the API (Term, its Options dataclass, `requires`, Batch), `options` for the generated yacs
nodes, `term_set` for the set that schedules and checks the terms' losses, and docs/DESIGN.md section 3.
Every module of this package is imported here, so a new method is one new file (docs/adding-a-method.md).
"""
import importlib
import pkgutil

from .base import (
    TERM_REGISTRY, Batch, FeatureSpec, RegionOutputs, Term, TermContext, TermOptions, option, register_term,
    registered_terms, term_class,
)
from .options import default_options, options_from_node, options_node
from .term_set import TermSet, schedule_factor

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # a term module registers its term when imported

__all__ = [
    "TERM_REGISTRY", "Batch", "FeatureSpec", "RegionOutputs", "Term", "TermContext", "TermOptions", "TermSet",
    "default_options", "option", "options_from_node", "options_node", "register_term", "registered_terms",
    "schedule_factor", "term_class",
]
