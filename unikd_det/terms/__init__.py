"""Distillation loss terms; importing this package registers them."""
from . import fgfi, fitnet, mlkd, reviewkd, roi_kd, unikd  # noqa: F401  (registration side effect)
from .base import DISTILL_TERM_REGISTRY, DistillContext, DistillTerm, build_distill_terms, enabled_term_classes

__all__ = ["DISTILL_TERM_REGISTRY", "DistillContext", "DistillTerm", "build_distill_terms", "enabled_term_classes"]
