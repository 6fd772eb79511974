"""Distillers by name (DISTILLER.NAME): vanilla, hybrid, slkd, and one per registered `unikd.terms` term."""
from . import slkd, terms, vanilla  # noqa: F401  (registrations)
from .base import Distiller, named_distillers, register_distiller
from .terms import term_distillers


def registered_distillers() -> dict[str, type[Distiller]]:
    """{name: class} of every method: one per registered term, then the registered distiller classes."""
    return {**term_distillers(), **named_distillers()}


def get_distiller_class(name: str) -> type[Distiller]:
    distillers = registered_distillers()
    if name not in distillers:
        raise KeyError(f"unknown distiller {name!r}; available: {', '.join(sorted(distillers))}")
    return distillers[name]


__all__ = ["Distiller", "get_distiller_class", "register_distiller", "registered_distillers"]
